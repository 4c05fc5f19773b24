"""Batch-transform JSON Lines + rewards -> offline dataset: a collected dataset written out as the
server's batch-transform files (decoded and encoded by the server's own codecs) converts back to
the same transitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sagemaker_ray_rl.offline.collect import collect
from sagemaker_ray_rl.offline.convert import JOINED_KEY, convert_batch_transform, main
from sagemaker_ray_rl.offline.dataset import DatasetError, read_dataset, read_info
from sagemaker_ray_rl.serving import codecs

ENV_CONFIG = {"max_episode_steps": 15}  # short: some episodes end truncated


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    path = tmp_path_factory.mktemp("collected") / "dataset"
    collect(path, env="CartPole-v1", env_config=ENV_CONFIG, num_episodes=12, num_envs=4, seed=5)
    data = read_dataset(path)
    assert data.truncateds.any() and data.terminateds.any()
    return data


def write_transform_files(data, folder: Path, *, interleave: bool, with_eps_id: bool) -> dict[str, Path]:
    """The records a live system sent, the server's answers (its JSON Lines codec), the rewards it saw."""
    order = np.arange(len(data))
    if interleave:  # two episodes at a time, steps alternating, as parallel envs would log them
        order = np.concatenate([_alternate(data, e, e + 1) for e in range(0, data.num_episodes, 2)])
    episode = data.episode_index
    records, feedback, results = [], [], []
    for i in order:
        record = {"observation": data.obs[i].tolist(), "explore": True, "outputs": ["action_prob"]}
        fb = {
            "reward": float(data.rewards[i]),
            "terminated": bool(data.terminateds[i]),
            "truncated": bool(data.truncateds[i]),
        }
        if with_eps_id:
            record["eps_id"] = data.eps_ids[episode[i]]
        if data.truncateds[i] or data.terminateds[i]:
            fb["next_observation"] = data.next_obs[i].tolist()
        records.append(record)
        feedback.append(fb)
        results.append({"action": int(data.actions[i]), "action_prob": float(data.action_prob[i])})
    body = "\n".join(json.dumps(r) for r in records).encode()
    decoded = codecs.decode(body, codecs.JSONLINES, {})  # the server accepts these records as they are
    assert decoded.count == len(records)
    files = {
        "records": folder / "in.jsonl",
        "predictions": folder / "in.jsonl.out",
        "rewards": folder / "rewards.jsonl",
    }
    files["records"].write_bytes(body + b"\n")
    files["predictions"].write_bytes(codecs.encode(results, codecs.JSONLINES, decoded))
    files["rewards"].write_text("".join(json.dumps(f) + "\n" for f in feedback))
    return files


def _alternate(data, a: int, b: int) -> np.ndarray:
    rows = [np.arange(data.episode_starts[e], data.episode_starts[e + 1]) for e in (a, b) if e < data.num_episodes]
    out = []
    for k in range(max(len(r) for r in rows)):
        out += [r[k] for r in rows if k < len(r)]
    return np.asarray(out)


def assert_same(original, converted) -> None:
    assert converted.num_episodes == original.num_episodes
    np.testing.assert_array_equal(converted.episode_starts, original.episode_starts)
    for name in ("obs", "actions", "rewards", "next_obs", "terminateds", "truncateds", "action_prob"):
        np.testing.assert_array_equal(getattr(converted, name), getattr(original, name), err_msg=name)
    np.testing.assert_allclose(converted.episode_returns(), original.episode_returns())


def test_sequential_lines_round_trip(collected, tmp_path):
    files = write_transform_files(collected, tmp_path, interleave=False, with_eps_id=False)
    result = convert_batch_transform(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    assert (result.num_episodes, result.num_transitions) == (collected.num_episodes, len(collected))
    assert_same(collected, read_dataset(tmp_path / "out"))
    info = read_info(tmp_path / "out")
    assert info["action_space"]["space"] == "discrete" and info["env_config"] == ENV_CONFIG


def test_interleaved_episodes_by_eps_id_round_trip_through_the_cli(collected, tmp_path, capsys):
    files = write_transform_files(collected, tmp_path, interleave=True, with_eps_id=True)
    main(
        [
            "--records",
            str(files["records"]),
            "--predictions",
            str(files["predictions"]),
            "--rewards",
            str(files["rewards"]),
            "--out",
            str(tmp_path / "out"),
            "--env",
            "CartPole-v1",
            "--env-config",
            json.dumps(ENV_CONFIG),
        ]
    )
    assert f"wrote {collected.num_episodes} episodes ({len(collected)} transitions" in capsys.readouterr().out
    assert_same(collected, read_dataset(tmp_path / "out"))


def test_joined_output_needs_no_records_file(collected, tmp_path):
    files = write_transform_files(collected, tmp_path, interleave=False, with_eps_id=True)
    records = files["records"].read_text().splitlines()
    answers = files["predictions"].read_text().splitlines()
    joined = tmp_path / "joined.out"
    joined.write_text(
        "".join(json.dumps({**json.loads(r), JOINED_KEY: json.loads(a)}) + "\n" for r, a in zip(records, answers))
    )
    convert_batch_transform(
        tmp_path / "out", predictions=joined, rewards=files["rewards"], env="CartPole-v1", env_config=ENV_CONFIG
    )
    assert_same(collected, read_dataset(tmp_path / "out"))


def _rewrite(path: Path, line: int, change) -> None:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    lines[line] = change(lines[line])
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.mark.parametrize(
    "target, line, change, message",
    [
        ("predictions", 3, lambda p: {"action": p["action"]}, "no action_prob"),
        ("predictions", 0, lambda p: {**p, "action": 7}, "expected an action in Discrete(2)"),
        ("records", 1, lambda r: {**r, "observation": [0.0, 1.0]}, "expected an observation of shape (4,)"),
        ("rewards", -1, lambda f: {**f, "terminated": False, "truncated": False}, "does not end"),
        ("rewards", 2, lambda f: {**f, "reward": "1"}, 'expected {"reward": number'),
    ],
)
def test_bad_files_are_named(collected, tmp_path, target, line, change, message):
    files = write_transform_files(collected, tmp_path, interleave=False, with_eps_id=False)
    _rewrite(files[target], line, change)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        convert_batch_transform(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)


def test_truncated_last_step_needs_its_next_observation(collected, tmp_path):
    files = write_transform_files(collected, tmp_path, interleave=False, with_eps_id=False)
    lines = [json.loads(x) for x in files["rewards"].read_text().splitlines()]
    truncated = next(i for i, f in enumerate(lines) if f["truncated"])
    del lines[truncated]["next_observation"]
    files["rewards"].write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(DatasetError, match=f"rewards line {truncated + 1}: a truncated episode's last step needs"):
        convert_batch_transform(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)


def test_files_of_different_lengths(collected, tmp_path):
    files = write_transform_files(collected, tmp_path, interleave=False, with_eps_id=False)
    files["rewards"].write_text("".join(files["rewards"].read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DatasetError, match="one line per decision"):
        convert_batch_transform(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
