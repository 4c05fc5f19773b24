"""Per-checkpoint OPE report: metric lines, ``ope.csv``, ``ope.png`` and ``selection.json``.

Metric lines use the ``name: value`` form of `sagemaker_ray_rl.contract.metrics` so SageMaker metric
definitions can read them (regex ``ope_dr:?\\s*(<float>)`` etc.).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sagemaker_ray_rl.contract.metrics import metric_definitions

CSV_FILE = "ope.csv"
PLOT_FILE = "ope.png"
SELECTION_FILE = "selection.json"
#: Printed per checkpoint, in this order, when present and finite.
METRIC_NAMES = (
    "run",
    "offline_updates",
    "ope_is",
    "ope_wis",
    "ope_pdis",
    "ope_dm",
    "ope_dr",
    "ope_mb",
    "eval_return_mean",
)
METRIC_DEFINITIONS = metric_definitions(METRIC_NAMES)


def metric_lines(row: Mapping[str, Any]) -> list[str]:
    """``name: value`` lines for one checkpoint's row; missing or non-finite values are left out."""
    lines = []
    for name in METRIC_NAMES:
        value = row.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            lines.append(f"{name}: {value:.6g}")
    return lines


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """One row per checkpoint, columns in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_plot(path: Path, rows: Sequence[Mapping[str, Any]], estimators: Sequence[str]) -> Path | None:
    """OPE estimates (and real returns when known) against updates, as in seed 004's per-epoch plot.

    Returns None, writing nothing, when matplotlib is not installed (it is not a dependency of
    ``ray[rllib]``); the CSV holds the same figures.
    """
    try:
        import matplotlib  # noqa: PLC0415  (optional; the Agg backend only when a plot is drawn)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415  (after matplotlib.use)
    except ImportError:
        return None
    # runs one after another on the x axis: run r's updates start where run r-1's ended
    per_run = max(r["offline_updates"] for r in rows)
    x = [r.get("run", 0) * per_run + r["offline_updates"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in estimators:
        ax.plot(x, [r.get(f"ope_{name}", math.nan) for r in rows], marker="o", label=f"ope_{name}")
    if any(math.isfinite(r.get("eval_return_mean", math.nan)) for r in rows):
        ax2 = ax.twinx()
        ax2.plot(x, [r.get("eval_return_mean", math.nan) for r in rows], "k--", marker="s", label="real return")
        ax2.set_ylabel("real-env mean return (undiscounted)")
        ax2.legend(loc="lower right")
    ax.set_xlabel("gradient updates (training runs one after another)")
    ax.set_ylabel("OPE estimate (discounted)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_selection(path: Path, selection: Mapping[str, Any]) -> Path:
    """``selection.json``: the chosen checkpoint, the metric, and the rank correlations."""
    path.write_text(json.dumps(dict(selection), indent=2, default=_json_float) + "\n")
    return path


def _json_float(value: Any) -> Any:
    return str(value)
