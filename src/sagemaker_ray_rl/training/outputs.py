"""What a training job leaves for the user besides the model: tables, curves and TensorBoard files.

Into the output data dir (``/opt/ml/output/data``, uploaded as ``output.tar.gz``):

- ``trials.csv``: one row per trial, sorted by final mean episode return (best first), with the
  grid-searched values, iterations, env steps, status and error;
- ``progress.csv``, ``result.json``, ``params.json``: Tune's own files of the best trial;
- ``training_curve.png``: episode return min/mean/max per iteration of the best trial (matplotlib).

Into SageMaker's TensorBoard output dir (``/opt/ml/output/tensorboard``, the default local path of the
estimator's ``TensorBoardOutputConfig``): every trial's TensorBoard event files (written by Tune's
``TBXLoggerCallback``), one subdirectory per trial.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Columns of Tune's progress.csv the curve is drawn from.
RETURN_COLUMNS = (
    "env_runners/episode_return_min",
    "env_runners/episode_return_mean",
    "env_runners/episode_return_max",
)
TUNE_FILES = ("progress.csv", "result.json", "params.json")


@dataclass(frozen=True)
class TrialSummary:
    """One trial of an experiment, as ``trials.csv`` shows it.

    Attributes:
        trial_id: Tune's trial id.
        params: the values that differ between trials (grid search), config key -> value.
        episode_return_mean: the final ``env_runners/episode_return_mean``; NaN when unknown.
        training_iteration: iterations run.
        timesteps_total: env steps sampled.
        status: ``TERMINATED`` or ``ERROR``.
        error: the error's one-line summary, or "".
        path: the trial's directory (Tune's files, checkpoints).
    """

    trial_id: str
    params: dict[str, Any] = field(default_factory=dict)
    episode_return_mean: float = math.nan
    training_iteration: int = 0
    timesteps_total: int = 0
    status: str = "TERMINATED"
    error: str = ""
    path: Path | None = None


def sort_trials(trials: Sequence[TrialSummary]) -> list[TrialSummary]:
    """Best first: by final mean episode return, NaN (and errors) last."""
    return sorted(trials, key=lambda t: (math.isnan(t.episode_return_mean), -_or0(t.episode_return_mean)))


def write_trials_csv(trials: Sequence[TrialSummary], path: Path) -> Path:
    """Write `trials` (sorted best first) as CSV to `path`; returns `path`."""
    params = sorted({k for t in trials for k in t.params})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "trial_id",
                *params,
                "episode_return_mean",
                "training_iteration",
                "timesteps_total",
                "status",
                "error",
            ]
        )
        for rank, t in enumerate(sort_trials(trials), start=1):
            writer.writerow(
                [
                    rank,
                    t.trial_id,
                    *(t.params.get(k, "") for k in params),
                    t.episode_return_mean,
                    t.training_iteration,
                    t.timesteps_total,
                    t.status,
                    t.error,
                ]
            )
    return path


def plot_training_curve(progress_csv: Path, png: Path, title: str = "") -> Path:
    """Draw episode return min/mean/max against the training iteration from Tune's progress.csv.

    The mean is a line, min-max a shaded band; x is ``training_iteration``, y the episode return.

    Raises:
        ValueError: progress.csv has no ``training_iteration`` or episode return columns.
    """
    import matplotlib  # noqa: PLC0415  (the Agg backend only when a plot is drawn, never at import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (after matplotlib.use)

    rows = list(csv.DictReader(progress_csv.open()))
    if not rows or "training_iteration" not in rows[0] or RETURN_COLUMNS[1] not in rows[0]:
        raise ValueError(f"{progress_csv} has no training_iteration and {RETURN_COLUMNS[1]} columns")
    x = [int(r["training_iteration"]) for r in rows]
    low, mean, high = ([_float(r.get(c)) for r in rows] for c in RETURN_COLUMNS)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.fill_between(x, low, high, alpha=0.25, label="min-max")
    ax.plot(x, mean, marker="o", markersize=3, label="mean")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("episode return")
    ax.set_title(title or "Episode return per training iteration")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def write_outputs(
    trials: Sequence[TrialSummary], best: TrialSummary, output_data_dir: Path, tensorboard_dir: Path
) -> list[Path]:
    """Write everything in the module docstring; returns the files written.

    A missing Tune file (a trial that failed before its first result) is skipped, not an error: these
    outputs must never fail a job whose model was exported.
    """
    written = [write_trials_csv(trials, output_data_dir / "trials.csv")]
    if best.path is not None:
        for name in TUNE_FILES:
            source = best.path / name
            if source.exists():
                written.append(Path(shutil.copy2(source, output_data_dir / name)))
        progress = best.path / "progress.csv"
        if progress.exists() and progress.stat().st_size > 0:
            try:
                written.append(
                    plot_training_curve(
                        progress,
                        output_data_dir / "training_curve.png",
                        f"Episode return per iteration (trial {best.trial_id})",
                    )
                )
            except ValueError as exc:
                print(f"No training curve: {exc}", flush=True)
    for trial in trials:
        if trial.path is None:
            continue
        for event_file in trial.path.glob("events.out.tfevents.*"):
            target = tensorboard_dir / trial.trial_id / event_file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(Path(shutil.copy2(event_file, target)))
    return written


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _or0(value: float) -> float:
    return 0.0 if math.isnan(value) else value
