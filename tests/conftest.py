"""Shared fixtures: the real params.yaml, composed and shrunk (lightning-hydra-template style)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from bench.study import merge

ROOT = Path(__file__).resolve().parents[1]
SHARED_INDIAN_PINES = ROOT.parent / "shared" / "datasets" / "indian-pines"

TINY = {  # shrinks the real params to the tiny dataset: seconds per run
    "grid": {"methods": ["joint", "branchynet"], "datasets": ["tiny"], "seeds": [0], "extra_seed_methods": []},
    "train": {"tiny": {"epochs": 2}, "common": {"grad_stats_every": 4}},
    "tune": {"trials": 30, "storage": "journal", "budgets": [0.5]},
}


@pytest.fixture(scope="session")
def real_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def tiny_params(real_params) -> dict:
    return merge(copy.deepcopy(real_params), TINY)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty study folder (stages read and write relative to the working directory)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(folder: Path, params: dict) -> Path:
    """params.yaml in a study folder, with the claims files it names (as `bench.study.build_study` copies them)."""
    import shutil

    claims = Path(__file__).resolve().parents[1] / "claims"
    if not (folder / "claims").exists():
        shutil.copytree(claims, folder / "claims")
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def cli_env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_DAEMON="0")
    return env


def run_stages(folder: Path, params: dict, stages) -> Path:
    """A study folder written by the real stages: params.yaml, then each `eebench` argv in order, run in-process
    from `folder` (module-scoped fixtures build one such folder that each test then copies)."""
    from bench.cli import main

    write_params(folder, params)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for argv in stages:
            assert main(argv) == 0, argv
    finally:
        os.chdir(cwd)
    return folder
