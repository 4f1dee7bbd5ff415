"""One line per parameter: what every key of params.yaml means, and what every method parameter means.

Read by `eebench list` and by the docs site (bench/docsgen.py); tests/test_docs.py checks that every
key a study can set has its line here, so a new parameter without a meaning fails the tests. A method
may instead carry its own lines as a class attribute `param_docs = {"name": "meaning"}` (a plugin outside
this repository does that); those take precedence over the table below. Lines say what the value does,
not where it came from: the source of each default is in the method's `choices`."""

from __future__ import annotations

# params.yaml, section by section ("train.<dataset>" and "prepare.<dataset>" hold for every dataset).
SECTIONS: dict[str, dict[str, str]] = {
    "grid": {
        "methods": "training methods of the study (each needs no `methods.<name>` section unless it changes a default)",
        "datasets": "datasets of the study (each needs a `prepare.<name>` and a `train.<name>` section)",
        "seeds": "seeds every method runs with (one run per dataset × method × seed)",
        "extra_seed_methods": "methods that also run `extra_seeds` (e.g. the ones a claims table compares)",
        "extra_seeds": "additional seeds for `extra_seed_methods` (distinct from `seeds`)",
        "models": "{dataset: [model, ...]}: the models each dataset is studied with (one run per dataset × model × "
                  "method × seed); a dataset not listed uses its `train.<dataset>.model` alone",
    },
    "prepare.<dataset>": {
        "val_fraction": "share of the training data (per class) held out as the validation split that tunes thresholds",
        "train_fraction": "share of each class's labelled pixels used for training (Indian Pines); the rest after validation is test",
        "split_seed": "seed of the stratified split (changing it changes which samples are train / validation / test)",
        "subset": "null, or {train: N, val: N, test: N}: a stratified subsample of each split (small profiles)",
        "source": "where the data comes from: `tensorly` (shipped arrays), `download`, or a folder holding the GIC .mat files; "
                  "CIFAR: `download`, a path to the canonical tarball or its extracted folder, or `synthetic` (a generated stand-in)",
        "val_size": "training images held out, stratified per class, as the validation split (CIFAR; test = the official 10 000)",
        "synthetic_train": "training images of the generated stand-in when `source: synthetic` (CIFAR), spread over its data files",
        "synthetic_test": "test images of the generated stand-in when `source: synthetic` (CIFAR)",
        "synthetic_seed": "seed of the generated stand-in's class layouts and images when `source: synthetic` (CIFAR)",
        "patch_size": "side of the square patch around each labelled pixel (Indian Pines), in pixels",
        "split": "how labelled pixels are split (Indian Pines): `random` per class, or `blocks` of the scene (spatially disjoint)",
        "block_size": "side of the square scene blocks assigned whole to one split when `split: blocks`, in pixels",
        "n_train": "number of generated training samples (tiny)",
        "n_val": "number of generated validation samples (tiny)",
        "n_test": "number of generated test samples (tiny)",
        "noise": "standard deviation of the Gaussian noise added to the class templates (tiny)",
    },
    "train.common": {
        "threads": "torch threads per training process (results are bit-identical only at equal thread counts)",
        "device": "cpu | cuda | auto (auto = cuda when available); the prepared data is held on it (docs/gpu.md)",
        "determinism": "strict (every kernel deterministic, else an error) | warn (record ops without one) | off",
        "precision": "fp32 | bf16 (bf16 autocast of forward and loss; recorded with the run)",
        "channels_last": "channels-last memory format for convolutions (1.3-1.6x faster on CPU, same results per setting)",
        "grad_stats_every": "optimiser steps between two per-exit gradient measurements (grad_stats.csv)",
        "eval_batch_size": "batch size of the final predictions on validation and test (no effect on results)",
        "max_grad_norm": "a total gradient norm above this stops the run as diverged (failure record, no clipping)",
    },
    "train.executor": {
        "name": "how runs are executed: `local` (in-process), `processes` (local workers) or `slurm` (submitit)",
        "workers": "worker processes of the `processes` executor",
        "threads_per_worker": "torch threads per worker (null = train.common.threads)",
        "slurm": "the `slurm` executor's job options (section below)",
    },
    "train.executor.slurm": {
        "partition": "SLURM partition (null = the cluster's default)",
        "time_min": "time limit of each job, in minutes",
        "cpus_per_task": "CPUs per job (null = the run's torch threads)",
        "gpus_per_node": "GPUs per job",
        "mem_gb": "memory per job in GB (null = the cluster's default)",
        "additional_parameters": "extra sbatch options, as a mapping (e.g. {account: my_account})",
        "array_parallelism": "most jobs of the array running at once",
        "max_retries": "times a job that died (scancel, node failure, time limit) is resubmitted; it resumes from its checkpoint",
    },
    "train.<dataset>": {
        "model": "the backbone: `name` (a registered model) and its constructor arguments (see the model's table)",
        "models": "{model: {key: value}}: per-model settings of the models in `grid.models.<dataset>`, merged over this "
                  "section (`model: {...}` gives that model's constructor arguments; other keys override the recipe)",
        "epochs": "training epochs of every run on this dataset (methods with phases split them)",
        "batch_size": "training batch size",
        "lr": "peak learning rate of the optimiser, scaled by the schedule over each training phase",
        "weight_decay": "weight decay (AdamW: decoupled; SGD: L2 added to the gradient)",
        "optimizer": "the optimiser: `name` (adamw | sgd) and its own settings (section below)",
        "schedule": "the learning-rate schedule of each phase: `name` (cosine | multistep | constant), warm-up (below)",
        "augment": "the dataset's batch augmentation on (Fashion-MNIST: translate + flip; Indian Pines: dihedral; CIFAR: crop + flip)",
    },
    "train.<dataset>.optimizer": {
        "name": "adamw (torch.optim.AdamW) | sgd (torch.optim.SGD)",
        "betas": "(adamw) the moment decay rates β1, β2",
        "eps": "(adamw) the denominator term ε",
        "momentum": "(sgd) momentum",
        "nesterov": "(sgd) Nesterov momentum (needs momentum > 0)",
    },
    "train.<dataset>.schedule": {
        "name": "cosine (to 0 over the phase) | multistep (× gamma at each milestone) | constant",
        "warmup_epochs": "epochs of linear warm-up starting each phase (lr × (t+1)/W at step t < W), then the schedule",
        "milestones": "(multistep) epochs, counted from the start of each phase, at which the lr is multiplied by gamma",
        "gamma": "(multistep) the factor applied at each milestone",
    },
    "train.<dataset>.model": {
        "name": "registered model (eebench list)",
        "widths": "channels of each block; one exit after each block, so the number of widths is the number of exits",
        "head_width": "channels of each early exit head's conv before pooling",
        "convs_per_block": "3×3 convolutions per block",
        "spectral_stem": "channels of the 1×1 spectral convolution that first reduces the bands (Indian Pines)",
    },
    "evaluate": {
        "policies": "exit policies swept over `thresholds` for every run (each method's own policy is always added)",
        "thresholds": "global thresholds of the fixed sweep (threshold_curves.csv), in the policy's score range",
    },
    "tune": {
        "policy": "`method` (each method's own exit policy) or one policy name used for every run",
        "budgets": "compute budgets: expected FLOPs as a fraction of the deepest exit's cumulative FLOPs",
        "trials": "Optuna trials per (run, budget), scored on validation only",
        "seed": "Optuna sampler seed (plus the run's seed)",
        "storage": "how Optuna studies are saved: journal (optuna.journal) or sqlite (optuna.db)",
        "pareto_budgets": "number of budgets of the dense sweep (Pareto sets, matched-accuracy costs)",
        "reference_policies": "policies also swept densely on every run, to compare policies on one network",
        "risk_epsilons": "risk-control levels ε of the prediction gap vs the deepest exit",
        "risk_delta": "UCB calibrator's confidence: P(risk > ε) ≤ δ",
        "risk_grid": "number of thresholds the risk calibrators scan",
        "reach_tolerance": "a budget counts as reached when a policy's cost comes within this fraction below it; else it is marked unreachable",
    },
    "analyse": {
        "reference": "method every other method is compared with, per dataset (default: the study's first method)",
        "alpha": "significance level after the Holm correction (per dataset family)",
        "claims": "the claims file this study tests (e.g. claims/cgt.yaml), or null for a study without claims",
        "figures": "which methods each figure shows (section below)",
    },
    "analyse.figures": {
        "pareto": "methods of the accuracy-vs-FLOPs figure: all | claims (the claims' methods + reference) | a list",
        "per_exit_accuracy": "methods of the per-exit accuracy figure: all | claims | a list",
        "grad_norm": "methods of the per-exit gradient figure (sample starvation): all | claims | a list",
        "exit_distribution": "methods of the exit-distribution figure: all | claims | a list",
        "calibration": "methods of the per-exit reliability figure: all | claims | a list",
    },
}

_LS = "label smoothing of the method's cross-entropy terms (0 = none)"
_LAMBDA_START = "per-exit loss weights at the first epoch, shallow → deep ([] = the authors' 4-exit schedule mapped onto our exits)"
_LAMBDA_END = "per-exit loss weights at the last epoch (linear anneal from lambda_start; [] = the authors' schedule)"
_LEAK = "weight every exit keeps even when the gate closes (before per-sample normalisation)"
_NORMALIZE = "normalise each sample's exit weights to sum to 1"
_BACKBONE = "share of the epochs for the first phase (backbone and deepest exit only)"

# Per method: every key of its `defaults`.
METHOD_PARAMS: dict[str, dict[str, str]] = {
    "joint": {"label_smoothing": _LS},
    "branchynet": {
        "weights": "per-exit loss weights, shallow → deep (one value = the same weight for every exit)",
        "label_smoothing": _LS,
        "pretrain_fraction": "share of the epochs that train the backbone and last exit alone before joint training (0 = joint from the start)",
    },
    "sdn": {
        "max_weights": "each early exit's final loss weight C_i of SDN's schedule min(C_i, 0.01 + t·C_i/T) ([] = its FLOP fraction)",
        "label_smoothing": _LS,
    },
    "pabee_weighted": {"label_smoothing": _LS},
    "self_distill": {
        "aux_weight": "weight of the distillation term (early exits towards the detached deepest exit)",
        "temperature": "temperature dividing the deepest exit's logits before its softmax becomes the soft target",
        "label_smoothing": _LS + ", on the label term only",
    },
    "cascade_aware": {
        "downweight": "weight of a sample the early exit misses but the deepest exit gets right",
        "neither_weight": "weight of a sample both the early and the deepest exit miss",
        "label_smoothing": _LS,
    },
    "disjoint": {"backbone_fraction": _BACKBONE + "; then the early heads train on the frozen backbone"},
    "mixed": {"backbone_fraction": _BACKBONE + "; then the whole network trains jointly"},
    "cascade_opt": {"tau": "training-time confidence: exit k trains on the samples no earlier exit takes at max-softmax ≥ tau"},
    "classynet": {
        "class_acc_threshold": "a class joins an exit's priority set when that exit's validation accuracy on it reaches this",
    },
    "hard_cgt": {
        "tau_train": "gate: an exit 'succeeds' on a sample when it is correct with max-softmax ≥ tau_train",
        "lambda_start": _LAMBDA_START,
        "lambda_end": _LAMBDA_END,
        "eps_leak": _LEAK,
        "normalize_weights": _NORMALIZE,
        "label_smoothing": _LS,
    },
    "soft_cgt": {
        "tau_train": "centre of the residual gate 1 − sigmoid((p_true − tau_train) · sigmoid_scale)",
        "sigmoid_scale": "steepness of the residual gate (1 = the authors' mild gate; larger = closer to HardCGT)",
        "lambda_start": _LAMBDA_START,
        "lambda_end": _LAMBDA_END,
        "eps_leak": _LEAK,
        "normalize_weights": _NORMALIZE,
        "label_smoothing": _LS,
    },
    "ztw": {"phase_fractions": "shares of the epochs for the backbone, cascade and ensemble phases"},
    "l2w_den": {
        "epsilon": "strength of the meta-learned sample weights: w = 1 + epsilon · (m − mean m)",
        "target_p": "target exit proportions q_k ∝ target_p^k that define the meta-loss",
        "meta_interval": "optimiser steps between two meta steps of the weight network",
        "meta_lr": "Adam learning rate of the weight network",
        "meta_weight_decay": "Adam (L2) weight decay of the weight network",
        "hidden_size": "hidden units of the weight network's single hidden layer",
    },
    "jei_dnn": {
        "warmup_fraction": "share of the epochs that warm the heads up before gates and heads alternate",
        "bilevel_batch_count": "optimiser steps between switching the bi-level phase (gates ↔ classifiers)",
        "cost_weight": "λ of the gate targets' loss CE + λ · cost: larger values favour earlier exits",
    },
}


def method_param_docs(cls) -> dict[str, str]:
    """One line per parameter of a Method subclass: its own `param_docs` first, then the table above."""
    return {**METHOD_PARAMS.get(cls.name, {}), **getattr(cls, "param_docs", {})}


def missing_method_docs(cls) -> list[str]:
    docs = method_param_docs(cls)
    return [f"methods.{cls.name}.{key}" for key in cls.defaults if not docs.get(key)]


def section_name(path: list[str], datasets: set[str]) -> str:
    """The SECTIONS key of a params path: dataset names become `<dataset>`."""
    return ".".join("<dataset>" if i > 0 and part in datasets and path[0] in ("prepare", "train") else part
                    for i, part in enumerate(path))


def param_rows(resolved: dict) -> dict[str, list[tuple[str, object]]]:
    """Every (key, value) of a validated params dict, grouped by section path (`train.fashion_mnist`),
    methods excluded (they have their own tables). A mapping is a subsection when SECTIONS names its
    generic path (`train.<dataset>.model`) or it is a dataset's section, otherwise a value."""
    datasets = _datasets()
    rows: dict[str, list[tuple[str, object]]] = {}

    def walk(path: list[str], node: dict) -> None:
        for key, value in node.items():
            child = [*path, key]
            if isinstance(value, dict) and (section_name(child, datasets) in SECTIONS or
                                            (path in (["prepare"], ["train"]) and key in datasets)):
                walk(child, value)
            else:
                rows.setdefault(".".join(path), []).append((key, value))

    for section, node in resolved.items():
        if section != "methods" and isinstance(node, dict):
            walk([section], node)
    return rows


def _datasets() -> set[str]:
    from bench.data import DATASETS

    return set(DATASETS.names())


def param_doc(resolved: dict, section: str, key: str) -> str:
    datasets = _datasets()
    return SECTIONS.get(section_name(section.split("."), datasets), {}).get(key, "")


def missing_section_docs(resolved: dict) -> list[str]:
    return [f"{section}.{key}" for section, rows in param_rows(resolved).items() for key, _ in rows
            if not param_doc(resolved, section, key)]
