"""Pick the checkpoint to export from per-checkpoint OPE estimates, and score how well OPE ranked.

Returns of mid-training checkpoints of offline learners swing by tens of points on CartPole
(docs/benchmarks.md, offline RL), so the exported model is the checkpoint with the best chosen
OPE estimate, not the last one. When real-env returns are known, Spearman's rank correlation
(`scipy.stats.spearmanr`) between each estimator and the real return says how well OPE ranked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LAST = "last"


def select_checkpoint(rows: Sequence[Mapping[str, Any]], metric: str) -> Mapping[str, Any]:
    """The row with the highest ``ope_<metric>`` (the earliest on ties; NaN never wins), or the last
    row for ``metric == "last"`` or when every estimate is NaN.

    Raises:
        ValueError: `rows` is empty.
    """
    if not rows:
        raise ValueError("no checkpoints to select from")
    if metric == LAST:
        return rows[-1]
    key = f"ope_{metric}"
    finite = [r for r in rows if isinstance(r.get(key), float) and math.isfinite(r[key])]
    return max(finite, key=lambda r: r[key]) if finite else rows[-1]


def rank_correlations(rows: Sequence[Mapping[str, Any]], estimators: Sequence[str], real_key: str) -> dict[str, float]:
    """Spearman's ρ between ``ope_<name>`` and `real_key` over the rows that have both (NaN when
    fewer than 3 rows or either side is constant)."""
    from scipy.stats import spearmanr  # noqa: PLC0415  (scipy.stats: collect jobs never load it)

    out = {}
    for name in estimators:
        pairs = [
            (r[f"ope_{name}"], r[real_key])
            for r in rows
            if math.isfinite(r.get(f"ope_{name}", math.nan)) and math.isfinite(r.get(real_key, math.nan))
        ]
        if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
            out[name] = math.nan
            continue
        out[name] = float(spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic)
    return out
