"""The planner: every run's state from small files, and `eebench train` executing exactly what is not done."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import bench.identity
from bench.cli import main
from bench.config import validate
from bench.identity import run_identity
from bench.io import write_json
from bench.paths import run_dir
from bench.plan import MARKER, counts, plan_grid
from tests.conftest import write_params

ALL_METHODS = ["branchynet", "cascade_aware", "cascade_opt", "classynet", "disjoint", "hard_cgt", "jei_dnn", "joint",
               "l2w_den", "mixed", "pabee_weighted", "sdn", "self_distill", "soft_cgt", "ztw"]


def patch_file_hash(monkeypatch, suffix: str) -> None:
    """As if the file ending in `suffix` had been edited: its hash changes, every other file's stays."""
    real = bench.identity.hash_file
    monkeypatch.setattr(bench.identity, "hash_file",
                        lambda path: "edited" + real(path) if path.as_posix().endswith(suffix) else real(path))


def fabricate_done(params: dict, root, dataset: str, method: str, seed: int) -> None:
    """A finished run's record with the identity the run has now (what train_run writes, minus the numbers)."""
    model = params["train"][dataset]["model"]["name"]
    write_json(root / run_dir(dataset, model, method, seed) / "metrics.json",
               {"status": "ok", "identity": run_identity(params, dataset, model, method, seed, root)})


@pytest.fixture
def every_method(tiny_params, in_tmp):
    path = write_params(in_tmp, tiny_params)  # with the claims files the params name
    params = validate({**tiny_params, "grid": {**tiny_params["grid"], "methods": ALL_METHODS}})
    assert main(["--params", str(path), "prepare", "--dataset", "tiny"]) == 0
    for method in ALL_METHODS:
        fabricate_done(params, in_tmp, "tiny", method, 0)
    return params


def states(runs) -> dict:
    return {run.method: (run.state, run.reason) for run in runs}


def test_every_fabricated_run_is_done(every_method, in_tmp):
    runs = plan_grid(every_method, in_tmp)
    assert counts(runs) == {"done": len(ALL_METHODS), "stale": 0, "missing": 0, "failed": 0, "running": 0}


def test_editing_the_shared_cgt_loss_makes_exactly_the_cgt_methods_stale(every_method, in_tmp, monkeypatch):
    patch_file_hash(monkeypatch, "methods/_cgt.py")
    stale = {m: reason for m, (state, reason) in states(plan_grid(every_method, in_tmp)).items() if state != "done"}
    assert stale == {"hard_cgt": "code methods/_cgt.py changed", "soft_cgt": "code methods/_cgt.py changed"}


def test_editing_the_engine_makes_every_method_stale(every_method, in_tmp, monkeypatch):
    patch_file_hash(monkeypatch, "bench/train/engine.py")
    assert set(states(plan_grid(every_method, in_tmp)).values()) == {("stale", "code bench/train/engine.py changed")}


def test_changing_one_methods_params_makes_only_that_method_stale(every_method, in_tmp):
    every_method["methods"]["sdn"] = {**every_method["methods"]["sdn"], "label_smoothing": 0.25}
    stale = {m: reason for m, (state, reason) in states(plan_grid(every_method, in_tmp)).items() if state != "done"}
    assert stale == {"sdn": "params methods.sdn changed"}


def test_changing_the_recipe_or_the_manifest_makes_every_run_stale(every_method, in_tmp):
    tiny = every_method["train"]["tiny"]
    recipe = {**every_method, "train": {**every_method["train"], "tiny": {**tiny, "lr": tiny["lr"] * 3}}}
    assert set(states(plan_grid(recipe, in_tmp)).values()) == {("stale", "params train.tiny changed")}
    manifest = in_tmp / "datasets" / "tiny" / "manifest.json"
    record = json.loads(manifest.read_text())
    record["extra"]["mean"] = [m + 1 for m in record["extra"]["mean"]]
    manifest.write_text(json.dumps(record))  # the data checksum is unchanged: only the metadata differs
    assert set(states(plan_grid(every_method, in_tmp)).values()) == {("stale", "data changed")}


def no_squeue(monkeypatch, tmp_path) -> None:
    """A machine without SLURM's client tools: PATH holds only a folder without squeue."""
    empty = tmp_path / "no-slurm-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))  # no cluster's: nothing to find either


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped): no process has it now."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_missing_failed_running_and_dead_markers(every_method, in_tmp, monkeypatch, tmp_path_factory):
    no_squeue(monkeypatch, tmp_path_factory.mktemp("bin"))
    folder = lambda method: in_tmp / run_dir("tiny", "tiny_cnn", method, 0)  # noqa: E731
    (folder("joint") / "metrics.json").unlink()
    (folder("sdn") / "metrics.json").unlink()
    torch.save({}, folder("sdn") / "checkpoint.pt")
    write_json(folder("ztw") / "metrics.json", {"status": "failed", "reason": "training diverged: loss is nan"})
    host = socket.gethostname()
    write_json(folder("mixed") / MARKER, {"pid": os.getpid(), "host": host, "started": "t0", "executor": "local",
                                          "job_id": None})
    gone = dead_pid()
    write_json(folder("disjoint") / MARKER, {"pid": gone, "host": host, "started": "t0",
                                             "executor": "local", "job_id": None})
    for method in ("hard_cgt", "soft_cgt"):  # killed before finishing: one left a checkpoint, the other nothing
        (folder(method) / "metrics.json").unlink()
        write_json(folder(method) / MARKER, {"pid": gone, "host": host, "started": "t0", "executor": "processes",
                                             "job_id": None})
    torch.save({}, folder("hard_cgt") / "checkpoint.pt")
    write_json(folder("classynet") / MARKER, {"pid": 1, "host": "node7", "started": "t0", "executor": "slurm",
                                              "job_id": "4242_3"})
    (folder("classynet") / "metrics.json").unlink()
    got = states(plan_grid(every_method, in_tmp))
    assert got["joint"] == ("missing", "never trained")
    assert got["sdn"][0] == "missing" and "checkpoint.pt" in got["sdn"][1]
    assert got["ztw"] == ("failed", "training diverged: loss is nan")
    assert got["mixed"][0] == "running" and str(os.getpid()) in got["mixed"][1]
    assert got["disjoint"] == ("done", "")  # finished: the marker a kill left after the last write is harmless
    assert got["hard_cgt"] == ("failed", f"pid {gone} on {host} is gone (its processes run was stopped since t0); "
                                         "unfinished: checkpoint.pt kept (resumed if its identity matches)")
    assert got["soft_cgt"] == ("missing", f"pid {gone} on {host} is gone (its processes run was stopped since t0); "
                                          "nothing written")
    assert got["classynet"] == ("missing", "SLURM job 4242_3 is gone (squeue not found: no SLURM on this machine to "
                                           "run it); nothing written")


@pytest.mark.parametrize("content", [b'{"pid": 12', b"", b"\xff\xfe not json", b"[1, 2]"])
def test_a_damaged_marker_or_record_shows_in_the_plan_instead_of_crashing_it(every_method, in_tmp, capsys, content):
    folder = lambda method: in_tmp / run_dir("tiny", "tiny_cnn", method, 0)  # noqa: E731
    (folder("joint") / "metrics.json").unlink()
    (folder("joint") / MARKER).write_bytes(content)
    (folder("sdn") / MARKER).write_bytes(content)  # beside a finished record: the run is done all the same
    (folder("ztw") / "metrics.json").write_bytes(content)
    got = states(plan_grid(every_method, in_tmp))
    assert got["joint"][0] == "failed" and got["joint"][1].startswith(f"{MARKER} is ")
    assert "whether a process still trains this run is unknown; `eebench run` retrains it" in got["joint"][1]
    assert got["sdn"] == ("done", "")
    if content == b"[1, 2]":
        assert got["ztw"] == ("stale", "metrics.json is not a run record")
    else:
        assert got["ztw"][0] == "stale" and got["ztw"][1].startswith("metrics.json damaged: ")
        assert "metrics.json is corrupt" in got["ztw"][1]
    assert main(["plan"]) == 0  # the command shows them (the params' grid: joint and branchynet)
    assert any("joint" in line and "failed" in line and MARKER in line for line in capsys.readouterr().out.splitlines())


def test_a_marker_of_a_slurm_job_is_running_only_while_squeue_knows_the_job(every_method, in_tmp, monkeypatch,
                                                                         tmp_path_factory):
    """squeue stood in by scripts answering as SLURM does for a queued job, a job it no longer knows, an ended job
    and an unreachable controller (the real cluster: test_slurm.py)."""
    bin_dir = tmp_path_factory.mktemp("bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_CONF", str(bin_dir / "slurm.conf"))  # the stand-in ignores it; no real cluster asked
    folder = in_tmp / run_dir("tiny", "tiny_cnn", "joint", 0)
    (folder / "metrics.json").unlink()
    write_json(folder / MARKER, {"pid": 1, "host": "node7", "started": "t0", "executor": "slurm", "job_id": "77"})
    answers = {  # squeue's stdout, stderr and exit status -> (state, reason)
        ("RUNNING", "", 0): ("running", "slurm job 77 (RUNNING, since t0)"),
        ("PENDING", "", 0): ("running", "slurm job 77 (PENDING, since t0)"),
        ("", "slurm_load_jobs error: Invalid job id specified", 1):
            ("missing", "SLURM job 77 is gone (no longer in SLURM's queue: it ended without clearing its marker "
                        "(cancelled, timed out or killed)); nothing written"),
        ("", "", 0): ("missing", "SLURM job 77 is gone (no longer in SLURM's queue: it ended without clearing its "
                                 "marker (cancelled, timed out or killed)); nothing written"),
        ("TIMEOUT", "", 0): ("missing", "SLURM job 77 is gone (it ended TIMEOUT); nothing written"),
        ("", "squeue: error: Unable to contact slurm controller (connect failure)", 1):
            ("running", "slurm job 77 (since t0; state unknown: squeue: error: Unable to contact slurm controller "
                        "(connect failure))"),
    }
    for (out, err, code), expected in answers.items():
        script = bin_dir / "squeue"
        script.write_text(f"#!/bin/sh\n[ \"$3\" = 77 ] || exit 3\necho '{out}'\necho '{err}' >&2\nexit {code}\n")
        script.chmod(0o755)
        assert states(plan_grid(every_method, in_tmp))["joint"] == expected, (out, err, code)


def test_no_identity_recorded_is_stale_with_its_reason(every_method, in_tmp):
    write_json(in_tmp / run_dir("tiny", "tiny_cnn", "joint", 0) / "metrics.json", {"status": "ok"})
    assert states(plan_grid(every_method, in_tmp))["joint"] == ("stale", "no identity recorded (trained before run identities)")


def test_plan_command_json(every_method, in_tmp, tiny_params, capsys):
    (in_tmp / run_dir("tiny", "tiny_cnn", "joint", 0) / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["plan", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"done": 1, "stale": 0, "missing": 1, "failed": 0, "running": 0}  # the params' grid
    assert {(r["method"], r["state"]) for r in out["runs"]} == {("joint", "missing"), ("branchynet", "done")}
    assert main(["plan", "--method", "hard_cgt", "--method", "sdn"]) == 0
    table = capsys.readouterr().out
    assert "hard_cgt" in table and "sdn" in table and "joint" not in table and "2 runs: 2 done" in table
    assert table.splitlines()[0].split()[:4] == ["dataset", "model", "method", "seed"]  # the model column
    assert {r["model"] for r in out["runs"]} == {"tiny_cnn"}  # the dataset's one model (no grid.models)


def test_train_skips_done_runs_untouched_and_retrains_stale_ones(tiny_params, in_tmp, monkeypatch, capsys):
    tiny_params["grid"]["methods"] = ["joint", "branchynet", "hard_cgt"]
    write_params(in_tmp, tiny_params)
    assert main(["prepare", "--dataset", "tiny"]) == 0
    for method in ("joint", "hard_cgt"):
        assert main(["train", "--dataset", "tiny", "--method", method, "--quiet"]) == 0
    folders = {m: in_tmp / run_dir("tiny", "tiny_cnn", m, 0) for m in ("joint", "hard_cgt")}
    before = {m: {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in f.iterdir()} for m, f in folders.items()}
    first = json.loads((folders["hard_cgt"] / "metrics.json").read_text())["identity"]

    patch_file_hash(monkeypatch, "methods/_cgt.py")
    capsys.readouterr()
    assert main(["train", "--dataset", "tiny", "--method", "joint", "--quiet"]) == 0
    assert "up to date: joint/tiny/tiny_cnn/s0" in capsys.readouterr().out
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folders["joint"].iterdir()} == before["joint"]

    assert main(["train", "--dataset", "tiny", "--method", "hard_cgt", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "started hard_cgt/tiny/tiny_cnn/s0 (stale: code methods/_cgt.py changed)" in out
    assert "ignoring" in out and "resuming" not in out  # the finished checkpoint of the old identity is not reused
    second = json.loads((folders["hard_cgt"] / "metrics.json").read_text())["identity"]
    assert second["digest"] != first["digest"]
    assert torch.load(folders["hard_cgt"] / "checkpoint.pt", weights_only=False)["identity"] == second["digest"]
    assert not (folders["hard_cgt"] / MARKER).exists()
    # the same training with only the code hash changed is deterministic: the numbers are those of the first run
    assert (folders["hard_cgt"] / "logits.pt").read_bytes() == before["hard_cgt"]["logits.pt"][0]


def test_a_checkpoint_of_the_same_identity_is_resumed_and_of_another_is_not(tiny_params, in_tmp, monkeypatch, capsys):
    write_params(in_tmp, tiny_params)
    assert main(["prepare", "--dataset", "tiny"]) == 0
    assert main(["train", "--dataset", "tiny", "--method", "joint", "--quiet"]) == 0
    folder = in_tmp / run_dir("tiny", "tiny_cnn", "joint", 0)
    (folder / "metrics.json").unlink()  # killed after its last checkpoint
    capsys.readouterr()
    assert main(["train", "--dataset", "tiny", "--method", "joint", "--quiet"]) == 0
    assert "resuming joint/tiny/tiny_cnn/s0 after epoch 2/2" in capsys.readouterr().out
    (folder / "metrics.json").unlink()
    tiny_params["methods"]["joint"] = {**tiny_params["methods"].get("joint", {}), "label_smoothing": 0.1}
    write_params(in_tmp, tiny_params)
    assert main(["train", "--dataset", "tiny", "--method", "joint", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "ignoring" in out and "resuming" not in out


def test_a_dataset_no_longer_prepared_makes_its_runs_stale_and_says_how_to_fix_it(every_method, in_tmp):
    (in_tmp / "datasets" / "tiny" / "manifest.json").unlink()
    assert set(states(plan_grid(every_method, in_tmp)).values()) == {
        ("stale", "data not prepared (run `eebench prepare --dataset tiny`)")}
