"""The authors' backbones: `resnet18_scan` (CGT, gunki-geek/CG-Training) and `resnet56_sdn` (SDN,
yigitcankaya/Shallow-Deep-Networks) against verbatim copies of the authors' model code (tests/reference/):
the same parameters and per-exit FLOPs (one FlopCounterMode, plus closed forms), the same outputs once the
authors' weights are copied in; exit k runs alone; every method trains on them; the model registry's input
shapes reject a model a dataset's samples do not fit."""

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.config import validate
from bench.errors import BenchError
from bench.models import accepts, build_model, exit_costs, input_shape
from bench.models.resnet_sdn import SDN_IC_AFTER, InternalClassifier, ResidualUnit
from bench.train.method import METHODS, StepContext, all_parameters, get_method
from tests.conftest import write_params
from tests.reference.cgt_resnet import resnet18 as cgt_resnet18
from tests.reference.sdn_resnet import ResNet_SDN, resnet56_params
from tests.test_errors import assert_one_line_error, run_cli

CLASSES = 100  # CIFAR-100, as both papers' set-ups
SAMPLE = (3, 32, 32)


def conv(k, c_in, c_out, h, groups=1):
    """FLOPs of a k×k convolution with an h×h output: 2 per multiply-add."""
    return 2 * k * k * (c_in // groups) * c_out * h * h


def cumulative(parts):
    out, total = [], 0
    for part in parts:
        total += part
        out.append(total)
    return out


def cgt_closed_form(w=64, classes=CLASSES):
    """resnet18_scan on 32×32: exit k adds stage k (+ the stem before stage 0) and head k."""
    def sep_conv(c_in, c_out, h_out):
        return (conv(3, c_in, c_in, h_out, groups=c_in) + conv(1, c_in, c_in, h_out)
                + conv(3, c_in, c_in, h_out, groups=c_in) + conv(1, c_in, c_out, h_out))

    parts = []
    for s in range(4):
        c, h = w * 2 ** s, 32 // 2 ** s
        c_in = w if s == 0 else c // 2
        stage = conv(3, c_in, c, h) + conv(3, c, c, h) + (conv(1, c_in, c, h) if s else 0) + 2 * conv(3, c, c, h)
        head = 2 * 8 * w * classes
        if s < 3:
            head += sep_conv(c, c, h // 2)  # attention
            head += sum(sep_conv(c * 2 ** i, c * 2 ** (i + 1), h // 2 ** (i + 1)) for i in range(3 - s))  # scala
        parts.append((conv(3, 3, w, 32) if s == 0 else 0) + stage + head)
    return cumulative(parts)


def sdn_units(w=16):
    """Closed-form FLOPs of each of ResNet-56's 27 residual units on 32×32, and its output (channels, size)."""
    units = []
    for s in range(3):
        c, h = w * 2 ** s, 32 // 2 ** s
        for i in range(9):
            c_in = c // 2 if s and i == 0 else c
            units.append((conv(3, c_in, c, h) + conv(3, c, c, h) + (conv(1, c_in, c, h) if c_in != c else 0), c))
    return units


def sdn_closed_form(w=16, classes=CLASSES, ic_after=SDN_IC_AFTER):
    units = sdn_units(w)
    parts, start = [], 0
    for end in [*ic_after, 27]:
        backbone = sum(f for f, _ in units[start:end]) + (conv(3, 3, w, 32) if start == 0 else 0)
        c = units[end - 1][1]
        head = 2 * c * 4 * 4 * classes if end < 27 else 2 * c * classes  # IC: mixed pooling to 4×4, linear
        parts.append(backbone + head)
        start = end
    return cumulative(parts)


# ---- the authors' models, counted module by module ------------------------------------------------------

def module_flops(model, sample=SAMPLE):
    """FLOPs of each top-level child (and deeper, by dotted name) of one forward of the authors' model."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *sample, device=next(model.parameters()).device))
    root = type(model).__name__
    return {name[len(root) + 1:]: sum(ops.values()) for name, ops in counter.get_flop_counts().items()
            if name.startswith(root + ".")}


def cgt_exit_modules(k):
    """The authors' modules exit k (shallow → deep, their out{k+1}) evaluates, earlier exits included."""
    return (["conv1", "bn1"] + [f"layer{j}" for j in range(1, k + 2)] + [f"attention{j}" for j in range(1, min(k + 1, 3) + 1)]
            + [f"scala{j}" for j in range(1, k + 2)] + [f"fc{j}" for j in range(1, k + 2)])


def sdn_exit_modules(k, ic_after=SDN_IC_AFTER):
    """Exit k < 6: the stem and units 0..ic_after[k]-1 (their ICs ride on their units); exit 6: everything."""
    if k == len(ic_after):
        return ["init_conv", *[f"layers.{u}" for u in range(27)], "end_layers"]
    return ["init_conv", *[f"layers.{u}" for u in range(ic_after[k])]]


def authors_per_exit(model, exit_modules, num_exits):
    flops = module_flops(model)
    named = dict(model.named_modules())
    out = []
    for k in range(num_exits):
        names = exit_modules(k)
        params = sum(p.numel() for n in names for p in named[n].parameters())
        out.append((sum(flops.get(n, 0) for n in names), params))
    return out


def eebench_per_exit(model):
    flops = exit_costs(model, SAMPLE)["flops"]
    return [(flops[k], sum(p.numel() for m in [*model.blocks[:k + 1], *model.heads[:k + 1]] for p in m.parameters()))
            for k in range(model.num_exits)]


@pytest.fixture(scope="module")
def full():
    """Both models at full width on the meta device: shapes only, so counting costs no arithmetic."""
    with torch.device("meta"):
        return {"resnet18_scan": (build_model("resnet18_scan", 3, CLASSES, {}), cgt_resnet18(num_classes=CLASSES)),
                "resnet56_sdn": (build_model("resnet56_sdn", 3, CLASSES, {}), ResNet_SDN(resnet56_params(CLASSES)))}


def test_resnet18_scan_counts_equal_the_authors_and_the_closed_form(full):
    ours, theirs = full["resnet18_scan"]
    assert ours.num_exits == 4
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert eebench_per_exit(ours) == authors_per_exit(theirs, cgt_exit_modules, 4)
    assert [f for f, _ in eebench_per_exit(ours)] == cgt_closed_form()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # the last exit is the whole model
        theirs.eval()(torch.zeros(1, *SAMPLE, device="meta"))
    assert exit_costs(ours, SAMPLE)["flops"][-1] == counter.get_total_flops()


def test_resnet56_sdn_counts_equal_the_authors_and_the_closed_form(full):
    ours, theirs = full["resnet56_sdn"]
    assert ours.num_exits == theirs.num_output == 7
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert eebench_per_exit(ours) == authors_per_exit(theirs, sdn_exit_modules, 7)
    assert [f for f, _ in eebench_per_exit(ours)] == sdn_closed_form()


def test_sdn_ic_placement_is_their_add_ic_and_their_flop_fractions():
    """Their add_ic list, as unit numbers, and the comment on it: the units nearest to 15 … 90 % of the
    backbone's FLOPs (stem + 27 units, closed form)."""
    add_ic = [flag for stage in resnet56_params()["add_ic"] for flag in stage]
    assert [u + 1 for u, flag in enumerate(add_ic) if flag] == list(SDN_IC_AFTER)
    units = [f for f, _ in sdn_units()]
    backbone = cumulative([conv(3, 3, 16, 32) + units[0], *units[1:]])
    nearest = [min(range(27), key=lambda u: abs(backbone[u] / backbone[-1] - f)) + 1
               for f in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)]
    assert nearest == list(SDN_IC_AFTER)


# ---- the same function: the authors' weights copied in give the authors' outputs -------------------------

def randomise(model, seed=1):
    """Random weights and BN statistics, so that equal outputs mean equal computation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5 if t.dim() == 1 else torch.randn(t.shape, generator=gen) * 0.1)


def copy_cgt(ours, theirs):
    pairs = [(ours.blocks[0][0], theirs.conv1), (ours.blocks[0][1], theirs.bn1), (ours.blocks[0][3], theirs.layer1),
             *[(ours.blocks[k], getattr(theirs, f"layer{k + 1}")) for k in (1, 2, 3)], (ours.heads[3][2], theirs.fc4)]
    for k in range(3):
        head, attention, scala = ours.heads[k], getattr(theirs, f"attention{k + 1}"), getattr(theirs, f"scala{k + 1}")
        pairs += [(head.attention[0], attention[0].op), (head.attention[1], attention[1]), (head.fc, getattr(theirs, f"fc{k + 1}"))]
        pairs += [(head.scala[i], scala[i].op) for i in range(3 - k)]
    return pairs


def copy_sdn(ours, theirs):
    units = [m for m in ours.modules() if isinstance(m, ResidualUnit)]
    ics = [m for m in ours.modules() if isinstance(m, InternalClassifier)]
    their_ics = [layer.output for layer in theirs.layers if layer.output is not None]
    pairs = [(ours.blocks[0][0], theirs.init_conv[0]), (ours.blocks[0][1], theirs.init_conv[1]),
             (ours.heads[-1][2], theirs.end_layers[2]), *zip(ics, their_ics)]
    for unit, layer in zip(units, theirs.layers, strict=True):
        pairs += [(unit.body, layer.layers[0]), (unit.shortcut, layer.layers[1])]
    return pairs


@pytest.mark.parametrize("name,pairs,order", [("resnet18_scan", copy_cgt, lambda out: out[0][::-1]),
                                              ("resnet56_sdn", copy_sdn, lambda out: out)])
def test_authors_weights_give_the_authors_outputs(name, pairs, order):
    torch.manual_seed(0)
    ours = build_model(name, 3, 10, {})
    theirs = cgt_resnet18(num_classes=10) if name == "resnet18_scan" else ResNet_SDN(resnet56_params(10))
    randomise(theirs)
    copied = 0
    for mine, source in pairs(ours, theirs):
        mine.load_state_dict(source.state_dict())  # strict: the same tensors under the same names
        copied += sum(p.numel() for p in mine.parameters())
    assert copied == sum(p.numel() for p in ours.parameters())  # every parameter came from theirs
    x = torch.randn(2, *SAMPLE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mine, reference = ours.eval()(x), order(theirs.eval()(x))
    assert len(mine) == len(reference)
    for a, b in zip(mine, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- exit k alone; every method trains on a narrow copy ----------------------------------------------------

NARROW = {"resnet18_scan": {"width": 4}, "resnet56_sdn": {"width": 4}}


@pytest.mark.parametrize("name", sorted(NARROW))
def test_exit_k_runs_alone(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 5, NARROW[name]).eval()
    x = torch.randn(2, *SAMPLE)
    with torch.no_grad():
        whole = model(x)
        for k in range(model.num_exits):
            ran = set()
            hooks = [m.register_forward_hook(lambda mod, i, o, tag=tag: ran.add(tag))
                     for tag, m in [*((("block", j), b) for j, b in enumerate(model.blocks)),
                                    *((("head", j), h) for j, h in enumerate(model.heads))]]
            part = model(x, upto=k)
            for hook in hooks:
                hook.remove()
            assert ran == {(kind, j) for kind in ("block", "head") for j in range(k + 1)}
            assert len(part) == k + 1 and torch.equal(part[k], whole[k])


@pytest.mark.parametrize("model_name", sorted(NARROW))
@pytest.mark.parametrize("method_name", METHODS.names())
def test_every_method_trains_a_narrow_resnet(model_name, method_name):
    """One forward/backward of the method's loss in each of its phases (the engine's step, shrunk)."""
    torch.manual_seed(0)
    model = build_model(model_name, 3, 5, NARROW[model_name])
    method = get_method(method_name)(None, model.num_exits, 5)
    extra = method.extra_modules()
    x, y = torch.randn(4, *SAMPLE), torch.arange(4) % 5
    touched = set()
    for step, phase in enumerate(method.phases(6)):
        params = phase.trainable(model, extra)
        chosen = {id(p) for p in params}
        for p in all_parameters(model, extra):
            p.requires_grad_(id(p) in chosen)
            p.grad = None
        ctx = StepContext(epoch=step, num_epochs=6, step=step, phase=phase.name, model=model, extra=extra, inputs=x,
                          lr=0.01)
        logits = method.forward(model, extra, x)
        assert len(logits) == model.num_exits and all(z.shape == (4, 5) for z in logits)
        losses = method.exit_losses(logits, y, ctx)
        assert losses.shape == (model.num_exits,) and torch.isfinite(losses).all()
        losses.sum().backward()
        touched |= {id(p) for p in params if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(id(p) in touched for p in model.parameters()), "no parameter of the model got gradient"


# ---- input shapes -------------------------------------------------------------------------------------------

def test_registry_states_input_shapes():
    assert input_shape("resnet18_scan") == input_shape("resnet56_sdn") == (None, 32, 32)
    assert accepts("resnet18_scan", (3, 32, 32)) and accepts("resnet56_sdn", (1, 32, 32))
    assert not accepts("resnet18_scan", (1, 28, 28)) and not accepts("resnet56_sdn", (3, 64, 64))
    assert accepts("spectral_spatial_cnn", (200, 7, 7)) and accepts("fmnist_cnn", (1, 28, 28))
    assert not accepts("tiny_cnn", (3, 32, 32)) and accepts("tiny_cnn", (1, 8, 8))


def test_a_model_the_datasets_samples_do_not_fit_is_one_line(in_tmp, tiny_params, capsys):
    params = copy.deepcopy(tiny_params)
    params["train"]["tiny"]["model"] = {"name": "resnet18_scan", "width": 4}
    with pytest.raises(BenchError) as caught:
        validate(copy.deepcopy(params))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.tiny.model.name = 'resnet18_scan' is built for any×32×32 inputs, but the "
                              "dataset's samples are 1×8×8; use a model that accepts them: ")
    fits = message.split(": ")[-1].split(", ")
    assert "tiny_cnn" in fits and "resnet18_scan" not in fits and "fmnist_cnn" not in fits
    write_params(in_tmp, params)
    code, err = run_cli(capsys, "prepare", "--dataset", "tiny")
    assert_one_line_error(code, err, "train.tiny.model.name = 'resnet18_scan'", "1×8×8", "tiny_cnn")
    assert not (in_tmp / "datasets").exists()
