"""HardCGT: Confidence-Gated Training with a binary gate (Mokssit et al., arXiv 2509.17885)."""

import torch

from bench.train.method import register_method
from methods._cgt import SHARED_CHOICES, SHARED_DEFAULTS, ConfidenceGated


@register_method("hard_cgt")
class HardCGT(ConfidenceGated):
    """Authors' code gunki-geek/CG-Training `train_hard_cgt.py` (`hardcgt_lambda_anneal_loss`). Without
    gradient, exit k "succeeds" on sample i when its max softmax ≥ tau_train AND its argmax is the label;
    elig_e = Π_{k<e} (1 − m_k); W_e = λ_e(epoch)·elig_e + eps_leak, normalised per sample by Σ_e W_e + 1e-12;
    L = Σ_e mean_i W_e(i)·CE(z_e(i), y_i) with label smoothing 0.1. Deeper exits of a solved sample keep
    only the leak weight; the exit that solved it keeps its own. λ anneals linearly from lambda_start
    (shallow emphasis) to lambda_end (deep emphasis). Our choices: tau_train = 0.5 (the authors' dataclass
    default; their README says 0.9, their checkpoint name 0.8); the λ schedule of the authors' 4 exits
    linearly interpolated onto our exits (INFERRED); 0-based epoch anneal. Exit policy: max-softmax."""

    defaults = {"tau_train": 0.5, **SHARED_DEFAULTS}
    source = "Mokssit et al. 2025, arXiv 2509.17885 (CGT); gunki-geek/CG-Training train_hard_cgt.py"
    choices = {"tau_train": "0.5 = the authors' CFG default (train_hard_cgt.py); README command says 0.9 (ignored: "
                            "the script parses no CLI args), shipped checkpoint name says 0.8; paper's value NOT FOUND",
               **SHARED_CHOICES}
    exit_policy = "max_softmax"

    def pass_through(self, logits, targets):
        success = []
        for z in logits:
            conf, pred = torch.softmax(z, dim=1).max(dim=1)
            success.append(((conf >= self.params["tau_train"]) & (pred == targets)).float())
        return 1.0 - torch.stack(success, dim=1)
