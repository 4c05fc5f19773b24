"""`dataset.Step`: one transition, the row every dataset writer stores (`collect`, both converters)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sagemaker_ray_rl.offline.dataset import COLUMNS, DatasetError, Step, episode_rows, episode_steps


def test_a_row_has_every_column_in_order_with_the_stored_types():
    row = Step("7", 2, np.array([1, 2]), np.int64(1), 0.5, [[3.0], [4.0]], True, False, 0.25).row()
    assert list(row) == list(COLUMNS)
    assert row == {
        "eps_id": "7",
        "t": 2,
        "obs": [1.0, 2.0],
        "actions": 1,
        "rewards": 0.5,
        "new_obs": [3.0, 4.0],
        "terminateds": True,
        "truncateds": False,
        "action_prob": 0.25,
        "action_logp": math.log(0.25),
    }
    assert type(row["actions"]) is int and type(row["t"]) is int
    box = Step("7", 0, [0.0], np.array([[0.5, -1.0]]), 1.0, [0.0], action_prob=3.0).row(continuous=True)
    assert box["actions"] == [0.5, -1.0] and box["action_logp"] == pytest.approx(math.log(3.0))


def test_an_unrecorded_probability_is_stored_as_nan():
    step = Step("a", 0, [0.0], 1, 1.0, [0.0])
    assert math.isnan(step.action_logp)
    row = step.row()
    assert math.isnan(row["action_prob"]) and math.isnan(row["action_logp"])


def test_a_step_is_written_only_once_placed_and_with_a_probability_in_range():
    with pytest.raises(ValueError, match="must be known"):
        Step(None, None, [0.0], 1, 1.0, [0.0]).row()
    with pytest.raises(ValueError, match="must be known"):
        Step("a", 0, [0.0], 1, 1.0, None).row()
    with pytest.raises(DatasetError, match=r"episode a step 3: action_prob must be in \(0, 1\], got 1.5"):
        Step("a", 3, [0.0], 1, 1.0, [0.0], action_prob=1.5).row()
    with pytest.raises(DatasetError, match="must be a finite density > 0"):
        Step("a", 0, [0.0], [0.1], 1.0, [0.0], action_prob=0.0).row(continuous=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Step("a", 0, [0.0], 1, 1.0, [0.0]).rewards = 2.0


def test_episode_steps_number_the_steps_and_flag_only_the_last():
    logged = [Step(None, None, [float(k)], k % 2, 1.0, [k + 1.0], terminateds=True) for k in range(3)]
    stored = episode_steps("e", logged, terminated=False, truncated=True)
    assert [(s.eps_id, s.t, s.terminateds, s.truncateds) for s in stored] == [
        ("e", 0, False, False),
        ("e", 1, False, False),
        ("e", 2, False, True),
    ]
    assert [s.obs for s in stored] == [s.obs for s in logged]
    with pytest.raises(DatasetError, match="no steps"):
        episode_steps("e", [], True, False)


def test_episode_rows_are_the_rows_of_its_steps():
    rows = episode_rows("b", [[0.0], [1.0]], [1, 0], [1.0, 2.0], [[1.0], [2.0]], True, False, [0.5, None])
    steps = episode_steps(
        "b",
        [Step(None, None, [0.0], 1, 1.0, [1.0], action_prob=0.5), Step(None, None, [1.0], 0, 2.0, [2.0])],
        True,
        False,
    )
    want = [s.row() for s in steps]
    assert [{k: v for k, v in r.items() if "action_" not in k} for r in rows] == [
        {k: v for k, v in r.items() if "action_" not in k} for r in want
    ]
    assert rows[0]["action_prob"] == want[0]["action_prob"] == 0.5
    assert math.isnan(rows[1]["action_prob"]) and math.isnan(want[1]["action_prob"])
