"""Damaged stage files and failed writes (issue 16 item 14): a truncated or emptied artefact that a later stage
reads, a full disk, a read-only folder, a file where a folder belongs, malformed YAML in a profile. Each is one
line on stderr naming the file and the command that fixes it, exit 2, no traceback, and nothing half-written.
Every artefact is written by the real stages on the tiny dataset and read by the next stage's real command."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.study import dvc_env, merge
from tests.conftest import ROOT, TINY, run_stages, write_params

SMALL = {"prepare": {"tiny": {"n_train": 256}}, "train": {"tiny": {"epochs": 1}, "common": {"threads": 1}},
         "tune": {"trials": 5},  # one cheap figure: the figures stage reads every table all the same
         "analyse": {"figures": {"pareto": [], "per_exit_accuracy": ["joint"], "grad_norm": [],
                                 "exit_distribution": [], "calibration": []}}}
RUN = "results/runs/tiny/joint/tiny_cnn/seed0"
STAGES = (["prepare", "--dataset", "tiny"],
          *(["train", "--dataset", "tiny", "--method", m, "--quiet"] for m in ("joint", "branchynet")),
          *([stage, "--dataset", "tiny", "--method", m] for m in ("joint", "branchynet") for stage in ("evaluate", "tune")),
          ["aggregate"], ["figures"])


@pytest.fixture(scope="module")
def study(tmp_path_factory, real_params) -> Path:
    """A tiny study written by the real stages, in order (copied by each test before it damages anything)."""
    return run_stages(tmp_path_factory.mktemp("study"), merge(merge(copy.deepcopy(real_params), TINY), SMALL), STAGES)


@pytest.fixture
def copy_of(study, tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "study"
    shutil.copytree(study, folder)
    monkeypatch.chdir(folder)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv, *fragments) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("eebench: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def damage(path: Path, how: str) -> None:
    """Truncate `path` to about half (never right after a newline: a CSV cut at a line boundary is a valid, shorter
    table that no reader can tell from a whole one), or empty it."""
    raw = path.read_bytes()
    cut = len(raw) // 2
    while cut > 0 and raw[cut - 1:cut] == b"\n":
        cut -= 1
    path.write_bytes(raw[:cut] if how == "truncate" else b"")


EVALUATE = ["evaluate", "--dataset", "tiny", "--method", "joint"]
RETRAIN = "eebench train --dataset tiny --model tiny_cnn --method joint --seed 0"
RETUNE = "eebench tune --dataset tiny --model tiny_cnn --method joint --seed 0"
ARTEFACTS = [  # the file, the command that reads it next, the fix its error must name
    (f"{RUN}/metrics.json", EVALUATE, RETRAIN),
    (f"{RUN}/logits.pt", EVALUATE, RETRAIN),
    (f"{RUN}/grad_stats.csv", EVALUATE, RETRAIN),
    (f"{RUN}/logits.pt", ["tune", "--dataset", "tiny", "--method", "joint"], RETRAIN),
    ("results/eval/tiny/joint/tiny_cnn/seed0.json", ["aggregate"], "eebench evaluate --dataset tiny --model tiny_cnn --method joint --seed 0"),
    ("results/tune/tiny/joint/tiny_cnn/seed0/tuning.json", ["aggregate"], RETUNE),
    ("results/tune/tiny/joint/tiny_cnn/seed0/pareto.csv", ["aggregate"], RETUNE),
    ("results/tune/tiny/joint/tiny_cnn/seed0/operating_points.csv", ["aggregate"], RETUNE),
    *((f"results/{name}.csv", ["figures"], "eebench aggregate") for name in
      ("summary_exits", "summary_budgets", "per_exit", "runs", "calibration", "grad_stats", "operating_points",
       "significance", "failed_runs")),
    ("results/headline.json", ["regress", "--headline", "results/headline.json", "--expected",
                               str(ROOT / "tests/regression/expected.json")], "eebench aggregate"),
]


@pytest.mark.parametrize("how", ["truncate", "empty"])
@pytest.mark.parametrize("name,argv,fix", ARTEFACTS, ids=[f"{a[0].rsplit('/', 1)[-1]}->{a[1][0]}" for a in ARTEFACTS])
def test_a_damaged_artefact_is_one_line_naming_it_and_its_fix(copy_of, capsys, name, argv, fix, how):
    damage(copy_of / name, how)
    before = snapshot(copy_of)
    one_line_error(capsys, argv, name, fix)
    assert snapshot(copy_of) == before  # the stage wrote nothing (no half-written output, no temp file)


def test_a_damaged_checkpoint_of_an_unfinished_run_names_it(copy_of, capsys):
    """A checkpoint is read only to resume: a run without metrics.json whose checkpoint.pt is damaged."""
    (copy_of / RUN / "metrics.json").unlink()
    damage(copy_of / RUN / "checkpoint.pt", "truncate")
    one_line_error(capsys, ["train", "--dataset", "tiny", "--method", "joint", "--seed", "0", "--quiet"],
                   f"{RUN}/checkpoint.pt is corrupt", "delete it to restart the run from scratch")
    assert not (copy_of / RUN / "metrics.json").exists() and not (copy_of / RUN / "RUNNING.json").exists()


def test_the_console_script_prints_one_line_for_a_damaged_file(copy_of):
    damage(copy_of / "results/eval/tiny/branchynet/tiny_cnn/seed0.json", "truncate")
    result = subprocess.run([sys.executable, "-m", "bench.cli", "aggregate"], capture_output=True, text=True,
                            cwd=copy_of)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "results/eval/tiny/branchynet/tiny_cnn/seed0.json is corrupt" in line and "eebench evaluate --dataset tiny" in line


# --- failed writes ---------------------------------------------------------------------------------------------

def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def writes_to_dev_full(monkeypatch, name: str) -> None:
    """A full disk, for real: the temporary file of the atomic write of `name` is a symlink to /dev/full, on which
    the kernel answers every write with ENOSPC (the disk of this machine is not filled)."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, tmp = real(*args, **kwargs)
        if kwargs.get("prefix") == f".{name}.":
            os.unlink(tmp)
            os.symlink("/dev/full", tmp)
        return fd, tmp

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to produce ENOSPC")
def test_a_full_disk_is_one_line_and_keeps_the_old_file(copy_of, capsys, monkeypatch):
    old = (copy_of / "results/summary_exits.csv").read_bytes()
    writes_to_dev_full(monkeypatch, "summary_exits.csv")
    one_line_error(capsys, ["aggregate"], "cannot write results/summary_exits.csv: No space left on device",
                   "free space on that disk")
    assert (copy_of / "results/summary_exits.csv").read_bytes() == old and temp_files(copy_of) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) to produce ENOSPC")
def test_a_full_disk_while_training_names_the_checkpoint(copy_of, capsys, monkeypatch):
    shutil.rmtree(copy_of / RUN)
    writes_to_dev_full(monkeypatch, "checkpoint.pt")
    one_line_error(capsys, ["train", "--dataset", "tiny", "--method", "joint", "--seed", "0", "--quiet"],
                   f"{RUN}/checkpoint.pt: No space left on device", "free space on that disk")
    assert sorted(p.name for p in (copy_of / RUN).iterdir()) == [] and temp_files(copy_of) == []


def test_a_read_only_file_system_is_one_line(copy_of, capsys, monkeypatch):
    """Simulated: creating the evaluate stage's temporary file fails with EROFS, as on a file system mounted
    read-only (tests run as root, for whom chmod does not stop writes, and mounting needs privileges)."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(".seed0.json."):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs["dir"])
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    (copy_of / "results/eval/tiny/joint/tiny_cnn/seed0.json").unlink()  # else the record is up to date: no write
    before = snapshot(copy_of)
    one_line_error(capsys, EVALUATE, "cannot write results/eval/tiny/joint/tiny_cnn/seed0.json: Read-only file system",
                   "make results/eval/tiny/joint/tiny_cnn writable")
    assert snapshot(copy_of) == before


def test_a_file_where_a_folder_belongs_is_one_line(copy_of, capsys):
    """Works as root too: the evaluate stage's output folder is a regular file."""
    shutil.rmtree(copy_of / "results/eval/tiny/joint")
    (copy_of / "results/eval/tiny/joint").write_text("in the way\n")
    one_line_error(capsys, EVALUATE, "cannot create results/eval/tiny/joint/tiny_cnn/seed0.json", "results/eval/tiny/joint",
                   "move it out of the way")
    assert (copy_of / "results/eval/tiny/joint").read_text() == "in the way\n" and temp_files(copy_of) == []


def test_a_missing_table_names_the_stage_that_writes_it(copy_of, capsys):
    (copy_of / "results/summary_exits.csv").unlink()
    one_line_error(capsys, ["figures"], "results/summary_exits.csv is missing", "eebench aggregate")


# --- configuration files ----------------------------------------------------------------------------------------

def test_malformed_profile_yaml_through_study_is_one_line(tmp_path, real_params, monkeypatch, capsys):
    write_params(tmp_path, real_params)
    (tmp_path / "bad.yaml").write_text("grid:\n  methods: [joint\n  seeds: [0]\n")
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["study", "--profile", "bad.yaml", "--dir", "st"], "bad.yaml is not valid YAML at line",
                   "fix the YAML syntax there")
    assert not (tmp_path / "st").exists()


def test_check_accepts_valid_params_and_counts_the_grid(tmp_path, real_params, monkeypatch, capsys):
    params = merge(copy.deepcopy(real_params), {"grid": {"methods": ["branchynet", "sdn", "ztw"], "seeds": [0, 1],
                                                         "extra_seeds": [2, 3], "extra_seed_methods": ["sdn"],
                                                         "datasets": ["tiny", "fashion_mnist"]}})
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    # branchynet and ztw: seeds 0, 1; sdn: 0, 1, 2, 3; on two datasets
    assert "params.yaml is valid: 3 methods x 2 datasets (2 dataset x model settings), 16 runs" in capsys.readouterr().out
    write_params(tmp_path, merge(params, {"tune": {"trials": 0}}))
    one_line_error(capsys, ["check"], "tune.trials")


# --- a rejected params.yaml costs no results (issue 14, bad input) --------------------------------------------

@pytest.mark.slow
def test_dvc_repro_with_rejected_params_keeps_every_result(copy_of, real_params):
    """The study's outputs recorded by DVC (`dvc commit`), then `dvc repro` with params.yaml rejected at each
    stage that would run: the tune stages (tune.trials), the aggregate (analyse.alpha), every stage (an empty
    grid). DVC deletes a stage's outputs before it runs unless they are `persist: true`; validation fails inside
    the stage, so without persist these runs deleted the results (14 aggregated files are `cache: false`)."""
    from bench.study import build_study, dvc

    params = merge(merge(copy.deepcopy(real_params), TINY), SMALL)
    build_study(ROOT, copy_of, params)
    dvc(copy_of, "commit", "-f", "-q")
    assert dvc(copy_of, "status", "-q").returncode == 0
    kept = {k: v for k, v in snapshot(copy_of).items() if k.startswith(("results/", "figures/", "datasets/"))}
    assert len([k for k in kept if k.count("/") == 1 and k.startswith("results/")]) >= 14
    for bad in ({"tune": {"trials": 0}}, {"analyse": {"alpha": 2.0}}, {"grid": {"methods": []}}):
        (copy_of / "params.yaml").write_text(yaml.safe_dump(merge(params, bad), sort_keys=False))
        result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=copy_of, capture_output=True, text=True,
                                env=dvc_env())
        assert result.returncode != 0, bad
        now = snapshot(copy_of)
        assert {k: now.get(k) for k in kept} == kept, bad


def test_no_run_reaching_any_budget_is_one_line(copy_of, capsys):
    """Seen with a ClassyNet variant whose shallow exits never answered: every tuning.json infeasible at every
    budget left aggregate with no budget column (a KeyError traceback). It is one line naming the cause."""
    for path in copy_of.glob("results/tune/tiny/*/*/seed*/tuning.json"):
        record = json.loads(path.read_text())
        for row in record["budgets"]:
            row["feasible"] = False
        path.write_text(json.dumps(record))
    one_line_error(capsys, ["aggregate"], "no run of the grid reaches any of the budgets", "tuning.json",
                   "tune.budgets")
