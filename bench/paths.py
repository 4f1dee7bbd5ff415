"""Where each stage reads and writes (relative to the study folder; dvc.yaml uses the same layout)."""

from pathlib import Path

DATASETS = Path("datasets")
RESULTS = Path("results")
FIGURES = Path("figures")


def run_dir(dataset: str, method: str, seed: int) -> Path:
    return RESULTS / "runs" / dataset / method / f"seed{seed}"


def eval_path(dataset: str, method: str, seed: int) -> Path:
    return RESULTS / "eval" / dataset / method / f"seed{seed}.json"


def tune_dir(dataset: str, method: str, seed: int) -> Path:
    return RESULTS / "tune" / dataset / method / f"seed{seed}"


def study_dir(dataset: str, method: str, seed: int) -> Path:
    return RESULTS / "studies" / dataset / method / f"seed{seed}"
