"""Confidence-Gated Training (CGT) machinery shared by `hard_cgt` and `soft_cgt` (a helper module: it
registers nothing). Follows the authors' code, gunki-geek/CG-Training `train_hard_cgt.py` /
`train_soft_cgt.py` (`*_lambda_anneal_loss`); see docs/methods.md §1.2–1.4."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.train.method import Method, check_range

# the authors' 4-exit schedule (shallow -> deep), CFG.lambda_start / CFG.lambda_end
AUTHORS_LAMBDA_START = (1.0, 0.7, 0.4, 0.1)
AUTHORS_LAMBDA_END = (0.2, 0.5, 0.8, 1.0)


def interpolate_schedule(values, num_exits: int) -> list[float]:
    """Resample per-exit values given at evenly spaced exit positions 0..1 onto `num_exits` evenly spaced
    positions by linear interpolation (4 -> 4 is the identity; 4 -> 3 takes the two ends and the middle)."""
    if num_exits == 1:
        return [float(values[-1])]
    out = []
    for k in range(num_exits):
        x = k * (len(values) - 1) / (num_exits - 1)
        i = min(int(x), len(values) - 2)
        out.append(values[i] + (x - i) * (values[i + 1] - values[i]))
    return out


def resolve_lambdas(params: dict, num_exits: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """λ_start, λ_end [K]: the user's lists (exactly K numbers), or [] = the authors' schedule interpolated."""
    resolved = []
    for key, authors in (("lambda_start", AUTHORS_LAMBDA_START), ("lambda_end", AUTHORS_LAMBDA_END)):
        given = params[key]
        if not given:
            given = interpolate_schedule(authors, num_exits)
        elif len(given) != num_exits:
            raise BenchError(f"{where}.{key} has {len(given)} values; the model has {num_exits} exits "
                             f"(give one per exit, or [] for the authors' schedule interpolated onto the exits)")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in given):
            raise BenchError(f"{where}.{key} must be a list of numbers, got {given!r}")
        resolved.append(torch.tensor(given, dtype=torch.float32))
    return resolved[0], resolved[1]


def annealed_lambda(start: torch.Tensor, end: torch.Tensor, epoch: int, num_epochs: int) -> torch.Tensor:
    """Linear anneal per epoch, α = epoch / (T − 1) with a 0-based epoch (the authors' (epoch − 1)/(T − 1)
    with a 1-based one); α = 0 when T = 1 (the authors' max(1, T − 1))."""
    alpha = epoch / max(1, num_epochs - 1)
    return start + alpha * (end - start)


def eligibility(pass_through: torch.Tensor) -> torch.Tensor:
    """elig [B, K] from per-exit pass-through factors [B, K] (1 − m_k or r_k): elig_1 = 1,
    elig_e = Π_{k<e} pass_k. The last exit's own factor is unused, as in the authors' code."""
    ones = torch.ones_like(pass_through[:, :1])
    return torch.cumprod(torch.cat([ones, pass_through[:, :-1]], dim=1), dim=1)


@torch.no_grad()
def cgt_weights(elig: torch.Tensor, lam: torch.Tensor, eps_leak: float, normalize: bool) -> torch.Tensor:
    """W [B, K] = λ_e · elig_e + eps_leak, optionally divided per sample by Σ_e W_e + 1e-12. No gradient."""
    weights = elig.float() * lam.to(elig.device).view(1, -1) + eps_leak
    return weights / (weights.sum(dim=1, keepdim=True) + 1e-12) if normalize else weights


def cgt_exit_losses(logits, targets, elig, lam, eps_leak: float, normalize: bool, label_smoothing: float):
    """Term e = mean_i W_e(i) · CE_ls(z_e(i), y_i); their sum is the authors' loss."""
    weights = cgt_weights(elig, lam, eps_leak, normalize)
    ce = torch.stack([F.cross_entropy(z, targets, reduction="none", label_smoothing=label_smoothing)
                      for z in logits], dim=1)
    return (weights * ce).mean(dim=0)


class ConfidenceGated(Method):
    """Base of the two CGT variants (not registered): subclasses define `pass_through`."""

    def __init__(self, params, num_exits, num_classes):
        super().__init__(params, num_exits, num_classes)
        check_range(self, "tau_train", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
        check_range(self, "eps_leak", lambda v: v >= 0, ">= 0")
        if "sigmoid_scale" in self.params:
            check_range(self, "sigmoid_scale", lambda v: v > 0, "> 0")
        self.lambda_start, self.lambda_end = resolve_lambdas(self.params, num_exits, f"methods.{self.name}")

    def pass_through(self, logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """Per-exit factor [B, K] by which a sample stays eligible for the deeper exits (under no_grad)."""
        raise NotImplementedError

    def exit_losses(self, logits, targets, ctx):
        with torch.no_grad():
            elig = eligibility(self.pass_through([z.detach().float() for z in logits], targets))
        lam = annealed_lambda(self.lambda_start, self.lambda_end, ctx.epoch, ctx.num_epochs)
        p = self.params
        return cgt_exit_losses(logits, targets, elig, lam, p["eps_leak"], p["normalize_weights"], p["label_smoothing"])

    def metadata(self) -> dict:
        resolved = {key: [round(v, 6) for v in getattr(self, key).tolist()] for key in ("lambda_start", "lambda_end")}
        return {**super().metadata(), "resolved": resolved}


SHARED_DEFAULTS = {"lambda_start": [], "lambda_end": [], "eps_leak": 1e-3, "normalize_weights": True,
                   "label_smoothing": 0.1}
SHARED_CHOICES = {
    "lambda_start": "INFERRED: [] (default) = the authors' 4-exit (1.0, 0.7, 0.4, 0.1) linearly interpolated over "
                    "evenly spaced exit positions onto our K exits (K=3: 1.0, 0.55, 0.1); an explicit list needs K values",
    "lambda_end": "INFERRED: [] (default) = the authors' 4-exit (0.2, 0.5, 0.8, 1.0) interpolated likewise "
                  "(K=3: 0.2, 0.65, 1.0); whether the paper's Indian Pines / Fashion-MNIST runs used this "
                  "schedule is NOT FOUND",
    "training": "λ anneal over the run's epochs with a 0-based epoch, α = epoch/(T−1) (authors: 1-based, "
                "(epoch−1)/(T−1)), α = 0 when T = 1; optimiser, schedule and epochs are the benchmark's, not the "
                "authors' (SGD-nesterov 0.1, 300 epochs, CIFAR-100)",
    "policy": "max_softmax: the authors' early_exit_predict (first exit with max softmax ≥ τ); τ tuned on validation",
}
