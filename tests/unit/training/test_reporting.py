from __future__ import annotations

import io
import re

from sagemaker_ray_rl.contract.metrics import FLOAT_REGEX
from sagemaker_ray_rl.training.reporting import METRIC_DEFINITIONS, MetricLinesCallback, metric_lines, progress_line

RESULT = {
    "training_iteration": 3,
    "num_env_steps_sampled_lifetime": 12000.0,
    "time_total_s": 25.123456789,
    "env_runners": {
        "episode_return_mean": 123.4,
        "episode_return_max": 500.0,
        "episode_return_min": 9.0,
        "episode_len_mean": 123.4,
    },
    "learners": {"default_policy": {"default_optimizer_learning_rate": 0.0003}},
    "evaluation": {
        "env_runners": {
            "episode_return_mean": 480.5,
            "episode_return_max": 500.0,
            "episode_return_min": 402.0,
            "episode_len_mean": 480.5,
        }
    },
}


def test_lines_in_stable_order():
    assert metric_lines(RESULT) == [
        "training_iteration: 3",
        "episode_reward_mean: 123.4",
        "episode_reward_max: 500",
        "episode_reward_min: 9",
        "episode_return_mean: 123.4",
        "episode_return_max: 500",
        "episode_return_min: 9",
        "episode_len_mean: 123.4",
        "timesteps_total: 12000",
        "time_total_s: 25.1235",
        "learning_rate: 0.0003",
        "evaluation_return_mean: 480.5",
        "evaluation_return_max: 500",
        "evaluation_return_min: 402",
        "evaluation_len_mean: 480.5",
    ]


def test_the_issue_and_seed_regexes_match():
    log = "\n".join(metric_lines(RESULT))
    acceptance = re.search(r"episode_reward_mean: ([-+]?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?)", log)
    assert acceptance and float(acceptance.group(1)) == 123.4
    # The seed-000 notebooks' regexes, with the colon their Ray 1.x log lines had.
    seed = re.search(rf"episode_reward_max:\s*({FLOAT_REGEX})", log)
    assert seed and float(seed.group(1)) == 500
    for definition in METRIC_DEFINITIONS:
        matches = re.findall(definition["Regex"], log)
        assert len(matches) == 1, definition["Name"]  # no regex also matches another metric's line


def test_missing_and_nan_values_are_left_out():
    lines = metric_lines({"training_iteration": 1, "env_runners": {"episode_return_mean": float("nan")}})
    assert lines == ["training_iteration: 1"]


def test_small_numbers_keep_their_value():
    lines = metric_lines({"learners": {"default_policy": {"default_optimizer_learning_rate": 5e-07}}})
    assert lines == ["learning_rate: 5e-07"]
    regex = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == "learning_rate")
    assert float(re.search(regex, lines[0]).group(1)) == 5e-07


class _Trial:
    trial_id = "abc_00001"


def test_callback_prints_a_trial_header_only_with_several_trials():
    out = io.StringIO()
    MetricLinesCallback(out).on_trial_result(1, [_Trial()], _Trial(), {"training_iteration": 2})
    MetricLinesCallback(out).on_trial_result(1, [_Trial(), _Trial()], _Trial(), {"training_iteration": 2})
    progress = "[progress] iter 2 | return - (min -, max -) | - env steps | - s"
    assert out.getvalue() == f"training_iteration: 2\n{progress}\ntrial: abc_00001\ntraining_iteration: 2\n{progress}\n"


def test_progress_line_shows_the_stop_criteria_and_no_metric_regex_matches_it():
    stop = {"training_iteration": 40, "env_runners/episode_return_mean": 450}
    line = progress_line(RESULT, stop)
    assert line == (
        "[progress] iter 3/40 | return 123.4 (min 9, max 500; stop at 450) | greedy 480.5 | 12,000 env steps | 25.1 s"
    )
    greedy_stop = {"training_iteration": 40, "evaluation/env_runners/episode_return_mean": 475}
    greedy = progress_line(RESULT, greedy_stop)
    assert "return 123.4 (min 9, max 500) | greedy 480.5 (stop at 475) |" in greedy
    for definition in METRIC_DEFINITIONS:
        assert re.search(definition["Regex"], line) is None, definition["Name"]
        assert re.search(definition["Regex"], greedy) is None, definition["Name"]


def test_the_documented_metric_definitions_name_every_metric():
    from pathlib import Path

    from sagemaker_ray_rl.training.reporting import METRICS

    doc = (Path(__file__).resolve().parents[3] / "docs" / "training.md").read_text()
    listed = re.search(r"for name in \[(.*?)\]\n", doc, re.S).group(1)
    assert re.findall(r'"(\w+)"', listed) == list(METRICS)
