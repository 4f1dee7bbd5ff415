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
from bench.models import MODELS, check_input_shape
from bench.train.method import METHODS
from bench.train import recipe  # the optimiser and schedule plugins of train.<dataset>

SECTIONS = ("grid", "prepare", "train", "methods", "evaluate", "tune", "analyse")
GRID_DEFAULTS = {"methods": ["joint"], "datasets": ["tiny"], "seeds": [0], "extra_seed_methods": [], "extra_seeds": [],
                 "models": {}}  # models: {dataset: [model, ...]}; a dataset not listed uses train.<dataset>.model
COMMON_DEFAULTS = {"threads": 2, "device": "cpu", "channels_last": True, "grad_stats_every": 50,
                   "eval_batch_size": 1024, "max_grad_norm": 1.0e4, "determinism": "strict", "precision": "fp32"}
DATASET_TRAIN_DEFAULTS = {"model": {}, "epochs": 1, "batch_size": 128, "lr": 0.002, "weight_decay": 0.0005,
                          "augment": True, "optimizer": {}, "schedule": {}}  # optimizer/schedule: bench/train/recipe.py
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
DETERMINISM = ("strict", "warn", "off")  # bench/train/engine.py set_determinism
PRECISIONS = ("fp32", "bf16")
# how `eebench run`/`train`/`study` execute runs (bench/execute/); not part of any run's identity
SLURM_DEFAULTS = {"partition": None, "time_min": 60, "cpus_per_task": None, "gpus_per_node": 0, "mem_gb": None,
                  "additional_parameters": {}, "array_parallelism": 64, "max_retries": 2}
EXECUTOR_DEFAULTS = {"name": "local", "workers": 2, "threads_per_worker": None, "slurm": SLURM_DEFAULTS}


SEED_LIMIT = 2**32  # numpy's and torch's seeding both take 0 <= seed < 2**32 without wrapping or failing
SUBSET_SPLITS = ("train", "val", "test")
PREPARE_RULES = {  # prepare.<dataset>.<key>: a range check shared by the datasets that have the key
    "split_seed": (lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**32)"),
    "n_train": (lambda v: v >= 1, "an integer >= 1"),
    "n_val": (lambda v: v >= 1, "an integer >= 1"),
    "n_test": (lambda v: v >= 1, "an integer >= 1"),
    "noise": (lambda v: 0 <= v < float("inf"), "a finite number >= 0"),
    "patch_size": (lambda v: v >= 1 and v % 2 == 1, "an odd integer >= 1"),
    "synthetic_test": (lambda v: v >= 1, "an integer >= 1"),
    "synthetic_seed": (lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**32)"),
}


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seeds(seeds: list, where: str) -> None:
    for i, seed in enumerate(seeds):
        require(is_int(seed) and 0 <= seed < SEED_LIMIT, f"{where}[{i}]", "an integer in [0, 2**32)", seed)


def check_subset(subset: object, where: str) -> None:
    """prepare.<dataset>.subset: null, or a mapping of some of train/val/test to a sample count >= 1."""
    allowed = "null or a mapping like {train: N, val: N, test: N} with integers N >= 1"
    if subset is None:
        return
    if not isinstance(subset, dict):
        raise BenchError(f"{where} must be {allowed}, got {subset!r}")
    for split, size in subset.items():
        if split not in SUBSET_SPLITS:
            raise choices_error("split", split, list(SUBSET_SPLITS), where)
        require(is_int(size) and size >= 1, f"{where}.{split}", "an integer >= 1", size)


def check_model(dataset: str, model: dict, sample_shape: tuple | None = None) -> int:
    """Check the model is registered for the dataset's sample shape (when given), then build it once (1 input
    channel, 2 classes) so that widths [], [0, …] and the like fail here, not in training; returns its number
    of exits."""
    where = f"train.{dataset}.model"
    if sample_shape is not None:
        check_input_shape(model["name"], sample_shape, f"{where}.name")
    for key, value in model.items():
        if key == "name":
            continue
        values = value if isinstance(value, list) else [value]
        require(all(not is_int(v) or v >= 1 for v in values) and (not isinstance(value, list) or len(value) > 0),
                f"{where}.{key}", "integers >= 1 (a non-empty list where a list is expected)", value)
    try:
        import torch

        with torch.device("meta"):  # shapes only: no memory, no weight initialisation
            net = MODELS.get(model["name"])(1, 2, **{k: v for k, v in model.items() if k != "name"})
    except BenchError:
        raise
    except Exception as exc:  # a model builder's own complaint, whatever its type
        message = str(exc).splitlines()[0] if str(exc) else "no message"
        raise BenchError(f"{where} = {model!r} cannot be built ({exc.__class__.__name__}: {message}); "
                         "change its parameters") from None
    return net.num_exits


def check_method_params(resolved: dict, num_exits: dict[str, int]) -> None:
    """Construct every grid method with its params for every grid dataset's model (its exits and classes):
    each method's __init__ checks its own ranges and raises a BenchError naming methods.<name>.<key>."""
    for dataset in resolved["grid"]["datasets"]:
        for name in resolved["grid"]["methods"]:
            METHODS.get(name)(resolved["methods"][name], num_exits[dataset], DATASETS.get(dataset).num_classes)


def seeds_of(grid: dict, method: str) -> list[int]:
    """The seeds one method runs: grid.seeds, plus grid.extra_seeds when it is one of grid.extra_seed_methods."""
    return [*grid["seeds"], *(grid["extra_seeds"] if method in grid["extra_seed_methods"] else [])]


def check_grid_models(models: dict) -> None:
    """grid.models: {dataset: [model, ...]}, each a registered dataset with a non-empty list of distinct
    registered models (entries for datasets outside grid.datasets are allowed and unused, as train sections are)."""
    for dataset, names in models.items():
        DATASETS.get(dataset, where="grid.models")
        require(isinstance(names, list) and len(names) > 0 and all(isinstance(n, str) for n in names),
                f"grid.models.{dataset}", "a non-empty list of model names, e.g. [tiny_cnn, tiny_mlp]", names)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise BenchError(f"grid.models.{dataset} lists {', '.join(twice)} twice; list each model once")
        for name in names:
            MODELS.get(name, where=f"grid.models.{dataset}")


def split_model_overrides(train: dict) -> tuple[dict, dict]:
    """train.<dataset>.models (per-model overrides) taken out of the train section: (the section without them,
    {dataset: overrides}); the rest of the section is validated as before, the overrides by check_settings."""
    if not isinstance(train, dict):
        return train, {}
    overrides = {name: given["models"] for name, given in train.items() if isinstance(given, dict) and "models" in given}
    return {name: ({k: v for k, v in given.items() if k != "models"} if name in overrides else given)
            for name, given in train.items()}, overrides


def models_of(params: dict, dataset: str) -> list[str]:
    """The models a dataset is studied with: grid.models.<dataset>, else its train.<dataset>.model alone."""
    listed = params.get("grid", {}).get("models", {}).get(dataset)
    return list(listed) if listed else [params["train"][dataset]["model"]["name"]]


def setting(params: dict, dataset: str, model: str | None = None) -> dict:
    """The training setting of (dataset, model) of validated params, shaped like a train.<dataset> section with
    `model: {name, ...}`: train.<dataset> itself (without `models`) for its own model, else the validated merge
    of train.<dataset>.models.<model> over it (`merge_setting`). Every caller (training, the plan, run
    identities, cost tables, the report) resolves settings here; model None: the dataset's first model."""
    section = params["train"][dataset]
    model = model or models_of(params, dataset)[0]
    resolved = (section.get("models") or {}).get(model)
    if resolved is not None:  # completed by check_settings
        return dict(resolved)
    if section["model"]["name"] != model:
        raise BenchError(f"{model} is not a model of train.{dataset} (its models: "
                         f"{', '.join(models_of(params, dataset))}); add it to grid.models.{dataset}")
    return {key: value for key, value in section.items() if key != "models"}


def merge_setting(base: dict, model: str, override: dict) -> dict:
    """train.<dataset> (`base`, without `models`) with a per-model override merged over it: the override's keys
    replace the base's, and the model section is {name: model, ...} with base.model's arguments when it names
    this model (else none: the constructor's defaults apply) and the override's `model` arguments on top."""
    arguments = {k: v for k, v in base["model"].items() if k != "name"} if base["model"].get("name") == model else {}
    return {**base, **{k: v for k, v in override.items() if k != "model"},
            "model": {"name": model, **arguments, **(override.get("model") or {})}}


def check_settings(params: dict, resolved: dict, overrides: dict) -> None:
    """Validate train.<dataset>.models (only models of grid.models.<dataset>, each a mapping of train.<dataset>
    keys) and every (dataset, model) setting other than a dataset's own section with the very checks of a
    train.<dataset> section (`validate` on that setting alone), errors naming train.<dataset>.models.<model>.
    The validated settings are kept, complete, under resolved train.<dataset>.models.<model> (for `setting`)."""
    for dataset, given in overrides.items():
        if dataset not in resolved["train"]:
            continue  # not a dataset section: validation of train has already said so
        where = f"train.{dataset}.models"
        if not isinstance(given, dict):
            raise BenchError(f"{where} must be a mapping {{model: {{key: value}}}}, got {given!r}")
        allowed = models_of(resolved, dataset)
        for model, override in given.items():
            if model not in allowed:
                raise BenchError(f"{where}.{model} overrides a model that is not studied on {dataset} (its models: "
                                 f"{', '.join(allowed)}); add it to grid.models.{dataset} or remove the override")
            if override is not None and not isinstance(override, dict):
                raise BenchError(f"{where}.{model} must be a mapping of train.{dataset} keys, got {override!r}")
    datasets = dict.fromkeys([*resolved["grid"]["datasets"], *overrides, *resolved["grid"]["models"]])
    for dataset in [d for d in datasets if d in resolved["train"]]:
        base = {k: v for k, v in resolved["train"][dataset].items() if k != "models"}
        settings = {}
        for model in models_of(resolved, dataset):
            override = (overrides.get(dataset) or {}).get(model)
            if override is None and model == base["model"]["name"]:
                continue  # the dataset's own section, validated as it is
            raw = merge_setting(base, model, override or {})
            single = {**params, "grid": {**params["grid"], "datasets": [dataset], "models": {}},
                      "train": {**split_model_overrides(params["train"])[0], dataset: raw}}
            try:
                settings[model] = validate(single)["train"][dataset]
            except BenchError as exc:
                message = str(exc)
                if f"train.{dataset}." not in message:  # a method's own check: say which setting it failed on
                    message += f" (with model {model} on {dataset}, train.{dataset}.models.{model})"
                raise BenchError(message.replace(f"train.{dataset}.", f"train.{dataset}.models.{model}.")) from None
        if settings:
            resolved["train"][dataset]["models"] = settings


def runs_of(params: dict):
    """Every (dataset, model, method, seed) of validated params' grid."""
    for dataset in params["grid"]["datasets"]:
        for model in models_of(params, dataset):
            for method in params["grid"]["methods"]:
                for seed in seeds_of(params["grid"], method):
                    yield dataset, model, method, seed


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
    check_seeds(grid["seeds"], "grid.seeds")
    check_seeds(grid["extra_seeds"], "grid.extra_seeds")
    check_grid_models(grid["models"])

    resolved = {"grid": grid, "prepare": {}, "train": {}, "methods": {}}
    num_exits: dict[str, int] = {}  # of each dataset's model, for constructing the methods
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
        if "val_fraction" in section and "train_fraction" in section:
            require(section["train_fraction"] + section["val_fraction"] < 1, f"prepare.{name}.train_fraction",
                    "train_fraction + val_fraction < 1 (the rest is the test split)", section["train_fraction"])
        for key, (ok, allowed) in PREPARE_RULES.items():
            if key in section:
                require(ok(section[key]), f"prepare.{name}.{key}", allowed, section[key])
        if "val_size" in section:  # CIFAR: a count of training images held out, every class keeping one for training
            from bench.data.cifar import VARIANTS

            pool = section["synthetic_train"] if section["source"] == "synthetic" else VARIANTS[name].train_size
            require(pool > spec.num_classes, f"prepare.{name}.synthetic_train",
                    f"an integer > {spec.num_classes} (the number of classes)", pool)
            top = pool - spec.num_classes
            require(1 <= section["val_size"] <= top, f"prepare.{name}.val_size",
                    f"an integer in [1, {top}] (the {pool} training images less one per class)", section["val_size"])
        check_subset(section.get("subset"), f"prepare.{name}.subset")

    train, model_overrides = split_model_overrides(params["train"])
    resolved["train"]["common"] = common = check_section(COMMON_DEFAULTS, train.get("common"), "train.common")
    require(common["device"] in DEVICES, "train.common.device", " | ".join(DEVICES), common["device"])
    require(common["determinism"] in DETERMINISM, "train.common.determinism", " | ".join(DETERMINISM),
            common["determinism"])
    require(common["precision"] in PRECISIONS, "train.common.precision", " | ".join(PRECISIONS), common["precision"])
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
        spec = DATASETS.get(name)
        num_exits[name] = check_model(name, section["model"],
                                      spec.input_shape(resolved["prepare"].get(name) or spec.prepare_defaults))
        for key in ("epochs", "batch_size"):
            require(section[key] >= 1, f"train.{name}.{key}", "an integer >= 1", section[key])
        require(section["lr"] > 0, f"train.{name}.lr", "a number > 0", section["lr"])
        require(section["weight_decay"] >= 0, f"train.{name}.weight_decay", "a number >= 0", section["weight_decay"])
        section["optimizer"], section["schedule"] = recipe.resolve(section, f"train.{name}")
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
    require(len(tune["budgets"]) > 0 and all(0 < b <= 1 for b in tune["budgets"])
            and len(set(tune["budgets"])) == len(tune["budgets"]), "tune.budgets",
            "a non-empty list of distinct fractions in (0, 1]", tune["budgets"])
    require(is_int(tune["seed"]) and 0 <= tune["seed"] < SEED_LIMIT, "tune.seed", "an integer in [0, 2**32)", tune["seed"])
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
    check_settings(params, resolved, model_overrides)
    check_method_params(resolved, num_exits)
    return resolved


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file (params.yaml, a profile); malformed YAML is one line naming the file and position."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise BenchError(f"{path} is not valid YAML{where}: {problem}; fix the YAML syntax there") from None
    except UnicodeDecodeError:
        raise BenchError(f"{path} is not UTF-8 text; save it as UTF-8 YAML") from None


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path} not found; run from the project root (or a study folder) that holds params.yaml")
    return validate(read_yaml(path))


__all__ = ["load_params", "validate", "check_value"]
