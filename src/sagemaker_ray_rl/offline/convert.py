"""What a deployed policy logged plus the env's rewards -> an offline dataset.

Two sources: SageMaker Model Monitor data captures of a real-time endpoint (`capture`:
`convert_capture`, `read_captures`), and batch-transform files (`convert_batch_transform`, here).
This module also holds what both share (`write_steps`) and the command line for both.

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

import numpy as np

from sagemaker_ray_rl.offline.collect import CollectResult, make_env
from sagemaker_ray_rl.offline.dataset import DatasetError, episode_rows, write_dataset

JOINED_KEY = "SageMakerOutput"


def read_jsonl(path: Path) -> list[Any]:
    """The JSON values of the non-blank lines of `path`.

    Raises:
        DatasetError: the file is missing or a line is not JSON (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected JSON Lines, one record per line)")
    values = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} line {number}: not JSON ({exc.msg})") from exc
    return values


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
    import gymnasium as gym

    env_config = dict(env_config or {})
    environment = make_env(env, env_config)
    obs_space, act_space = environment.observation_space, environment.action_space
    environment.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise DatasetError(f"the offline dataset holds Discrete actions; {env} has {act_space}")
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

    steps: list[dict[str, Any]] = []
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
        steps.append(
            {
                "obs": decode_observation(obs, obs_space, f"records {where}"),
                "action": decode_action(pred["action"], act_space, f"predictions {where}"),
                "action_prob": float(prob),
                "reward": float(fb["reward"]),
                "next_obs": (
                    decode_observation(fb["next_observation"], obs_space, f"rewards {where} next_observation")
                    if "next_observation" in fb
                    else None
                ),
                "eps_id": None if eps_id is None else str(eps_id),
                "line": line,
                **flags,
            }
        )

    return write_steps(
        Path(output_dir),
        steps,
        env=env,
        env_config=env_config,
        spaces=(obs_space, act_space),
        behaviour={"name": "batch_transform", "predictions": str(predictions)},
    )


def write_steps(
    output_dir: Path,
    steps: list[dict[str, Any]],
    *,
    env: str,
    env_config: Mapping[str, Any],
    spaces: tuple[Any, Any],
    behaviour: Mapping[str, Any],
    extra_info: Mapping[str, Any] | None = None,
) -> CollectResult:
    """Group decoded decisions into episodes and write them with `dataset.write_dataset`.

    Args:
        steps: one dict per decision, in logged order: ``obs`` (float32 array of the observation
            space's shape), ``action`` (int), ``action_prob`` (float in (0, 1], or None when the
            server did not return it), ``reward``, ``terminated``, ``truncated``, ``next_obs``
            (array or None), ``eps_id`` (str or None), ``t`` (int or None: step index inside its
            episode, orders the episode's steps when given) and ``line`` (where it came from, for
            messages: an int or a str).
        spaces: (observation space, action space) recorded in ``dataset_info.json``.
        behaviour: the ``behaviour_policy`` entry of ``dataset_info.json``.
        extra_info: more ``dataset_info.json`` entries.

    Raises:
        DatasetError: an episode that does not end, or a truncated last step without ``next_obs``.
    """
    from ray.rllib.utils.serialization import gym_space_to_dict

    rows: list[dict[str, Any]] = []
    returns: list[float] = []
    for eps_id, episode in _episodes(steps):
        if all(s.get("t") is not None for s in episode):
            episode = sorted(episode, key=lambda s: s["t"])
        last = episode[-1]
        if not (last["terminated"] or last["truncated"]):
            span = (
                f"lines {episode[0]['line']}-{last['line']}"
                if isinstance(last["line"], int)
                else f"{episode[0]['line']} to {last['line']}"
            )
            raise DatasetError(
                f"episode {eps_id} ({span}) does not end: its last "
                'line in rewards needs "terminated": true or "truncated": true'
            )
        if last["next_obs"] is None and last["truncated"] and not last["terminated"]:
            raise DatasetError(
                f"rewards line {last['line']}: a truncated episode's last step needs "
                '"next_observation" (the value bootstraps from it)'
            )
        next_obs = [
            s["next_obs"]
            if s["next_obs"] is not None
            else (episode[k + 1]["obs"] if k + 1 < len(episode) else s["obs"])
            for k, s in enumerate(episode)
        ]
        rows += episode_rows(
            eps_id,
            [s["obs"] for s in episode],
            [s["action"] for s in episode],
            [s["reward"] for s in episode],
            next_obs,
            last["terminated"],
            last["truncated"] and not last["terminated"],
            [s["action_prob"] for s in episode],
        )
        returns.append(sum(s["reward"] for s in episode))
    missing = sum(s["action_prob"] is None for s in steps)
    info = {
        "format": "rllib-columns/parquet",
        "env": env,
        "env_config": dict(env_config),
        "observation_space": gym_space_to_dict(spaces[0]),
        "action_space": gym_space_to_dict(spaces[1]),
        "behaviour_policy": dict(behaviour),
        "behaviour_probabilities": missing == 0,
        "num_episodes": len(returns),
        "num_transitions": len(rows),
        "episode_return_mean": float(np.mean(returns)),
        **(extra_info or {}),
    }
    if missing:
        info["behaviour_probabilities_missing"] = missing
    write_dataset(Path(output_dir), rows, info)
    return CollectResult(Path(output_dir), len(returns), len(rows), float(np.mean(returns)))


def _episodes(steps: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Steps grouped into episodes: by ``eps_id`` (first-seen order) when every step has one, else
    consecutive steps up to each terminated/truncated one."""
    if all(s["eps_id"] is not None for s in steps):
        groups: dict[str, list[dict[str, Any]]] = {}
        for s in steps:
            groups.setdefault(s["eps_id"], []).append(s)
        return list(groups.items())
    if any(s["eps_id"] is not None for s in steps):
        raise DatasetError("eps_id is on some lines but not all: give it on every line or on none")
    out, current = [], []
    for s in steps:
        current.append(s)
        if s["terminated"] or s["truncated"]:
            out.append((f"{len(out):06d}", current))
            current = []
    if current:
        out.append((f"{len(out):06d}", current))
    return out


def decode_observation(value: Any, space: Any, where: str) -> np.ndarray:
    """A logged observation as a float32 array of `space`'s shape.

    Raises:
        DatasetError: naming `where` (file and line) when it has another shape or is not numeric.
    """
    try:
        obs = np.asarray(value, dtype=np.float32).reshape(space.shape)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: expected an observation of shape {space.shape}, got {value!r}") from exc
    return obs


def decode_action(value: Any, space: Any, where: str) -> int:
    """A logged Discrete action as an int.

    Raises:
        DatasetError: naming `where` when it is not an action of `space`.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not space.contains(np.int64(value)):
        raise DatasetError(f"{where}: expected an action in {space}, got {value!r}")
    return int(value)


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
    from sagemaker_ray_rl.offline.capture import convert_capture  # it imports this module

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
