"""Per-exit thresholds chosen by Optuna on validation logits: maximise accuracy subject to expected
FLOPs ≤ budget (a fraction of the deepest exit's cumulative FLOPs), the constraint handled the Optuna way
(`Trial.set_constraint`, which replaced the sampler's `constraints_func` in Optuna 5: a trial is
feasible when its constraint value is ≤ 0)."""

from __future__ import annotations

import optuna

from bench.evaluate.policies import Policy
from bench.tune.cached import CachedSplit

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tune_thresholds(split: CachedSplit, policy: Policy, budget: float, trials: int, seed: int,
                    warm_start: list[float] | None = None, storage: str | None = None,
                    study_name: str = "thresholds") -> tuple[list[float] | None, optuna.Study]:
    """Best feasible per-exit thresholds (K−1 values) on `split`, or None when no trial met the budget.
    `warm_start` (e.g. the exact best single threshold) is evaluated first, so the search never returns
    something worse on this split than that starting point."""
    names = [f"threshold_exit{k}" for k in range(split.num_exits - 1)]
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=study_name,
                                load_if_exists=False)
    study.set_user_attr("budget", budget)
    study.set_user_attr("policy", policy.name)
    if warm_start is not None:
        study.enqueue_trial(dict(zip(names, warm_start)))

    def objective(trial: optuna.Trial) -> float:
        if policy.integer:
            thresholds = [trial.suggest_int(name, int(policy.low), int(policy.high) + 1) for name in names]
        else:
            thresholds = [trial.suggest_float(name, policy.low, policy.high + 1.0) for name in names]
        accuracy, cost = split.evaluate(thresholds)
        trial.set_user_attr("flops_fraction", cost)
        trial.set_user_attr("cost_over_budget", cost - budget)
        trial.set_constraint("cost_over_budget", cost - budget)  # feasible when ≤ 0; TPE models it
        return accuracy

    study.optimize(objective, n_trials=trials)
    feasible = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs["cost_over_budget"] <= 1e-12]
    if not feasible:
        return None, study
    best = max(feasible, key=lambda t: (t.value, -t.user_attrs["flops_fraction"], -t.number))
    return [float(best.params[name]) for name in names], study
