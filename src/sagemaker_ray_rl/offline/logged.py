"""What a deployed policy logged, decoded and written as an offline dataset: the part both
converters share (`capture` for endpoint data captures, `convert` for batch-transform files).

Each converter reads its own files into decisions, one `dataset.Step` per decision with what the
log holds (the observation, the action, its probability when recorded, the reward line's reward
and flags, its ``eps_id``, ``t`` and ``next_observation`` when given), paired with where it was
logged (for messages); `write_steps` groups them into episodes and writes the dataset `collect`
writes, so the next offline job reads it as an input channel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.utils.serialization import gym_space_to_dict

from sagemaker_ray_rl.offline.collect import CollectResult, make_env
from sagemaker_ray_rl.offline.dataset import DatasetError, Step, episode_steps, write_dataset

#: A decoded decision and where it was logged: a line number, or ``<file> line <n>`` text.
Logged = tuple[Step, int | str]


def numbered_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, JSON value) of the non-blank lines of `path`.

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
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} line {number}: not JSON ({exc.msg})") from exc
    return values


def read_jsonl(path: Path) -> list[Any]:
    """The JSON values of the non-blank lines of `path` (`numbered_jsonl` without the numbers).

    Raises:
        DatasetError: the file is missing or a line is not JSON (names the line).
    """
    return [value for _, value in numbered_jsonl(path)]


def logged_spaces(env: str, env_config: Mapping[str, Any]) -> tuple[gym.Space, gym.spaces.Discrete]:
    """(observation space, action space) of the env the logging system is (`collect.make_env`;
    built for its spaces, never stepped).

    Raises:
        DatasetError: the action space is not Discrete (the converted datasets hold Discrete actions).
    """
    environment = make_env(env, env_config)
    obs_space, act_space = environment.observation_space, environment.action_space
    environment.close()
    if not isinstance(act_space, gym.spaces.Discrete):
        raise DatasetError(f"the offline dataset holds Discrete actions; {env} has {act_space}")
    return obs_space, act_space


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


def write_steps(
    output_dir: Path,
    steps: Sequence[Logged],
    *,
    env: str,
    env_config: Mapping[str, Any],
    spaces: tuple[Any, Any],
    behaviour: Mapping[str, Any],
    extra_info: Mapping[str, Any] | None = None,
) -> CollectResult:
    """Group decoded decisions into episodes and write them with `dataset.write_dataset`.

    Args:
        steps: one (`Step`, where) per decision, in logged order. Each step holds ``obs`` (float32
            array of the observation space's shape), ``actions`` (int), ``action_prob`` (float in
            (0, 1], or None when the server did not return it), ``rewards``, ``terminateds``,
            ``truncateds``, ``new_obs`` (the logged next observation, or None: the next step's
            observation), ``eps_id`` (str or None) and ``t`` (int or None: orders the episode's
            steps when every step of it has one); where is a line number or text, for messages.
        spaces: (observation space, action space) recorded in ``dataset_info.json``.
        behaviour: the ``behaviour_policy`` entry of ``dataset_info.json``.
        extra_info: more ``dataset_info.json`` entries.

    Raises:
        DatasetError: an episode that does not end, or a truncated last step without ``new_obs``.
    """
    rows: list[dict[str, Any]] = []
    returns: list[float] = []
    for eps_id, episode in _episodes(steps):
        if all(step.t is not None for step, _ in episode):
            episode = sorted(episode, key=lambda logged: logged[0].t)
        (last, last_line), first_line = episode[-1], episode[0][1]
        if not (last.terminateds or last.truncateds):
            span = f"lines {first_line}-{last_line}" if isinstance(last_line, int) else f"{first_line} to {last_line}"
            raise DatasetError(
                f"episode {eps_id} ({span}) does not end: its last "
                'line in rewards needs "terminated": true or "truncated": true'
            )
        if last.new_obs is None and last.truncateds and not last.terminateds:
            raise DatasetError(
                f"rewards line {last_line}: a truncated episode's last step needs "
                '"next_observation" (the value bootstraps from it)'
            )
        filled = [
            step
            if step.new_obs is not None
            else replace(step, new_obs=episode[k + 1][0].obs if k + 1 < len(episode) else step.obs)
            for k, (step, _) in enumerate(episode)
        ]
        stored = episode_steps(eps_id, filled, last.terminateds, last.truncateds and not last.terminateds)
        rows += [step.row() for step in stored]
        returns.append(sum(step.rewards for step in stored))
    missing = sum(step.action_prob is None for step, _ in steps)
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


def _episodes(steps: Sequence[Logged]) -> list[tuple[str, list[Logged]]]:
    """Decisions grouped into episodes: by ``eps_id`` (first-seen order) when every step has one,
    else consecutive steps up to each terminated/truncated one."""
    if all(step.eps_id is not None for step, _ in steps):
        groups: dict[str, list[Logged]] = {}
        for logged in steps:
            groups.setdefault(logged[0].eps_id, []).append(logged)
        return list(groups.items())
    if any(step.eps_id is not None for step, _ in steps):
        raise DatasetError("eps_id is on some lines but not all: give it on every line or on none")
    out: list[tuple[str, list[Logged]]] = []
    current: list[Logged] = []
    for logged in steps:
        current.append(logged)
        if logged[0].terminateds or logged[0].truncateds:
            out.append((f"{len(out):06d}", current))
            current = []
    if current:
        out.append((f"{len(out):06d}", current))
    return out
