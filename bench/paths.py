"""Where each stage reads and writes (relative to the study folder; dvc.yaml uses the same layout: one stage
per dataset × method, whose folders hold one subfolder per model of the dataset, then one per seed)."""

from pathlib import Path

DATASETS = Path("datasets")
RESULTS = Path("results")
FIGURES = Path("figures")


def run_dir(dataset: str, model: str, method: str, seed: int) -> Path:
    return RESULTS / "runs" / dataset / method / model / f"seed{seed}"


def eval_path(dataset: str, model: str, method: str, seed: int) -> Path:
    return RESULTS / "eval" / dataset / method / model / f"seed{seed}.json"


def tune_dir(dataset: str, model: str, method: str, seed: int) -> Path:
    return RESULTS / "tune" / dataset / method / model / f"seed{seed}"


def study_dir(dataset: str, model: str, method: str, seed: int) -> Path:
    return RESULTS / "studies" / dataset / method / model / f"seed{seed}"
