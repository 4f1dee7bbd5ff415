"""Run identity: code closures against independent references (modulefinder, a real import), the train stage's
deps covering every closure, and methods from other packages identified by their distribution."""

from __future__ import annotations

import hashlib
import importlib
import modulefinder
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

import bench.identity
from bench.config import validate
from bench.data import DATASETS
from bench.identity import (REPO, SourceTree, closure_in, code_closure, code_identity, dataset_module, method_module,
                            run_identity, why_different)
from bench.train.method import METHODS

MODULES = ["methods.hard_cgt", "methods.soft_cgt", "methods.mixed", "methods.joint", "bench.train.engine",
           "bench.models", "bench.data.tiny"]


def relative(paths) -> set[str]:
    return {Path(p).resolve().relative_to(REPO).as_posix() for p in paths}


def modulefinder_closure(module: str, root: Path) -> set[Path]:
    """The reference: the standard library's bytecode-scanning finder, limited to one folder."""
    finder = modulefinder.ModuleFinder(path=[str(root)])
    finder.import_hook(module)
    return {Path(m.__file__).resolve() for m in finder.modules.values() if m.__file__}


def test_the_cgt_methods_share_their_loss_file_and_mixed_its_parent():
    assert "methods/_cgt.py" in relative(code_closure("methods.hard_cgt"))
    assert "methods/_cgt.py" in relative(code_closure("methods.soft_cgt"))
    assert "methods/disjoint.py" in relative(code_closure("methods.mixed"))
    assert "methods/_cgt.py" not in relative(code_closure("methods.joint"))
    assert "methods/hard_cgt.py" not in relative(code_closure("methods.soft_cgt"))


@pytest.mark.parametrize("module", MODULES)
def test_closure_equals_modulefinder(module):
    assert set(code_closure(module)) == modulefinder_closure(module, REPO)


@pytest.mark.parametrize("module", ["methods.hard_cgt", "methods.mixed", "bench.train.engine"])
def test_every_repository_module_a_real_import_loads_is_in_the_closure(module):
    listing = subprocess.run([sys.executable, "-c", f"import sys, {module}\n"
                              "print('\\n'.join(str(getattr(m, '__file__', None)) for m in list(sys.modules.values())))"],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    loaded = {Path(f) for f in listing if Path(f).is_absolute()}  # torch names some modules by a bare file name
    loaded = {f.resolve() for f in loaded if f.resolve().is_relative_to(REPO) and ".venv" not in f.parts}
    assert loaded and loaded <= set(code_closure(module))


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_relative_imports_submodules_and_imports_inside_functions(tmp_path):
    write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\nfrom .sub import c\nfrom .sub.d import thing\nimport os\n",
        "pkg/b.py": "import pkg.deep.leaf\n",
        "pkg/deep/__init__.py": "",
        "pkg/deep/leaf.py": "def f():\n    from ..sub import late\n",
        "pkg/sub/__init__.py": "from .. import e\n",
        "pkg/sub/c.py": "",
        "pkg/sub/d.py": "thing = 1\n",
        "pkg/sub/late.py": "",
        "pkg/e.py": "",
        "pkg/unused.py": "",
        "other.py": "",
    })
    got = set(closure_in(SourceTree(tmp_path.resolve()), "pkg.a"))
    assert got == modulefinder_closure("pkg.a", tmp_path)
    assert {p.relative_to(tmp_path.resolve()).as_posix() for p in got} == {
        "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/deep/__init__.py", "pkg/deep/leaf.py", "pkg/sub/__init__.py",
        "pkg/sub/c.py", "pkg/sub/d.py", "pkg/sub/late.py", "pkg/e.py"}


def resolve(dep: str, dataset: str, method: str) -> str:
    return dep.replace("${item.dataset}", dataset).replace("${item.method}", method)


def test_the_train_stage_depends_on_every_file_of_every_methods_closure():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["runs"]
    assert "methods/" not in stage["cmd"]  # an entry-point method or a file named otherwise must run too
    for dataset in DATASETS.names():
        for method in METHODS.names():
            deps = [resolve(d, dataset, method) for d in stage["deps"]]
            assert all((REPO / d).exists() for d in deps if not d.startswith("datasets/"))
            files = code_identity(method_module(method), dataset_module(dataset))["files"]
            uncovered = [f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
            assert not uncovered, f"runs@{dataset}-{method}: {uncovered} not in its deps"


def test_an_uncovered_file_would_be_caught():  # the check above can fail: drop one folder and it does
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["runs"]
    deps = [d for d in stage["deps"] if d != "methods"]
    files = code_identity(method_module("hard_cgt"), dataset_module("tiny"))["files"]
    assert [f for f in files if not any(f == d or f.startswith(d + "/") for d in deps)] == [
        "methods/__init__.py", "methods/_cgt.py", "methods/hard_cgt.py"]


DIST = {
    "poly_pkg/__init__.py": """
        import torch

        import other_mod  # noqa: F401  (beside the package on sys.path, but not the distribution's)
        from bench.train.method import Method, register_method

        from . import loss


        @register_method("poly1_ds")
        class Poly(Method):
            defaults = {"eps": 1.0}

            def exit_losses(self, logits, targets, ctx):
                return torch.stack([loss.poly1(z, targets, self.params["eps"]) for z in logits])
        """,
    "poly_pkg/loss.py": """
        import torch.nn.functional as F


        def poly1(z, y, eps):
            ce = F.cross_entropy(z, y, reduction="none")
            return (ce + eps * (1 - (-ce).exp())).mean()
        """,
    "poly_pkg/unused.py": "",
    "other_mod.py": "",
    "poly_pkg-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: poly-pkg\nVersion: 1.2.3\n",
    "poly_pkg-1.2.3.dist-info/entry_points.txt": "[eebench.methods]\npoly1_ds = poly_pkg\n",
    "poly_pkg-1.2.3.dist-info/RECORD": "poly_pkg/__init__.py,,\npoly_pkg/loss.py,,\npoly_pkg/unused.py,,\n"
                                        "poly_pkg-1.2.3.dist-info/METADATA,,\n",
}


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_tree(site, DIST)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # registered for this test only
    importlib.invalidate_caches()
    bench.identity.installed_packages.cache_clear()  # a distribution installed just now
    try:
        (entry,) = [e for e in entry_points(group="eebench.methods") if e.name == "poly1_ds"]
        entry.load()
        yield site.resolve()
    finally:
        for name in [n for n in sys.modules if n == "poly_pkg" or n.startswith("poly_pkg.") or n == "other_mod"]:
            del sys.modules[name]
        bench.identity.source_tree.cache_clear()
        bench.identity.installed_packages.cache_clear()


def test_an_entry_point_method_is_identified_by_its_distribution(plugin, tiny_params):
    assert method_module("poly1_ds") == "poly_pkg"
    assert set(code_closure("poly_pkg")) == {plugin / "poly_pkg" / "__init__.py", plugin / "poly_pkg" / "loss.py"}
    params = validate({**tiny_params, "methods": {**tiny_params["methods"], "poly1_ds": {}}})
    identity = run_identity(params, "tiny", "tiny_cnn", "poly1_ds", 0, Path("."))
    code = identity["components"]["code"]
    assert code["distributions"] == {"poly-pkg": "1.2.3"}
    for name in ("__init__.py", "loss.py"):
        assert code["files"][f"poly-pkg:poly_pkg/{name}"] == hashlib.sha256((plugin / "poly_pkg" / name).read_bytes()).hexdigest()
    assert not [k for k in code["files"] if "unused" in k or "other_mod" in k]
    assert "bench/train/engine.py" in code["files"]  # the engine's closure, keyed in the repository

    (plugin / "poly_pkg" / "loss.py").write_text("# edited\n" + (plugin / "poly_pkg" / "loss.py").read_text())
    edited = run_identity(params, "tiny", "tiny_cnn", "poly1_ds", 0, Path("."))
    assert why_different(identity, edited, "tiny", "poly1_ds") == "code poly-pkg:poly_pkg/loss.py changed"


def test_a_module_outside_the_repository_and_every_distribution_is_refused(tmp_path, monkeypatch):
    write_tree(tmp_path, {"loose_mod.py": "x = 1\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(bench.identity.BenchError, match="neither in this repository"):
        code_closure("loose_mod")
    sys.modules.pop("loose_mod", None)


def test_the_identity_and_the_planner_are_not_part_of_what_they_identify():
    training = relative(code_closure("bench.train.engine")) | relative(code_closure("bench.models"))
    assert not {"bench/identity.py", "bench/plan.py", "bench/execute/unit.py", "bench/cli.py"} & training


def test_an_editable_install_of_a_plugin_is_identified_by_its_source_files(tmp_path, monkeypatch, tiny_params):
    """`pip install -e` lists no package files in the distribution's RECORD; the entry point names the package."""
    files = {k.replace("poly_pkg", "edit_pkg"): v for k, v in DIST.items() if not k.startswith("poly_pkg-")}
    files["edit_pkg/__init__.py"] = files["edit_pkg/__init__.py"].replace("poly1_ds", "edit_ds")
    write_tree(tmp_path / "src", files)
    write_tree(tmp_path / "site", {
        "edit_pkg-0.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: edit-pkg\nVersion: 0.3\n",
        "edit_pkg-0.3.dist-info/entry_points.txt": "[eebench.methods]\nedit_ds = edit_pkg\n",
        "edit_pkg-0.3.dist-info/RECORD": "edit_pkg-0.3.dist-info/METADATA,,\n__editable__.edit_pkg-0.3.pth,,\n"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    importlib.invalidate_caches()
    bench.identity.installed_packages.cache_clear()
    try:
        (entry,) = [e for e in entry_points(group="eebench.methods") if e.name == "edit_ds"]
        entry.load()
        src = (tmp_path / "src").resolve()
        assert set(code_closure("edit_pkg")) == {src / "edit_pkg/__init__.py", src / "edit_pkg/loss.py"}
        params = validate({**tiny_params, "methods": {**tiny_params["methods"], "edit_ds": {}}})
        code = run_identity(params, "tiny", "tiny_cnn", "edit_ds", 0, Path("."))["components"]["code"]
        assert code["distributions"] == {"edit-pkg": "0.3"}
        assert code["files"]["edit-pkg:edit_pkg/loss.py"] == hashlib.sha256((src / "edit_pkg/loss.py").read_bytes()).hexdigest()
        assert not [k for k in code["files"] if "other_mod" in k or "unused" in k]
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in ("edit_pkg", "other_mod")]:
            del sys.modules[name]
        bench.identity.source_tree.cache_clear()
        bench.identity.installed_packages.cache_clear()


@pytest.mark.slow
def test_an_entry_point_method_runs_through_the_real_pipeline(tmp_path, tiny_params, monkeypatch):
    """The study used to fail with 'No such file or directory: methods/poly1_ds.py' (dvc.yaml named the file)."""
    import json

    from bench.study import build_study, dvc
    from tests.conftest import ROOT

    site = tmp_path / "site"
    write_tree(site, DIST)
    monkeypatch.setenv("PYTHONPATH", str(site))  # the stages' processes see the installed plugin
    tiny_params["grid"]["methods"] = ["joint", "poly1_ds"]
    tiny_params["methods"]["poly1_ds"] = {"eps": 2.0}
    tiny_params["analyse"]["reference"] = "joint"
    folder = tmp_path / "study"
    build_study(ROOT, folder, tiny_params)
    dvc(folder, "repro")
    record = json.loads((folder / "results/runs/tiny/poly1_ds/tiny_cnn/seed0/metrics.json").read_text())
    assert record["status"] == "ok" and record["identity"]["components"]["code"]["distributions"] == {"poly-pkg": "1.2.3"}
    assert "poly1_ds" in json.loads((folder / "results/metrics.json").read_text())["tiny"]["tiny_cnn"]


def two_models(tiny_params: dict, **override) -> dict:
    """tiny studied with tiny_cnn and tiny_mlp (the latter with its own widths and epochs, plus `override`)."""
    params = {**tiny_params, "grid": {**tiny_params["grid"], "models": {"tiny": ["tiny_cnn", "tiny_mlp"]}},
              "train": {**tiny_params["train"], "tiny": {**tiny_params["train"]["tiny"], "models": {
                  "tiny_mlp": {"model": {"widths": [16, 16]}, "epochs": 1, **override}}}}}
    return validate(params)


def test_the_model_is_part_of_the_run_identity(tiny_params):
    params = two_models(tiny_params)
    cnn = run_identity(params, "tiny", "tiny_cnn", "joint", 0, Path("."), data=None)
    mlp = run_identity(params, "tiny", "tiny_mlp", "joint", 0, Path("."), data=None)
    assert cnn["components"]["run"] == {"dataset": "tiny", "model": "tiny_cnn", "method": "joint", "seed": 0}
    assert mlp["components"]["run"] == {"dataset": "tiny", "model": "tiny_mlp", "method": "joint", "seed": 0}
    assert cnn["digest"] != mlp["digest"]
    tiny = {k: v for k, v in tiny_params["train"]["tiny"].items()}  # the setting, spelled out by hand
    assert mlp["components"]["recipe"]["model"] == {"name": "tiny_mlp", "widths": [16, 16]}
    assert mlp["components"]["recipe"]["epochs"] == 1 and mlp["components"]["recipe"]["lr"] == tiny["lr"]
    assert cnn["components"]["recipe"]["model"] == {"name": "tiny_cnn", **{k: v for k, v in tiny["model"].items()
                                                                           if k != "name"}}
    assert cnn["components"]["recipe"]["epochs"] == tiny["epochs"] and "models" not in cnn["components"]["recipe"]
    # adding a second model leaves the first model's runs as they were (same identity as with one model)
    alone = run_identity(validate(tiny_params), "tiny", "tiny_cnn", "joint", 0, Path("."), data=None)
    assert alone["digest"] == cnn["digest"]


def test_one_models_settings_change_only_that_models_identity(tiny_params):
    before, after = two_models(tiny_params), two_models(tiny_params, lr=0.5)
    for model, changed in (("tiny_cnn", False), ("tiny_mlp", True)):
        old = run_identity(before, "tiny", model, "joint", 0, Path("."), data=None)
        new = run_identity(after, "tiny", model, "joint", 0, Path("."), data=None)
        assert (old["digest"] != new["digest"]) is changed
        assert [n for n in old["hashes"] if old["hashes"][n] != new["hashes"][n]] == (["recipe"] if changed else [])
