"""The offline dataset format: RLlib's column format in Parquet, plus what off-policy evaluation needs.

One row per transition, with RLlib's column names (`ray.rllib.core.columns.Columns`), so RLlib's own
offline reader (``config.offline_data(input_=DIR)`` with ``input_read_episodes=False``, i.e.
`ray.data.read_parquet` + `OfflinePreLearner`) reads it unchanged:

==================  =========================  ===============================================
column              type                       meaning
==================  =========================  ===============================================
``eps_id``          string                     episode id (rows of one episode are contiguous)
``t``               int64                      step index inside the episode, from 0
``obs``             list<float32>              observation before the action (flattened Box)
``actions``         int64 | list<float32>      the action taken (Discrete | Box, as sent to the env)
``rewards``         float32                    reward received
``new_obs``         list<float32>              observation after the action
``terminateds``     bool                       the episode ended in a terminal state
``truncateds``      bool                       the episode was cut by a time limit
``action_prob``     float32                    behaviour policy's probability of ``actions``
                                               (Box: its probability *density*, may exceed 1);
                                               NaN where the log did not record it (endpoint
                                               captures without ``action_prob``)
``action_logp``     float32                    its natural log (RLlib's ``Columns.ACTION_LOGP``)
==================  =========================  ===============================================

Observations are stored unpacked (RLlib's *writer* LZ4-packs ``obs``/``new_obs`` by default; its
reader only unpacks the columns named in ``input_compress_columns``, empty by default).

One row is one `Step`: every writer (`collect`, the converters of `logged`, `capture` and
`convert`) builds its transitions as `Step` records and writes `Step.row`.

Beside the Parquet files, ``dataset_info.json`` records the spaces (RLlib's
`gym_space_to_dict`), the env id/config when known, and the behaviour policy, so that offline
training needs no env to know the spaces.

Why our own writer instead of RLlib's ``OfflineSingleAgentEnvRunner`` (``output=...``): its
episode format needs ``msgpack_numpy`` (not installed by ``ray[rllib]``), and neither of its formats
records the behaviour policy's action *probability* for uniform-random or externally deployed
policies. pyarrow (a Ray dependency) writes the same columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ray.rllib.utils.serialization import gym_space_from_dict

from sagemaker_ray_rl.contract.errors import SageMakerRayRLError

INFO_FILE = "dataset_info.json"
PARQUET_GLOB = "*.parquet"
COLUMNS = (
    "eps_id",
    "t",
    "obs",
    "actions",
    "rewards",
    "new_obs",
    "terminateds",
    "truncateds",
    "action_prob",
    "action_logp",
)


class DatasetError(SageMakerRayRLError):
    """An offline dataset is missing, malformed, or does not fit the policy's spaces."""


@dataclass(frozen=True)
class Step:
    """One transition: the columns of one dataset row (`COLUMNS`; ``action_logp`` follows from
    ``action_prob``), named as the columns are.

    A writer that learns a step's place in its episode only later (`collect` steps envs side by
    side; logged decisions are grouped into episodes after all are read) leaves ``eps_id``, ``t``
    and ``new_obs`` None and fills them with `episode_steps` (or `dataclasses.replace`).

    Attributes:
        eps_id: episode id, or None until known.
        t: step index inside the episode, from 0, or None until known (a logged decision's ``t``
            orders its episode's steps before they are numbered).
        obs: observation before the action (array-like of the observation space's shape).
        actions: the action taken, as sent to the env: an int (Discrete) or a float vector (Box).
        rewards: reward received.
        new_obs: observation after the action, or None until known.
        terminateds: the episode ended in a terminal state at this step.
        truncateds: the episode was cut by a time limit at this step.
        action_prob: the behaviour policy's probability of ``actions`` (Box: its density), or
            None where the log did not record it (stored as NaN).
    """

    eps_id: str | None
    t: int | None
    obs: Any
    actions: Any
    rewards: float
    new_obs: Any
    terminateds: bool = False
    truncateds: bool = False
    action_prob: float | None = None

    @property
    def action_logp(self) -> float:
        """The natural log of ``action_prob`` (NaN when it is None)."""
        return float(np.log(np.nan if self.action_prob is None else float(self.action_prob)))

    def row(self, *, continuous: bool = False) -> dict[str, Any]:
        """The row written to the dataset (`write_dataset`): column name -> value, every column of
        `COLUMNS`. Observations are flattened to float32 lists; actions are an int, or with
        `continuous` (Box) a flattened float32 list.

        Raises:
            DatasetError: ``action_prob`` is out of range: not in (0, 1] (a probability), or with
                `continuous` not a finite density > 0.
            ValueError: ``eps_id``, ``t`` or ``new_obs`` is still None.
        """
        if self.eps_id is None or self.t is None or self.new_obs is None:
            raise ValueError(f"step {self.t} of episode {self.eps_id}: eps_id, t and new_obs must be known to write it")
        prob = np.nan if self.action_prob is None else float(self.action_prob)
        if self.action_prob is not None and not (0.0 < prob < np.inf if continuous else 0.0 < prob <= 1.0):
            expected = "a finite density > 0" if continuous else "in (0, 1]"
            raise DatasetError(f"episode {self.eps_id} step {self.t}: action_prob must be {expected}, got {prob}")
        return {
            "eps_id": str(self.eps_id),
            "t": int(self.t),
            "obs": np.asarray(self.obs, dtype=np.float32).ravel().tolist(),
            "actions": (
                np.asarray(self.actions, dtype=np.float32).ravel().tolist() if continuous else int(self.actions)
            ),
            "rewards": float(self.rewards),
            "new_obs": np.asarray(self.new_obs, dtype=np.float32).ravel().tolist(),
            "terminateds": bool(self.terminateds),
            "truncateds": bool(self.truncateds),
            "action_prob": prob,
            "action_logp": self.action_logp,
        }


def episode_steps(eps_id: str, steps: Sequence[Step], terminated: bool, truncated: bool) -> list[Step]:
    """The steps of one finished episode as it is stored: `eps_id` on each, numbered from 0 in the
    given order, and only the last one `terminated` / `truncated`.

    Raises:
        DatasetError: `steps` is empty.
    """
    if not steps:
        raise DatasetError(f"episode {eps_id}: no steps")
    last = len(steps) - 1
    return [
        replace(
            step,
            eps_id=str(eps_id),
            t=t,
            terminateds=bool(terminated and t == last),
            truncateds=bool(truncated and t == last),
        )
        for t, step in enumerate(steps)
    ]


@dataclass(frozen=True)
class Transitions:
    """A whole offline dataset in memory, one row per transition, episodes contiguous and in step order.

    Attributes:
        obs: float32, shape ``(n, obs_dim)``.
        actions: int64, shape ``(n,)`` (Discrete), or float32, shape ``(n, act_dim)`` (Box, the
            actions as sent to the env).
        rewards: float32, shape ``(n,)``.
        next_obs: float32, shape ``(n, obs_dim)``.
        terminateds: bool, shape ``(n,)``.
        truncateds: bool, shape ``(n,)``.
        action_prob: float32, shape ``(n,)``: behaviour probability of ``actions`` (Box: density);
            NaN where unknown (see `has_behaviour_probabilities`).
        episode_starts: int64, shape ``(num_episodes + 1,)``: row offsets; episode ``i`` is rows
            ``episode_starts[i]:episode_starts[i+1]``.
        eps_ids: the episode ids, in order.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminateds: np.ndarray
    truncateds: np.ndarray
    action_prob: np.ndarray
    episode_starts: np.ndarray
    eps_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def continuous(self) -> bool:
        """Whether the actions are Box vectors (float32 ``(n, act_dim)``) rather than Discrete ints."""
        return self.actions.ndim == 2

    @property
    def has_behaviour_probabilities(self) -> bool:
        """Whether every row has its behaviour probability (importance-sampling estimators need them;
        a dataset converted from endpoint captures without ``action_prob`` has NaN there)."""
        return not bool(np.isnan(self.action_prob).any())

    @property
    def num_episodes(self) -> int:
        return len(self.eps_ids)

    @property
    def episode_index(self) -> np.ndarray:
        """int64, shape ``(n,)``: which episode each row belongs to."""
        return np.repeat(np.arange(self.num_episodes), np.diff(self.episode_starts))

    @property
    def step_index(self) -> np.ndarray:
        """int64, shape ``(n,)``: each row's step inside its episode."""
        return np.arange(len(self)) - np.repeat(self.episode_starts[:-1], np.diff(self.episode_starts))

    def episode_returns(self, gamma: float = 1.0) -> np.ndarray:
        """float64, shape ``(num_episodes,)``: each episode's (discounted) return."""
        discounted = self.rewards.astype(np.float64) * gamma**self.step_index
        return np.add.reduceat(discounted, self.episode_starts[:-1]) if len(self) else np.zeros(0)


def episode_rows(
    eps_id: str,
    obs: Iterable[Any],
    actions: Iterable[Any],
    rewards: Iterable[float],
    next_obs: Iterable[Any],
    terminated: bool,
    truncated: bool,
    action_prob: Iterable[float],
    *,
    continuous: bool = False,
) -> list[dict[str, Any]]:
    """The rows (`Step.row`) of one finished episode given column by column; only its last row
    carries ``terminated``/``truncated`` (`episode_steps`).

    `continuous`: Box actions (each a float vector, stored flattened as list<float32>) whose
    `action_prob` is a probability density (> 0, may exceed 1); otherwise int actions whose
    `action_prob` is a probability in (0, 1]. A None probability (not logged) is stored as NaN,
    as is its log.

    Raises:
        DatasetError: the sequences differ in length, or a probability (density) is out of range.
    """
    obs, actions, rewards, next_obs, action_prob = map(list, (obs, actions, rewards, next_obs, action_prob))
    n = len(actions)
    if n == 0 or not all(len(x) == n for x in (obs, rewards, next_obs, action_prob)):
        raise DatasetError(
            f"episode {eps_id}: obs/actions/rewards/new_obs/action_prob must have one entry per step (got {n} actions)"
        )
    steps = [Step(eps_id, t, obs[t], actions[t], rewards[t], next_obs[t], action_prob=action_prob[t]) for t in range(n)]
    return [step.row(continuous=continuous) for step in episode_steps(eps_id, steps, terminated, truncated)]


def write_dataset(
    path: Path,
    rows: list[dict[str, Any]],
    info: Mapping[str, Any],
    *,
    rows_per_file: int = 50_000,
) -> list[Path]:
    """Write transition rows (`Step.row`) as Parquet files plus ``dataset_info.json`` in `path`.

    Args:
        path: output directory (created); existing ``part-*.parquet`` files there are replaced.
        rows: the transitions, episodes contiguous.
        info: metadata; must hold ``observation_space`` and ``action_space`` as
            `gym_space_to_dict` dicts.
        rows_per_file: rows per Parquet file.

    Returns:
        The Parquet files written.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("part-*.parquet"):
        old.unlink()
    continuous = bool(rows) and isinstance(rows[0]["actions"], list)
    schema = pa.schema(
        [
            ("eps_id", pa.string()),
            ("t", pa.int64()),
            ("obs", pa.list_(pa.float32())),
            ("actions", pa.list_(pa.float32()) if continuous else pa.int64()),
            ("rewards", pa.float32()),
            ("new_obs", pa.list_(pa.float32())),
            ("terminateds", pa.bool_()),
            ("truncateds", pa.bool_()),
            ("action_prob", pa.float32()),
            ("action_logp", pa.float32()),
        ]
    )
    files = []
    for i, start in enumerate(range(0, len(rows), rows_per_file)):
        table = pa.Table.from_pylist(rows[start : start + rows_per_file], schema=schema)
        file = path / f"part-{i:05d}.parquet"
        pq.write_table(table, file)
        files.append(file)
    (path / INFO_FILE).write_text(json.dumps(dict(info), indent=2) + "\n")
    return files


def read_info(path: Path) -> dict[str, Any]:
    """``dataset_info.json`` of a dataset directory, or {} when there is none."""
    file = Path(path) / INFO_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def dataset_spaces(path: Path) -> tuple[gym.Space, gym.Space] | None:
    """(observation_space, action_space) from ``dataset_info.json``, or None when not recorded."""
    info = read_info(path)
    if "observation_space" in info and "action_space" in info:
        return gym_space_from_dict(info["observation_space"]), gym_space_from_dict(info["action_space"])
    return None


def read_dataset(path: Path) -> Transitions:
    """Read every Parquet file under `path` (a directory, searched recursively, or one file).

    Rows are grouped by ``eps_id`` and ordered by ``t``; episodes keep their first-seen order.

    Raises:
        DatasetError: no Parquet files, or a required column is missing.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob(PARQUET_GLOB))
    if not files:
        raise DatasetError(f"no Parquet files in {path}: expected the output of collect mode (part-*.parquet)")
    tables = [pq.read_table(f) for f in files]
    missing = [c for c in COLUMNS if c != "action_logp" and c not in tables[0].column_names]
    if missing:
        raise DatasetError(f"{files[0]} lacks the columns {missing}; an offline dataset needs {list(COLUMNS)}")
    table = pa.concat_tables([t.select([c for c in COLUMNS if c in t.column_names]) for t in tables])
    eps = np.asarray(table.column("eps_id").to_pylist(), dtype=object)
    steps = table.column("t").to_numpy()
    _, first_seen, inverse = np.unique(eps, return_index=True, return_inverse=True)
    episode_order = np.argsort(np.argsort(first_seen))[inverse]
    order = np.lexsort((steps, episode_order))
    ids_sorted = eps[order]
    boundaries = np.flatnonzero(ids_sorted[1:] != ids_sorted[:-1]) + 1
    starts = np.concatenate([[0], boundaries, [len(order)]]).astype(np.int64)

    def col(name: str, dtype: Any) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype)[order]

    def vec(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_pylist(), dtype=np.float32)[order]

    continuous = pa.types.is_list(table.schema.field("actions").type)
    return Transitions(
        obs=vec("obs"),
        actions=vec("actions") if continuous else col("actions", np.int64),
        rewards=col("rewards", np.float32),
        next_obs=vec("new_obs"),
        terminateds=col("terminateds", bool),
        truncateds=col("truncateds", bool),
        action_prob=col("action_prob", np.float32),
        episode_starts=starts,
        eps_ids=tuple(str(e) for e in ids_sorted[starts[:-1]]),
    )
