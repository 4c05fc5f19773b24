"""``mode`` / ``offline.*`` hyperparameters, checkpoint selection and the dataset format (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.offline.dataset import DatasetError, episode_rows, read_dataset, write_dataset
from sagemaker_ray_rl.offline.selection import rank_correlations, select_checkpoint
from sagemaker_ray_rl.offline.settings import OfflineSettings
from sagemaker_ray_rl.training.hyperparameters import parse_hyperparameters


def test_train_mode_has_no_offline_settings():
    assert OfflineSettings.from_hyperparameters({}) is None
    assert OfflineSettings.from_hyperparameters({"mode": "train", "algorithm": "PPO"}) is None


def test_offline_settings_from_hyperparameters():
    s = OfflineSettings.from_hyperparameters(
        {
            "mode": "offline",
            "env_config": {"max_episode_steps": 200},
            "offline.num_updates": 3000,
            "offline.cql_alpha": 2,
            "offline.select": "wis",
            "offline.hidden": [32, 32],
        }
    )
    assert (s.mode, s.num_updates, s.cql_alpha, s.select, s.hidden) == ("offline", 3000, 2.0, "wis", (32, 32))
    assert s.env == "CartPole-v1" and s.env_config == {"max_episode_steps": 200}


@pytest.mark.parametrize(
    "hps, needle",
    [
        ({"mode": "batch"}, "'mode': expected one of ['train', 'collect', 'offline'], got 'batch'"),
        (
            {"mode": "collect", "offline.num_episode": 5},
            "unknown hyperparameter of collect and offline jobs 'offline.num_episode'. Did you mean 'offline.num_episodes'?",
        ),
        ({"mode": "collect", "offline.num_episodes": 0}, "'offline.num_episodes': expected an integer >= 1, got 0"),
        ({"mode": "collect", "offline.num_episodes": 2.5}, "'offline.num_episodes': expected an integer, got 2.5"),
        (
            {"mode": "collect", "offline.behaviour": "greedy"},
            "'offline.behaviour': expected one of ['random', 'epsilon_greedy'], got 'greedy'",
        ),
        ({"mode": "offline", "offline.select": "dr", "offline.fqe_updates": 0}, "needs fitted-Q evaluation"),
        (
            {"mode": "offline", "offline.hidden": [0]},
            "'offline.hidden': expected a JSON list of positive integers, got [0]",
        ),
        (
            {"mode": "offline", "offline.algorithm": "sac"},
            "'offline.algorithm': expected one of ['cql', 'iql', 'bc', 'marwil'], got 'sac'",
        ),
        ({"mode": "offline", "offline.lr_end": 0}, "'offline.lr_end': expected a number > 0, got 0.0"),
        ({"mode": "offline", "offline.beta": -1}, "'offline.beta': expected a number >= 0, got -1.0"),
        ({"mode": "offline", "offline.num_runs": 0}, "'offline.num_runs': expected an integer >= 1, got 0"),
        ({"mode": "offline", "offline.model_updates": 0}, "offline.select=mb needs a dynamics model"),
    ],
)
def test_bad_offline_hyperparameters_name_the_key(hps, needle):
    with pytest.raises(HyperparameterError) as err:
        OfflineSettings.from_hyperparameters(hps)
    assert needle in str(err.value)


def test_learning_rate_decays_linearly_over_the_updates_unless_lr_end_equals_lr():
    from sagemaker_ray_rl.offline.runner import lr_schedule

    s = OfflineSettings.from_hyperparameters({"mode": "offline", "offline.num_updates": 4000})
    assert (s.algorithm, s.lr, s.lr_end) == ("cql", 5e-4, 5e-5)
    assert lr_schedule(s) == [[0, 5e-4], [4000, 5e-5]]
    s = OfflineSettings.from_hyperparameters({"mode": "offline", "offline.lr": 1e-3, "offline.lr_end": 1e-3})
    assert lr_schedule(s) == 1e-3


def test_the_online_parser_leaves_offline_keys_alone():
    spec = parse_hyperparameters({"mode": "offline", "offline.num_updates": 10, "env": "CartPole-v1"}, num_cpus=2)
    assert spec.env == "CartPole-v1"


def test_selection_takes_the_best_estimate_and_ignores_nan():
    rows = [
        {"offline_updates": 1, "ope_dr": 5.0, "ope_wis": math.nan},
        {"offline_updates": 2, "ope_dr": 9.0, "ope_wis": math.nan},
        {"offline_updates": 3, "ope_dr": 7.0, "ope_wis": math.nan},
    ]
    assert select_checkpoint(rows, "dr")["offline_updates"] == 2
    assert select_checkpoint(rows, "wis")["offline_updates"] == 3  # all NaN: the last
    assert select_checkpoint(rows, "last")["offline_updates"] == 3


def test_rank_correlation_is_spearmans():
    rows = [{"ope_dr": x, "real": y} for x, y in [(1, 10), (2, 30), (3, 20), (4, 40)]]
    assert rank_correlations(rows, ["dr"], "real")["dr"] == pytest.approx(0.8)
    assert math.isnan(rank_correlations(rows[:2], ["dr"], "real")["dr"])


def test_dataset_round_trip_keeps_episodes_in_step_order(tmp_path):
    rows = episode_rows("b", [[0.0]] * 2, [1, 0], [1.0, 2.0], [[1.0]] * 2, True, False, [0.5, 0.25])
    rows += episode_rows("a", [[2.0]] * 3, [0, 0, 1], [1.0, 1.0, 1.0], [[3.0]] * 3, False, True, [1.0] * 3)
    write_dataset(tmp_path, rows[::-1], {"observation_space": {}, "action_space": {}}, rows_per_file=2)
    data = read_dataset(tmp_path)
    assert data.eps_ids == ("a", "b")  # first seen in the (reversed) files
    assert data.episode_returns().tolist() == [3.0, 3.0]
    assert data.terminateds.tolist() == [False, False, False, False, True]
    assert data.truncateds.tolist() == [False, False, True, False, False]
    np.testing.assert_allclose(data.action_prob[3:], [0.5, 0.25])


def test_bad_probabilities_are_refused():
    with pytest.raises(DatasetError, match=r"action_prob must be in \(0, 1\]"):
        episode_rows("x", [[0.0]], [0], [1.0], [[0.0]], True, False, [0.0])
