"""SoftCGT: Confidence-Gated Training with a residual (sigmoid) gate (Mokssit et al., arXiv 2509.17885)."""

import torch

from bench.train.method import register_method
from methods._cgt import SHARED_CHOICES, SHARED_DEFAULTS, ConfidenceGated


@register_method("soft_cgt")
class SoftCGT(ConfidenceGated):
    """Authors' code gunki-geek/CG-Training `train_soft_cgt.py` (`softcgt_lambda_anneal_loss`). Without
    gradient, s_e = softmax probability of the TRUE class at exit e, residual r_e = clamp(1 − σ((s_e −
    tau_train)·sigmoid_scale), 0, 1), elig_e = Π_{k<e} r_k; W_e = λ_e(epoch)·elig_e + eps_leak, normalised
    per sample by Σ_e W_e + 1e-12; L = Σ_e mean_i W_e(i)·CE(z_e(i), y_i) with label smoothing 0.1.
    Defaults are the authors' (tau_train 0.9, sigmoid_scale 1.0). With scale 1.0 the gate is very mild:
    r ∈ [1 − σ(0.1), 1 − σ(−0.9)] = [0.475, 0.711] for any s, so every deeper exit keeps ≥ 0.475^(e−1)
    of its λ; a near-binary soft gate needs sigmoid_scale ≈ 10–20, which is not the authors' setting.
    Our choices: the λ schedule of the authors' 4 exits linearly interpolated onto our exits (INFERRED);
    0-based epoch anneal. Exit policy: max-softmax."""

    defaults = {"tau_train": 0.9, "sigmoid_scale": 1.0, **SHARED_DEFAULTS}
    source = "Mokssit et al. 2025, arXiv 2509.17885 (CGT); gunki-geek/CG-Training train_soft_cgt.py"
    choices = {"sigmoid_scale": "1.0 = the authors' default, kept; INFERRED from the formula: a very mild gate "
                                "(r in [0.475, 0.711]); the paper's value NOT FOUND",
               "tau_train": "0.9 = the authors' CFG default; the paper's value NOT FOUND",
               **SHARED_CHOICES}
    exit_policy = "max_softmax"

    def pass_through(self, logits, targets):
        s = torch.stack([torch.softmax(z, dim=1).gather(1, targets.view(-1, 1)).squeeze(1) for z in logits], dim=1)
        return (1.0 - torch.sigmoid((s - self.params["tau_train"]) * self.params["sigmoid_scale"])).clamp(0.0, 1.0)
