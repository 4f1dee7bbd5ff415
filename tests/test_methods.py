"""Every registered method gets these tests for free (timm style: parametrised over the registry)."""

import sys
import textwrap

import pytest
import torch

from bench.config import validate
from bench.errors import BenchError
from bench.models import build_model
from bench.train.gradstats import per_exit_gradient_stats
from bench.train.method import METHODS, Method, StepContext, all_parameters, get_method, register_method


def tiny_batch(n=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % classes


def train_two_steps_per_phase(name, epochs=6):
    """What the engine does, shrunk: every phase, two optimiser steps on a tiny batch, epoch_end on a
    validation batch. Returns the model, method, extra modules, losses and per-phase gradient records."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 1, 4, {})
    method = get_method(name)(None, model.num_exits, 4)
    extra = method.extra_modules()
    x, y = tiny_batch()
    val_x, val_y = tiny_batch(seed=1)
    losses_seen, records, step = [], [], 0
    for phase in method.phases(epochs):
        params = phase.trainable(model, extra)
        chosen = {id(p) for p in params}
        for p in all_parameters(model, extra):
            p.requires_grad_(id(p) in chosen)
        optimizer = torch.optim.SGD(params, lr=0.01)
        for phase_epoch in range(phase.epochs):
            for _ in range(2):
                ctx = StepContext(epoch=step // 2, num_epochs=epochs, step=step, phase=phase.name,
                                  phase_epoch=phase_epoch, phase_epochs=phase.epochs, model=model, extra=extra,
                                  inputs=x, lr=0.01)
                logits = method.forward(model, extra, x)
                losses = method.exit_losses(logits, y, ctx)
                assert losses.shape == (model.num_exits,) and torch.isfinite(losses).all(), (phase.name, losses)
                stats = per_exit_gradient_stats(model, logits, losses)
                optimizer.zero_grad(set_to_none=True)
                for p in all_parameters(model, extra):
                    p.grad = None
                losses.sum().backward()
                optimizer.step()
                records.append((phase.name, chosen, stats,
                                {id(p) for p in all_parameters(model, extra) if p.grad is not None and p.grad.abs().sum() > 0}))
                losses_seen.append(losses.detach().clone())
                step += 1
            with torch.no_grad():
                method.epoch_end(extra, torch.stack(method.forward(model, extra, val_x)), val_y, ctx)
    return model, method, extra, losses_seen, records


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_and_every_exit_gets_gradient(name):
    model, method, extra, losses, records = train_two_steps_per_phase(name)
    assert sum(p.epochs for p in method.phases(6)) == 6
    touched = set().union(*(r[3] for r in records))
    for k, head in enumerate(model.heads):
        assert any(id(p) in touched for p in head.parameters()), f"exit {k} never got gradient"
    assert any(id(p) in touched for p in model.backbone_parameters()), "the backbone never got gradient"


@pytest.mark.parametrize("name", METHODS.names())
def test_frozen_parameters_get_no_gradient(name):
    *_, records = train_two_steps_per_phase(name)
    for phase, chosen, _, touched in records:
        assert touched <= chosen, f"phase {phase}: a parameter outside the phase's trainable set got gradient"


@pytest.mark.parametrize("name", METHODS.names())
def test_method_is_deterministic(name):
    first = train_two_steps_per_phase(name)[3]
    second = train_two_steps_per_phase(name)[3]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("name", METHODS.names())
def test_gradient_statistics_are_populated(name):
    model, method, extra, _, records = train_two_steps_per_phase(name)
    for _, _, stats, _ in records:
        assert [r["exit"] for r in stats] == list(range(model.num_exits))
        assert all(r["backbone_grad_norm"] >= 0 and r["head_grad_norm"] >= 0 for r in stats)
    assert any(r["samples_with_grad"] > 0 for _, _, stats, _ in records for r in stats)
    with torch.no_grad():
        logits = torch.stack(method.forward(model, extra, tiny_batch()[0]))
        outputs = method.eval_outputs(extra, logits)
    for key, value in outputs.items():
        assert value.shape == logits.shape[:2], key


@pytest.mark.parametrize("name", METHODS.names())
def test_method_documents_source_choices_and_policy(name):
    cls = get_method(name)
    from bench.evaluate.policies import POLICIES

    assert cls.__doc__ and cls.source and cls.choices
    unexplained = set(cls.choices) - (set(cls.defaults) | {"training", "architecture", "loss", "policy"})
    assert not unexplained, f"choices name neither a parameter nor a documented aspect: {unexplained}"
    assert cls.exit_policy in POLICIES
    assert set(cls.describe()) >= {"name", "source", "choices", "defaults", "exit_policy"}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_params_are_type_checked(name):
    cls = get_method(name)
    with pytest.raises(BenchError, match=f"unknown parameter methods.{name}.no_such_param"):
        cls({"no_such_param": 1}, 3, 4)


OUT_OF_RANGE = [("joint", "label_smoothing", 1.5, r"in \[0, 1\)"), ("branchynet", "label_smoothing", -0.1, r"in \[0, 1\)"),
                ("sdn", "label_smoothing", 1.0, r"in \[0, 1\)"), ("self_distill", "temperature", 0.0, "> 0"),
                ("self_distill", "aux_weight", -1.0, ">= 0"), ("cascade_aware", "downweight", -0.5, ">= 0"),
                ("hard_cgt", "tau_train", 1.5, r"in \[0, 1\]"), ("soft_cgt", "sigmoid_scale", 0.0, "> 0"),
                ("soft_cgt", "eps_leak", -1e-3, ">= 0"), ("l2w_den", "meta_lr", 0.0, "> 0"),
                ("l2w_den", "epsilon", -0.1, ">= 0"), ("branchynet", "weights", [-1.0], "non-negative"),
                ("jei_dnn", "warmup_fraction", 1.0, r"\[0, 1\)"), ("cascade_opt", "tau", 0.0, r"\(0, 1\]"),
                ("classynet", "class_acc_threshold", 1.5, r"\[0, 1\]"), ("ztw", "phase_fractions", [0.5, 0.5], "3 positive"),
                ("disjoint", "backbone_fraction", 1.0, r"\(0, 1\)"), ("sdn", "max_weights", [-1.0], "non-negative")]


@pytest.mark.parametrize("name, key, value, allowed", OUT_OF_RANGE)
def test_out_of_range_method_params_are_one_line_errors_without_a_model(name, key, value, allowed):
    with pytest.raises(BenchError, match=f"methods.{name}.{key}.*{allowed}") as error:
        get_method(name)({key: value}, 3, 4)
    assert "\n" not in str(error.value)


def test_every_label_smoothing_is_range_checked():
    for name in METHODS.names():
        if "label_smoothing" in get_method(name).defaults:
            with pytest.raises(BenchError, match=f"methods.{name}.label_smoothing"):
                get_method(name)({"label_smoothing": 1.5}, 3, 4)


def test_a_new_method_file_registers_and_enters_the_grid(tmp_path, monkeypatch, real_params):
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent('''
        import torch, torch.nn.functional as F
        from bench.train.method import Method, register_method

        @register_method("last_only_test")
        class LastOnly(Method):
            """Only the deepest exit is trained."""
            defaults = {"scale": 1.0}
            source = "test"
            choices = {"scale": "test"}
            def exit_losses(self, logits, targets, ctx):
                zero = [0.0 * z.sum() for z in logits[:-1]]
                return torch.stack(zero + [self.params["scale"] * F.cross_entropy(logits[-1], targets)])
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_plugin  # noqa: F401

    try:
        assert "last_only_test" in METHODS.names()
        params = {**real_params, "grid": {**real_params["grid"], "methods": ["branchynet", "last_only_test"],
                                                  "extra_seed_methods": ["branchynet"]},
                  "methods": {**real_params["methods"], "last_only_test": {"scale": 2.0}}}
        assert validate(params)["methods"]["last_only_test"] == {"scale": 2.0}
    finally:
        METHODS._entries.pop("last_only_test", None)
        sys.modules.pop("my_plugin", None)


def test_entry_point_plugins_are_loaded(monkeypatch):
    import bench.train.method as method_module

    loaded = []

    class FakeEntryPoint:
        def load(self):
            loaded.append(True)

    monkeypatch.setattr(method_module, "entry_points", lambda group: [FakeEntryPoint()] if group == "eebench.methods" else [])
    method_module.discover()
    assert loaded == [True]


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        @register_method("joint")
        class Impostor(Method):
            pass


def test_unknown_method_lists_choices():
    with pytest.raises(BenchError, match="unknown method 'nope'; valid choices: .*branchynet.*joint.*ztw"):
        get_method("nope")


def test_branchynet_weights_must_match_exits():
    with pytest.raises(BenchError, match="weights has 2 values; the model has 3 exits"):
        get_method("branchynet")({"weights": [1.0, 2.0]}, 3, 4)
    losses = get_method("branchynet")({"weights": [0.5, 1.0, 2.0]}, 3, 4).exit_losses(
        [torch.zeros(2, 4)] * 3, torch.tensor([0, 1]), StepContext(0, 1, 0, "joint"))
    assert torch.allclose(losses, torch.tensor([0.5, 1.0, 2.0]) * torch.log(torch.tensor(4.0)))


def test_all_parameters_includes_extra_modules():
    model = build_model("tiny_cnn", 1, 4, {})
    extra = torch.nn.Linear(2, 2)
    assert len(all_parameters(model, extra)) == len(list(model.parameters())) + 2


def test_the_readme_example_method_works_verbatim(tmp_path, monkeypatch):
    """The "Add a method" example of the docs (docs/contributing.md), run exactly as printed."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "contributing.md").read_text()
    section = readme[readme.index("## Add a method"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    (tmp_path / "deep_weighted.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import deep_weighted  # noqa: F401

        assert "deep_weighted" in METHODS.names()
        model, method, *_ = train_two_steps_per_phase("deep_weighted")
        losses = method.exit_losses([torch.zeros(2, 4)] * 3, torch.tensor([0, 1]), StepContext(0, 1, 0, "joint"))
        assert torch.allclose(losses, torch.tensor([1.0, 2.0, 3.0]) / 6 * torch.log(torch.tensor(4.0)))
    finally:
        METHODS._entries.pop("deep_weighted", None)
        sys.modules.pop("deep_weighted", None)
