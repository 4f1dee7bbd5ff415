"""Loading and validating params.yaml before anything runs. Every problem is a one-line BenchError that
names the key path and the allowed values."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from bench.config_check import check_section, check_value
from bench.data import DATASETS
from bench.data.splits import SPLIT_KINDS
from bench.errors import BenchError, choices_error
from bench.evaluate.policies import POLICIES
from bench.models import MODELS
from bench.train.method import METHODS

SECTIONS = ("grid", "prepare", "train", "methods", "evaluate", "tune", "analyse")
GRID_DEFAULTS = {"methods": ["joint"], "datasets": ["tiny"], "seeds": [0], "extra_seed_methods": [], "extra_seeds": []}
COMMON_DEFAULTS = {"threads": 2, "device": "cpu", "channels_last": True, "grad_stats_every": 50,
                   "eval_batch_size": 1024, "max_grad_norm": 1.0e4}
DATASET_TRAIN_DEFAULTS = {"model": {}, "epochs": 1, "batch_size": 128, "lr": 0.002, "weight_decay": 0.0005,
                          "augment": True}
EVALUATE_DEFAULTS = {"policies": ["max_softmax"], "thresholds": [0.5]}
TUNE_DEFAULTS = {"policy": "method", "budgets": [0.5], "trials": 200, "seed": 0, "storage": "sqlite",
                 "pareto_budgets": 20, "reference_policies": ["max_softmax"], "risk_epsilons": [0.05], "risk_delta": 0.1, "risk_grid": 101,
                 "reach_tolerance": 0.02}
STORAGES = ("sqlite", "journal")
# analyse.figures: the methods each figure shows: "all", "claims" (the claims' methods + analyse.reference;
# every method when the study has no claims) or a list of method names
FIGURE_DEFAULTS = {"pareto": "all", "per_exit_accuracy": "all", "grad_norm": "claims", "exit_distribution": "claims",
                   "calibration": "claims"}
ANALYSE_DEFAULTS = {"reference": "branchynet", "alpha": 0.05, "claims": None, "figures": FIGURE_DEFAULTS}
DEVICES = ("cpu", "cuda", "auto")
# how `eebench run`/`train`/`study` execute runs (bench/execute/); not part of any run's identity
SLURM_DEFAULTS = {"partition": None, "time_min": 60, "cpus_per_task": None, "gpus_per_node": 0, "mem_gb": None,
                  "additional_parameters": {}, "array_parallelism": 64, "max_retries": 2}
EXECUTOR_DEFAULTS = {"name": "local", "workers": 2, "threads_per_worker": None, "slurm": SLURM_DEFAULTS}


def seeds_of(grid: dict, method: str) -> list[int]:
    """The seeds one method runs: grid.seeds, plus grid.extra_seeds when it is one of grid.extra_seed_methods."""
    return [*grid["seeds"], *(grid["extra_seeds"] if method in grid["extra_seed_methods"] else [])]


def require(ok: bool, where: str, allowed: str, value: object) -> None:
    if not ok:
        raise BenchError(f"{where} = {value!r} is out of range; allowed: {allowed}")


def model_defaults(name: str) -> dict:
    builder = MODELS.get(name, where="train.<dataset>.model.name")
    params = list(inspect.signature(builder).parameters.values())[2:]  # after in_channels, num_classes
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default for p in params}


def check_executor(given: object) -> dict:
    """train.executor completed by its defaults: a registered executor, workers >= 1, SLURM options typed."""
    from bench.execute import EXECUTORS

    executor = check_section(EXECUTOR_DEFAULTS, given, "train.executor")
    EXECUTORS.get(executor["name"], where="train.executor.name")
    require(executor["workers"] >= 1, "train.executor.workers", "an integer >= 1", executor["workers"])
    threads = executor["threads_per_worker"]
    require(threads is None or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1),
            "train.executor.threads_per_worker", "null (train.common.threads) or an integer >= 1", threads)
    slurm = executor["slurm"] = check_section(SLURM_DEFAULTS, executor["slurm"], "train.executor.slurm")
    for key in ("cpus_per_task", "mem_gb", "partition"):
        value = slurm[key]
        ok = value is None or (isinstance(value, str) and value != "" if key == "partition"
                               else isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)
        require(ok, f"train.executor.slurm.{key}", "null or " + ("a partition name" if key == "partition" else "a number > 0"), value)
    for key in ("time_min", "array_parallelism"):
        require(slurm[key] >= 1, f"train.executor.slurm.{key}", "an integer >= 1", slurm[key])
    for key in ("gpus_per_node", "max_retries"):
        require(slurm[key] >= 0, f"train.executor.slurm.{key}", "an integer >= 0", slurm[key])
    return executor


def check_analyse_outputs(analyse: dict, grid: dict) -> None:
    """analyse.claims (a claims file, or null) and analyse.figures (which methods each figure shows)."""
    from bench.analyse.claims import claim_methods, load_claims

    claims = analyse["claims"]
    require(claims is None or (isinstance(claims, str) and claims != ""), "analyse.claims",
            "null (no claims) or the path of a claims file, e.g. claims/cgt.yaml", claims)
    for name in claim_methods(load_claims(claims) if claims else None):
        METHODS.get(name, where=f"{claims} (analyse.claims)")
    figures = analyse["figures"] = {**FIGURE_DEFAULTS, **check_section({k: None for k in FIGURE_DEFAULTS},
                                                                       analyse["figures"], "analyse.figures")}
    for key, value in figures.items():
        if isinstance(value, list):
            for name in value:
                require(isinstance(name, str) and name in grid["methods"], f"analyse.figures.{key}",
                        '"all", "claims" or a list of methods of grid.methods', name)
        else:
            require(value in ("all", "claims"), f"analyse.figures.{key}", '"all", "claims" or a list of methods', value)


def check_analyse_outputs(analyse: dict, grid: dict) -> None:
    """analyse.claims (a claims file, or null) and analyse.figures (which methods each figure shows)."""
    from bench.analyse.claims import claim_methods, load_claims

    claims = analyse["claims"]
    require(claims is None or (isinstance(claims, str) and claims != ""), "analyse.claims",
            "null (no claims) or the path of a claims file, e.g. claims/cgt.yaml", claims)
    for name in claim_methods(load_claims(claims) if claims else None):
        METHODS.get(name, where=f"{claims} (analyse.claims)")
    figures = analyse["figures"] = {**FIGURE_DEFAULTS, **check_section({k: None for k in FIGURE_DEFAULTS},
                                                                       analyse["figures"], "analyse.figures")}
    for key, value in figures.items():
        if isinstance(value, list):
            for name in value:
                require(isinstance(name, str) and name in grid["methods"], f"analyse.figures.{key}",
                        '"all", "claims" or a list of methods of grid.methods', name)
        else:
            require(value in ("all", "claims"), f"analyse.figures.{key}", '"all", "claims" or a list of methods', value)


def validate(params: object) -> dict:
    """Check a parsed params.yaml; return it with every section completed by its defaults."""
    if not isinstance(params, dict):
        raise BenchError("params.yaml must be a mapping with sections: " + ", ".join(SECTIONS))
    for key in params:
        if key not in SECTIONS:
            raise choices_error("params.yaml section", key, list(SECTIONS))
    for key in SECTIONS:
        if key not in params:
            raise BenchError(f"params.yaml has no `{key}` section; required sections: {', '.join(SECTIONS)}")

    grid = check_section(GRID_DEFAULTS, params["grid"], "grid")
    for key, registry in (("methods", METHODS), ("datasets", DATASETS)):
        require(len(grid[key]) > 0, f"grid.{key}", "a non-empty list", grid[key])
        require(len(set(grid[key])) == len(grid[key]), f"grid.{key}", "no duplicates", grid[key])
        for name in grid[key]:
            registry.get(name, where=f"grid.{key}")
    require(len(grid["seeds"]) > 0 and len(set(grid["seeds"])) == len(grid["seeds"]), "grid.seeds",
            "a non-empty list of distinct integers", grid["seeds"])
    for name in grid["extra_seed_methods"]:
        require(isinstance(name, str) and name in grid["methods"], "grid.extra_seed_methods", "methods of grid.methods",
                name)
    require(all(isinstance(s, int) and not isinstance(s, bool) for s in grid["extra_seeds"])
            and not set(grid["extra_seeds"]) & set(grid["seeds"]) and len(set(grid["extra_seeds"])) == len(grid["extra_seeds"]),
            "grid.extra_seeds", "distinct integers not already in grid.seeds", grid["extra_seeds"])

    resolved = {"grid": grid, "prepare": {}, "train": {}, "methods": {}}
    for section in ("prepare", "train", "methods"):
        if not isinstance(params[section], dict):
            raise BenchError(f"{section} must be a mapping, got {params[section]!r}")

    for name, given in params["prepare"].items():
        spec = DATASETS.get(name, where="prepare")
        resolved["prepare"][name] = section = check_section(spec.prepare_defaults, given, f"prepare.{name}")
        for key in ("val_fraction", "train_fraction"):
            if key in section:
                require(0 < section[key] < 1, f"prepare.{name}.{key}", "0 < value < 1", section[key])
        if "split" in section:  # datasets with a spatial layout (indian_pines): random pixels or disjoint blocks
            require(section["split"] in SPLIT_KINDS, f"prepare.{name}.split", " | ".join(SPLIT_KINDS), section["split"])
            radius = section["patch_size"] // 2
            require(isinstance(section["block_size"], int) and not isinstance(section["block_size"], bool)
                    and section["block_size"] > 2 * radius, f"prepare.{name}.block_size",
                    f"an integer > 2 * (patch_size // 2) = {2 * radius}", section["block_size"])

    train = params["train"]
    resolved["train"]["common"] = common = check_section(COMMON_DEFAULTS, train.get("common"), "train.common")
    require(common["device"] in DEVICES, "train.common.device", " | ".join(DEVICES), common["device"])
    require(common["threads"] >= 1, "train.common.threads", "an integer >= 1", common["threads"])
    require(common["max_grad_norm"] > 0, "train.common.max_grad_norm", "a number > 0", common["max_grad_norm"])
    require(common["grad_stats_every"] >= 1, "train.common.grad_stats_every", "an integer >= 1", common["grad_stats_every"])
    resolved["train"]["executor"] = check_executor(train.get("executor"))
    for name, given in train.items():
        if name in ("common", "executor"):
            continue
        DATASETS.get(name, where="train")
        section = check_section(DATASET_TRAIN_DEFAULTS, given, f"train.{name}")
        model = section["model"]
        if "name" not in model:
            raise BenchError(f"train.{name}.model.name is missing; valid choices: {', '.join(MODELS.names())}")
        model_params = check_section(model_defaults(model["name"]), {k: v for k, v in model.items() if k != "name"},
                                     f"train.{name}.model")
        section["model"] = {"name": model["name"], **model_params}
        for key in ("epochs", "batch_size"):
            require(section[key] >= 1, f"train.{name}.{key}", "an integer >= 1", section[key])
        require(section["lr"] > 0, f"train.{name}.lr", "a number > 0", section["lr"])
        require(section["weight_decay"] >= 0, f"train.{name}.weight_decay", "a number >= 0", section["weight_decay"])
        resolved["train"][name] = section

    for name, given in params["methods"].items():
        cls = METHODS.get(name, where="methods")
        resolved["methods"][name] = check_section(cls.defaults, given, f"methods.{name}")

    evaluate = check_section(EVALUATE_DEFAULTS, params["evaluate"], "evaluate")
    for policy in evaluate["policies"]:
        POLICIES.get(policy, where="evaluate.policies")
    require(len(evaluate["thresholds"]) > 0 and all(0 <= t <= 1 for t in evaluate["thresholds"]),
            "evaluate.thresholds", "a non-empty list of numbers in [0, 1]", evaluate["thresholds"])
    resolved["evaluate"] = evaluate

    tune = check_section(TUNE_DEFAULTS, params["tune"], "tune")
    if tune["policy"] != "method":
        POLICIES.get(tune["policy"], where="tune.policy (or 'method': each method's own policy)")
    for name in tune["reference_policies"]:
        require(not POLICIES.get(name, where="tune.reference_policies").needs, "tune.reference_policies",
                "policies that read only the logits (every method has those)", name)
    require(len(tune["budgets"]) > 0 and all(0 < b <= 1 for b in tune["budgets"]), "tune.budgets",
            "a non-empty list of fractions in (0, 1]", tune["budgets"])
    require(all(0 < e < 1 for e in tune["risk_epsilons"]), "tune.risk_epsilons", "numbers in (0, 1)", tune["risk_epsilons"])
    require(tune["storage"] in STORAGES, "tune.storage", " | ".join(STORAGES), tune["storage"])
    require(0 < tune["risk_delta"] < 1, "tune.risk_delta", "0 < value < 1", tune["risk_delta"])
    require(isinstance(tune["reach_tolerance"], (int, float)) and 0 <= tune["reach_tolerance"] < 1,
            "tune.reach_tolerance", "a number in [0, 1): a budget is reached within this cost fraction",
            tune["reach_tolerance"])
    for key in ("trials", "pareto_budgets", "risk_grid"):
        require(tune[key] >= 1, f"tune.{key}", "an integer >= 1", tune[key])
    resolved["tune"] = tune

    analyse = check_section(ANALYSE_DEFAULTS, params["analyse"], "analyse")
    if "reference" not in (params["analyse"] or {}):  # not given: the study's first method
        analyse["reference"] = grid["methods"][0]
    METHODS.get(analyse["reference"], where="analyse.reference")
    if analyse["reference"] not in grid["methods"]:
        raise BenchError(f"analyse.reference = {analyse['reference']!r} is not in grid.methods; set it to one of "
                         f"{', '.join(grid['methods'])} (every method is compared with it), e.g. `analyse: {{reference: "
                         f"{grid['methods'][0]}}}` in your profile (left out of params.yaml, it is the first method)")
    require(0 < analyse["alpha"] < 1, "analyse.alpha", "0 < value < 1", analyse["alpha"])
    check_analyse_outputs(analyse, grid)
    resolved["analyse"] = analyse

    # every grid entry needs its own section: DVC tracks them per stage (prepare.<d>, train.<d>, methods.<m>)
    for name in grid["datasets"]:
        for section in ("prepare", "train"):
            if name not in resolved[section]:
                raise BenchError(f"{section}.{name} is missing from params.yaml; add a `{name}:` section under `{section}`")
    for name in grid["methods"]:  # a method without a section runs with its defaults (`eebench study` writes `{}`
        if name not in resolved["methods"]:  # for DVC, which tracks methods.<name> per stage)
            resolved["methods"][name] = check_section(METHODS.get(name).defaults, None, f"methods.{name}")
    return resolved


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path} not found; run from the project root (or a study folder) that holds params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BenchError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return validate(raw)


__all__ = ["load_params", "validate", "check_value"]
