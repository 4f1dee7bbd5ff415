"""Whether a policy can spend a budget. A policy's operating points are discrete (PABEE's patience with 3 exits
has none between "everyone at exit 0" and about 0.66 of the cost), so "the best point under budget b" can be a
point far cheaper than b: the budget was not reached, and the row must say so instead of silently reporting
that cheaper point at b.

Definition: a budget b is `reached` by a calibrator when one of the validation operating points it considers
has a cost fraction in [b − tolerance, b] (`tune.reach_tolerance`). The exact single threshold considers every
point of the exact curve; the per-exit Optuna search those and every completed trial. `reachable_cost` is the
largest such validation cost ≤ b (None when no point is ≤ b). The chosen point itself may be cheaper than b
when spending more does not pay on validation: that is a choice, not a gap, and does not make b unreached.
"""

from __future__ import annotations

import numpy as np

SLACK = 1e-12  # the same float slack as the feasibility test of the budget


def reach(costs, budget: float, tolerance: float) -> tuple[float | None, bool]:
    """(reachable_cost, reached) of validation cost fractions `costs` at `budget`."""
    costs = np.asarray(costs, dtype=np.float64)
    under = costs[costs <= budget + SLACK]
    if len(under) == 0:
        return None, False
    best = float(under.max())
    return best, bool(best >= budget - tolerance - SLACK)
