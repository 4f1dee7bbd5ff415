"""A run's exact identity: what it trains (dataset, model, method, seed), how (train.common, the setting of
(dataset, model): train.<dataset> with its model and train.<dataset>.models.<model> merged in, methods.<method>), on which data (the data checksum and the whole prepared manifest) and with which code
(every file that shapes its weights: the method's module and each module of the same source tree it imports,
transitively, plus the engine's and the models' closures). Derived by parsing imports, never a hand list.

A checkpoint or finished run whose identity digest differs is never resumed or reused; the per-component
hashes let the planner say why a run is stale. Not imported by the training engine: its callers pass it in."""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import distribution, entry_points, packages_distributions
from pathlib import Path

from bench.errors import BenchError
from bench.paths import DATASETS

REPO = Path(__file__).resolve().parents[1]  # the source tree bench/ and methods/ are imported from
TRAINING_MODULES = ("bench.train.engine", "bench.models")  # besides the method's: the engine and the models
COMPONENTS = ("run", "common", "recipe", "params", "data", "code")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: object) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


@dataclass(frozen=True)
class SourceTree:
    """Where a closure may reach: a folder on the import path and, for an installed distribution, its own files
    (a closure never leaves the distribution the module belongs to)."""

    root: Path
    files: frozenset[Path] | None = None  # None: every file under root
    distribution: str | None = None
    version: str | None = None

    def module_file(self, name: str) -> Path | None:
        """The file of module `name` in this tree (`a/b.py` or `a/b/__init__.py`), or None."""
        base = self.root.joinpath(*name.split("."))
        for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
            if path.is_file() and (self.files is None or path.resolve() in self.files):
                return path.resolve()
        return None

    def module_name(self, path: Path) -> str:
        parts = list(path.resolve().relative_to(self.root).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def key(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()


def module_path(module_name: str) -> Path:
    """The source file of an importable module (imported modules first: also covers `__main__` scripts)."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is None:
        found = SourceTree(REPO).module_file(module_name)
        if found is not None:
            return found
        import importlib.util

        spec = importlib.util.find_spec(module_name)
        file = spec.origin if spec is not None else None
    if file is None or not str(file).endswith(".py"):
        raise BenchError(f"module {module_name} has no Python source file; a method's code must live in a .py module "
                         "of this repository or of an installed distribution")
    return Path(file).resolve()


@lru_cache(maxsize=None)
def installed_packages() -> dict[str, list[str]]:
    """Top-level import names -> distributions (scanning every installed distribution: once per process)."""
    return packages_distributions()


@lru_cache(maxsize=None)
def source_tree(path: Path) -> SourceTree:
    """The tree a module file belongs to: this repository, or the installed distribution that ships it."""
    if path.is_relative_to(REPO) and not any(part in ("site-packages", "dist-packages") for part in path.parts):
        return SourceTree(REPO)
    for entry in map(Path, sys.path):
        root = entry.resolve() if entry.is_dir() else None
        if root is None or not path.is_relative_to(root):
            continue
        top = path.relative_to(root).parts[0].removesuffix(".py")
        for name in installed_packages().get(top, []):
            dist = distribution(name)
            files = frozenset(Path(dist.locate_file(f)).resolve() for f in dist.files or [])
            if path in files:
                return SourceTree(root, files, dist.metadata["Name"], dist.version)
        for entry_point in entry_points(group="eebench.methods"):  # an editable install: its files are not listed
            if entry_point.module.split(".")[0] == top and entry_point.dist is not None:
                package = root / top if (root / top).is_dir() else root / f"{top}.py"
                files = frozenset(f.resolve() for f in ([package] if package.is_file() else package.rglob("*.py")))
                return SourceTree(root, files, entry_point.dist.metadata["Name"], entry_point.dist.version)
    raise BenchError(f"{path} is neither in this repository ({REPO}) nor in an installed distribution; install the "
                     "package that defines the method (pip install -e .) so its code can be identified")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an `import` in `tree` may load (with its parent packages), relative imports resolved;
    `from a import b` yields `a` and `a.b` (b may be a submodule). Imports inside functions count too."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    continue  # beyond the top-level package: Python itself would refuse it
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base:
                names.add(base)
            names.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*")
    parents = {".".join(name.split(".")[:k]) for name in names for k in range(1, name.count(".") + 1)}
    return names | parents


def code_closure(module_name: str) -> list[Path]:
    """The module's file plus every module of the same source tree it imports, transitively, with the
    `__init__.py` of every package on the way (importing `a.b.c` runs `a` and `a.b` first)."""
    start = module_path(module_name)
    tree = source_tree(start)
    return closure_in(tree, tree.module_name(start) if module_name == "__main__" else module_name, start)


def closure_in(tree: SourceTree, name: str, start: Path | None = None) -> list[Path]:
    """`code_closure` within one source tree, from module `name` (whose file is `start`, or found in the tree)."""
    start = start or tree.module_file(name)
    if start is None:
        raise BenchError(f"module {name} is not in {tree.root}")
    todo = [(name, start)] + [(p, f) for p in parents_of(name) if (f := tree.module_file(p)) is not None]
    seen: dict[Path, str] = {}
    while todo:
        name, path = todo.pop()
        if path in seen:
            continue
        seen[path] = name
        parsed = ast.parse(path.read_bytes(), filename=str(path))
        for imported in imported_names(parsed, name, path.name == "__init__.py"):
            found = tree.module_file(imported)
            if found is not None and found not in seen:
                todo.append((imported, found))
    return sorted(seen)


def parents_of(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


@lru_cache(maxsize=None)
def file_sha256(path: Path, mtime_ns: int, size: int) -> str:  # keyed by stat: a changed file is re-read
    return sha256_bytes(path.read_bytes())


def hash_file(path: Path) -> str:
    stat = path.stat()
    return file_sha256(path, stat.st_mtime_ns, stat.st_size)


def code_identity(*modules: str, closures: dict[str, list[Path]] | None = None) -> dict:
    """The code component: {"files": {key: sha256}} for the union of the closures of `modules` (the method's and
    the dataset's), the engine and the models (keys relative to their source tree); an external method adds its
    distribution's name and version, and its files are keyed `<distribution>:<path>`. `closures`: a cache of
    closures by module, kept by a caller that identifies many runs (the planner)."""
    closures = {} if closures is None else closures
    files: dict[str, str] = {}
    distributions: dict[str, str] = {}
    for module in (*modules, *TRAINING_MODULES):
        if module not in closures:
            closures[module] = code_closure(module)
        for path in closures[module]:
            tree = source_tree(path)
            key = tree.key(path) if tree.distribution is None else f"{tree.distribution}:{tree.key(path)}"
            if tree.distribution is not None:
                distributions[tree.distribution] = tree.version
            files[key] = hash_file(path)
    code = {"files": dict(sorted(files.items()))}
    if distributions:
        code["distributions"] = distributions
    return code


def method_module(method: str) -> str:
    from bench.train.method import get_method

    return get_method(method).__module__


def dataset_module(dataset: str) -> str:
    """The module that registers the dataset: its spec (e.g. the augmentation it trains with) shapes the weights."""
    from bench.data import get_dataset

    return get_dataset(dataset).prepare.__module__


def data_identity(dataset: str, root: Path = Path(".")) -> dict | None:
    """The data component: the data checksum and the sha256 of the whole prepared manifest.json (so flipping any
    manifest field, not only the checksum, changes the identity); None when the dataset is not prepared."""
    path = root / DATASETS / dataset / "manifest.json"
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise BenchError(f"{path} is unreadable or not valid JSON; run `eebench prepare --dataset {dataset}` again") from None
    return {"data_sha256": manifest.get("data_sha256") if isinstance(manifest, dict) else None,
            "manifest_sha256": sha256_bytes(raw)}


def compose(components: dict, known: dict | None = None) -> dict:
    """{"digest", "hashes", "components"}: the digest is the hash of the per-component hashes (`known`: hashes
    already computed for some components, e.g. by the planner once for many runs)."""
    known = known or {}
    hashes = {name: known[name] if name in known else sha256_json(components[name]) for name in COMPONENTS}
    return {"digest": sha256_json(hashes), "hashes": hashes, "components": components}


def run_identity(params: dict, dataset: str, model: str, method: str, seed: int, root: Path = Path("."),
                 code: dict | None = None, data: dict | None | bool = False) -> dict:
    """The identity of one run of validated `params`. `code`/`data` may be passed in when computed once for
    many runs (the planner); otherwise they are derived here."""
    from bench.config import setting

    if code is None:
        code = code_identity(method_module(method), dataset_module(dataset))
    if data is False:
        data = data_identity(dataset, root)
    return compose({
        "run": run_key(dataset, model, method, seed),
        "common": params["train"]["common"],
        "recipe": setting(params, dataset, model),
        "params": params["methods"][method],
        "data": data,
        "code": code,
    })


def run_key(dataset: str, model: str, method: str, seed: int) -> dict:
    """The identity's `run` component: what the run is (its folder is named by the same four)."""
    return {"dataset": dataset, "model": model, "method": method, "seed": seed}


def why_different(recorded: dict | None, current: dict, dataset: str, method: str, limit: int = 3) -> str:
    """Why a recorded identity differs from the current one, in words naming the component (and the files)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("hashes"), dict):
        return "no identity recorded (trained before run identities)"
    old, new = recorded["hashes"], current["hashes"]
    reasons = []
    for name in COMPONENTS:
        if old.get(name) == new[name]:
            continue
        if name == "code":
            reasons.append(code_changes(recorded.get("components", {}).get("code"), current["components"]["code"], limit))
        elif name == "data":
            reasons.append("data changed" if current["components"]["data"] is not None
                           else f"data not prepared (run `eebench prepare --dataset {dataset}`)")
        else:
            key = {"run": "run", "common": "train.common", "recipe": f"train.{dataset}", "params": f"methods.{method}"}[name]
            reasons.append(f"params {key} changed" if name != "run" else "run changed")
    return "; ".join(reasons) or "identity format changed"


def code_changes(old: dict | None, new: dict, limit: int) -> str:
    old_files = (old or {}).get("files", {}) if isinstance(old, dict) else {}
    new_files = new["files"]
    changes = [f"{key} changed" for key in new_files if key in old_files and old_files[key] != new_files[key]]
    changes += [f"{key} added" for key in new_files if key not in old_files]
    changes += [f"{key} removed" for key in old_files if key not in new_files]
    if isinstance(old, dict) and old.get("distributions") != new.get("distributions"):
        changes.append(f"distributions {old.get('distributions')} -> {new.get('distributions')}")
    shown = changes[:limit] + ([f"+{len(changes) - limit} more"] if len(changes) > limit else [])
    return "code " + ", ".join(shown) if shown else "code changed"


__all__ = ["code_closure", "code_identity", "data_identity", "run_identity", "run_key", "why_different", "compose"]
