"""Cost tables generated from the code: the README's block is the generator's output, and the generator's
numbers equal closed forms (tests/test_flops.py) and an independent hook count."""

import copy

import pytest
import torch

from bench.analyse.costs import COSTS_END, COSTS_START, cost_rows, cost_table, current_block, replace_block, sample_shape
from bench.cli import main
from bench.config import load_params, validate
from bench.data import DATASETS
from bench.errors import BenchError
from bench.models import build_model
from tests.conftest import ROOT
from tests.test_flops import fmnist_closed_form, hook_count, spectral_closed_form


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def rows(params):
    out = {}
    for row in cost_rows(params):
        out.setdefault(row["dataset"], []).append(row)
    return out


def test_readme_cost_block_is_the_generators_output(params):
    readme = (ROOT / "README.md").read_text()
    assert current_block(readme, "README.md") == cost_table(params), "README.md's cost table is stale: run `make costs`"


def test_costs_match_closed_forms(params, rows):
    fm = params["train"]["fashion_mnist"]["model"]
    assert [r["flops"] for r in rows["fashion_mnist"]] == fmnist_closed_form(*fm["widths"], fm["head_width"])
    ip, patch = params["train"]["indian_pines"]["model"], params["prepare"]["indian_pines"]["patch_size"]
    assert [r["flops"] for r in rows["indian_pines"]] == spectral_closed_form(200, ip["spectral_stem"], *ip["widths"],
                                                                               ip["head_width"], patch)
    for name, found in rows.items():
        assert [r["macs"] for r in found] == [r["flops"] // 2 for r in found]
        assert found[-1]["share"] == 1.0 and all(0 < r["share"] < 1 for r in found[:-1])


def test_the_numbers_the_issue_found_by_an_independent_count(rows):
    """Issue 16 item 6: the study's 16/32/64 Fashion-MNIST model and the tiny model, counted independently."""
    assert [r["flops"] for r in rows["fashion_mnist"]] == [1_130_240, 3_527_680, 5_335_296]
    assert [r["flops"] for r in rows["tiny"]] == [13_888, 53_120, 71_680]


def test_tiny_costs_match_a_hook_count(params, rows):
    settings = params["train"]["tiny"]["model"]
    model = build_model(settings["name"], 1, 4, {k: v for k, v in settings.items() if k != "name"})
    assert [r["flops"] for r in rows["tiny"]] == [hook_count(model, (1, 8, 8), k) for k in range(3)]


def test_parameters_are_cumulative_and_end_at_the_whole_model(params, rows):
    for name, found in rows.items():
        settings = params["train"][name]["model"]
        shape = sample_shape(name, params["prepare"][name])
        model = build_model(settings["name"], shape[0], DATASETS.get(name).num_classes,
                            {k: v for k, v in settings.items() if k != "name"})
        counts = [r["params"] for r in found]
        assert counts == sorted(counts) and counts[-1] == sum(p.numel() for p in model.parameters())


def test_sample_shapes_cover_every_dataset_and_match_prepared_data(tmp_path, params):
    from bench.data import load_prepared, prepare_dataset

    for name in DATASETS.names():  # every dataset states its samples' shape (the registry's input_shape)
        shape = sample_shape(name, DATASETS.get(name).prepare_defaults)
        assert len(shape) == 3 and all(isinstance(d, int) and d >= 1 for d in shape), (name, shape)
    assert sample_shape("indian_pines", {"patch_size": 9}) == (200, 9, 9)
    prepare_dataset("tiny", params["prepare"]["tiny"], tmp_path)
    batch = load_prepared("tiny", tmp_path).splits["train"].batch(torch.arange(2))
    assert tuple(batch.shape[1:]) == sample_shape("tiny", params["prepare"]["tiny"])


def test_a_changed_model_changes_the_table(real_params):
    raw = copy.deepcopy(real_params)
    raw["train"]["fashion_mnist"]["model"]["widths"] = [32, 64, 128]
    rows = [r for r in cost_rows(validate(raw)) if r["dataset"] == "fashion_mnist"]
    assert [r["flops"] for r in rows] == fmnist_closed_form(32, 64, 128, 64) == [2_259_200, 10_665_472, 17_893_376]


def test_update_rewrites_only_the_block(tmp_path, params, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# title\n\n{COSTS_START}\n| stale |\n{COSTS_END}\n\nafter\n")
    monkeypatch.chdir(ROOT)
    assert main(["costs", "--update", str(doc)]) == 0
    text = doc.read_text()
    assert text == f"# title\n\n{COSTS_START}\n{cost_table(params)}{COSTS_END}\n\nafter\n"
    assert replace_block(text, cost_table(params), "doc.md") == text  # idempotent


def test_a_file_without_markers_is_named():
    with pytest.raises(BenchError, match=r"doc.md has no cost block; add the lines <!-- costs:start"):
        replace_block("no markers here\n", "x", "doc.md")
