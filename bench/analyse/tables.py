"""The aggregated tables as the analysis reads them: every table with `dataset` has a `model` column beside it.
Tables written before models were a grid axis have none: the model is then taken from params (the dataset's
single model), so figures, the report and the README's generated blocks still work on them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SETTING = ["dataset", "model"]  # what a comparison is made within: a dataset studied with one model


def model_after_dataset(frame: pd.DataFrame) -> pd.DataFrame:
    """The same table with `model` (if any) moved right after `dataset`."""
    if "model" not in frame.columns or "dataset" not in frame.columns:
        return frame
    columns = [c for c in frame.columns if c != "model"]
    at = columns.index("dataset") + 1
    return frame[columns[:at] + ["model"] + columns[at:]]


def with_model(frame: pd.DataFrame, params: dict | None) -> pd.DataFrame:
    """`frame` with a `model` column: its own, else each dataset's model from params (its single model: an older
    table cannot tell several apart), else "" where no params are given (a table made by hand)."""
    if "model" in frame.columns or "dataset" not in frame.columns:
        return frame
    from bench.config import models_of
    from bench.errors import BenchError

    def model(dataset: str) -> str:
        if params is None or "model" not in params["train"].get(dataset, {}):
            return ""
        models = models_of(params, dataset)
        if len(models) > 1:
            raise BenchError(f"a results table has no `model` column but {dataset} is studied with "
                             f"{', '.join(models)} (grid.models.{dataset}); rerun `dvc repro aggregate`")
        return models[0]

    return model_after_dataset(frame.assign(model=frame["dataset"].map(model) if len(frame) else pd.Series(dtype=str)))


def read_table(results: Path, name: str, params: dict | None = None) -> pd.DataFrame:
    """results/<name>.csv with its `model` column (see `with_model`), read through bench/artefacts.py's checked
    reader (a missing or damaged table is a one-line error naming the command that rewrites it); a table written
    without rows or columns is an empty table."""
    from bench.artefacts import read_table as read_checked

    return with_model(read_checked(Path(results) / f"{name}.csv", may_be_empty=True), params)


def label(dataset: str, model: object) -> str:
    """How the report and the figures name a dataset × model: `dataset · model` (the dataset alone for a table
    made by hand without models)."""
    return f"{dataset} · {model}" if isinstance(model, str) and model else str(dataset)
