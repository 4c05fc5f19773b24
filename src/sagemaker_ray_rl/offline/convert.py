"""What a deployed policy logged plus the env's rewards -> an offline dataset.

Two sources: SageMaker Model Monitor data captures of a real-time endpoint (`capture`:
`convert_capture`, `read_captures`), and batch-transform files (`convert_batch_transform`, here).
What both share (decoding, grouping into episodes, `write_steps`) is `logged`'s; this module also
holds the command line for both.

**Batch transform.** A live system that acts through a SageMaker batch transform (or the endpoint) with
``"explore": true, "outputs": ["action_prob"]`` leaves three JSON Lines files, one line per
decision, in the same order:

- ``records``: the batch-transform input, one record per line: a bare observation or
  ``{"observation": obs, ...}`` (extra keys such as ``eps_id`` are ignored by the server and used
  here);
- ``predictions``: the batch-transform output (``<records>.out``, ``AssembleWith=Line``): one
  ``{"action": a, "action_prob": p, ...}`` per record. With ``JoinSource=Input`` each line is the
  record itself plus ``"SageMakerOutput": {...}``; then ``records`` may be omitted;
- ``rewards``: what the system observed after each action: ``{"reward": r, "terminated": bool,
  "truncated": bool}``, optionally ``"eps_id"`` (else the record's, else episodes are consecutive
  lines ending at ``terminated``/``truncated``) and ``"next_observation"`` (needed on the last step
  of a truncated episode; otherwise the next record of the same episode is the next observation).

Both turn into the dataset `collect` writes (`dataset.write_dataset`), so the next offline job reads
it as an input channel. Own code because no library maps SageMaker capture or batch-transform files
to RLlib's offline columns (``sagemaker.model_monitor`` only lists capture files in S3). The request
and answer bodies are parsed here, not by `serving.codecs`: the import layers keep ``offline`` and
``serving`` apart, and the unit tests build the bodies with the server's own codecs.

    python -m sagemaker_ray_rl.offline.convert --records in.jsonl --predictions in.jsonl.out \\
        --rewards rewards.jsonl --out DIR --env CartPole-v1 --env-config '{"max_episode_steps": 200}'
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sagemaker_ray_rl.offline.capture import convert_capture
from sagemaker_ray_rl.offline.collect import CollectResult
from sagemaker_ray_rl.offline.dataset import DatasetError, Step
from sagemaker_ray_rl.offline.logged import (
    Logged,
    decode_action,
    decode_observation,
    logged_spaces,
    read_jsonl,
    write_steps,
)

JOINED_KEY = "SageMakerOutput"


def convert_batch_transform(
    output_dir: Path,
    *,
    predictions: Path,
    rewards: Path,
    records: Path | None = None,
    env: str,
    env_config: Mapping[str, Any] | None = None,
) -> CollectResult:
    """Write the dataset of the batch-transform files (see the module docstring) to `output_dir`.

    Args:
        output_dir: dataset directory (Parquet + ``dataset_info.json``).
        predictions: the transform output, ``{"action", "action_prob"}`` per line (or joined lines).
        rewards: ``{"reward", "terminated", "truncated"[, "eps_id", "next_observation"]}`` per line.
        records: the transform input; None when `predictions` are joined with their input.
        env, env_config: the env the system is (its spaces go to ``dataset_info.json``; it is not stepped).

    Returns:
        A `CollectResult` (episodes, transitions, mean undiscounted return).

    Raises:
        DatasetError: files of different lengths, a missing ``action_prob`` (request
            ``"outputs": ["action_prob"]``), an observation or action outside the env's spaces, an
            episode whose last line is neither terminated nor truncated, or a truncated last step
            without ``next_observation``.
    """
    env_config = dict(env_config or {})
    obs_space, act_space = logged_spaces(env, env_config)
    preds = read_jsonl(predictions)
    if records is None:
        if not all(isinstance(p, dict) and JOINED_KEY in p for p in preds):
            raise DatasetError(
                f"{predictions}: without records, every line must be an input record joined with "
                f"its {JOINED_KEY!r} (batch transform JoinSource=Input)"
            )
        recs, preds = preds, [p[JOINED_KEY] for p in preds]
    else:
        recs = read_jsonl(records)
    feedback = read_jsonl(rewards)
    if not len(recs) == len(preds) == len(feedback):
        raise DatasetError(
            f"records, predictions and rewards must have one line per decision; got "
            f"{len(recs)}, {len(preds)} and {len(feedback)} lines"
        )
    if not recs:
        raise DatasetError(f"{predictions}: no records")

    steps: list[Logged] = []
    for line, (rec, pred, fb) in enumerate(zip(recs, preds, feedback), start=1):
        where = f"line {line}"
        obs = rec["observation"] if isinstance(rec, dict) and "observation" in rec else rec
        if not isinstance(pred, dict) or "action" not in pred:
            raise DatasetError(f'predictions {where}: expected {{"action": a, "action_prob": p}}, got {pred!r}')
        if "action_prob" not in pred:
            raise DatasetError(
                f'predictions {where} has no action_prob: send the records with "outputs": '
                '["action_prob"] (and "explore": true for a stochastic behaviour policy)'
            )
        prob = pred["action_prob"]
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 < prob <= 1.0:
            raise DatasetError(f"predictions {where}: action_prob must be a number in (0, 1], got {prob!r}")
        if (
            not isinstance(fb, dict)
            or not isinstance(fb.get("reward"), (int, float))
            or isinstance(fb.get("reward"), bool)
        ):
            raise DatasetError(
                f'rewards {where}: expected {{"reward": number, "terminated": bool, "truncated": bool}}, got {fb!r}'
            )
        flags = {k: fb.get(k, False) for k in ("terminated", "truncated")}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise DatasetError(f"rewards {where}: terminated and truncated must be true or false, got {flags}")
        eps_id = fb.get("eps_id", rec.get("eps_id") if isinstance(rec, dict) else None)
        step = Step(
            eps_id=None if eps_id is None else str(eps_id),
            t=None,
            obs=decode_observation(obs, obs_space, f"records {where}"),
            actions=decode_action(pred["action"], act_space, f"predictions {where}"),
            rewards=float(fb["reward"]),
            new_obs=(
                decode_observation(fb["next_observation"], obs_space, f"rewards {where} next_observation")
                if "next_observation" in fb
                else None
            ),
            terminateds=flags["terminated"],
            truncateds=flags["truncated"],
            action_prob=float(prob),
        )
        steps.append((step, line))

    return write_steps(
        Path(output_dir),
        steps,
        env=env,
        env_config=env_config,
        spaces=(obs_space, act_space),
        behaviour={"name": "batch_transform", "predictions": str(predictions)},
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring (``--captures`` or ``--predictions``)."""
    parser = argparse.ArgumentParser(
        description="Endpoint data captures, or batch-transform JSON Lines, + rewards -> offline dataset"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--captures", type=Path, nargs="+", help="SageMaker data-capture .jsonl files or directories of them"
    )
    source.add_argument("--predictions", type=Path, help="batch-transform output (.out)")
    parser.add_argument(
        "--rewards",
        type=Path,
        required=True,
        help="one {reward, terminated, truncated} line per decision (captures: with inferenceId or eventId)",
    )
    parser.add_argument("--records", type=Path, default=None, help="batch-transform input (omit for JoinSource=Input)")
    parser.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--env", required=True, help="Gymnasium id of the system (for its spaces)")
    parser.add_argument("--env-config", type=json.loads, default={}, help="JSON object of env keyword arguments")
    parser.add_argument(
        "--csv-columns",
        default="action,action_prob",
        help="captures: meaning of the columns of text/csv answers (default: action,action_prob)",
    )
    args = parser.parse_args(argv)
    try:
        if args.captures:
            result = convert_capture(
                args.out,
                captures=args.captures,
                rewards=args.rewards,
                env=args.env,
                env_config=args.env_config,
                csv_columns=tuple(c.strip() for c in args.csv_columns.split(",")),
            )
        else:
            result = convert_batch_transform(
                args.out,
                predictions=args.predictions,
                rewards=args.rewards,
                records=args.records,
                env=args.env,
                env_config=args.env_config,
            )
    except DatasetError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(
        f"wrote {result.num_episodes} episodes ({result.num_transitions} transitions, mean return "
        f"{result.episode_return_mean:.2f}) to {result.path}"
    )


if __name__ == "__main__":
    main()
