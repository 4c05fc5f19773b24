"""SageMaker data capture + rewards -> offline dataset.

Capture records are built in the shape of AWS's documented example (Model Monitor "Capture data":
``captureData.endpointInput``/``endpointOutput`` with ``observedContentType``, ``mode``, ``data``,
``encoding``; ``eventMetadata`` with ``eventId``, ``inferenceId``, ``inferenceTime``;
``eventVersion``), around request and answer bodies written by the server's own codecs
(`serving.codecs.decode` accepts each request, `serving.codecs.encode` writes each answer), so a
collected dataset logged through them must convert back to the same transitions.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sagemaker_ray_rl.offline.capture import convert_capture, read_captures
from sagemaker_ray_rl.offline.collect import collect
from sagemaker_ray_rl.offline.convert import main
from sagemaker_ray_rl.offline.dataset import DatasetError, read_dataset, read_info
from sagemaker_ray_rl.offline.ope import NO_PROBABILITY_SKIPPED, FQESettings, evaluate_policy, greedy_probabilities
from sagemaker_ray_rl.serving import codecs

ENV_CONFIG = {"max_episode_steps": 15}  # short: some episodes end truncated
#: request format -> (content type, observations per request)
FORMATS = {
    "instances": (codecs.JSON, 2),
    "observation": (codecs.JSON, 1),
    "legacy": (codecs.JSON, 1),
    "jsonlines": (codecs.JSONLINES, 2),
    "csv": (codecs.CSV, 2),
    "npy": (codecs.NPY, 2),
}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    path = tmp_path_factory.mktemp("collected") / "dataset"
    collect(path, env="CartPole-v1", env_config=ENV_CONFIG, num_episodes=10, num_envs=4, seed=7)
    data = read_dataset(path)
    assert data.truncateds.any() and data.terminateds.any()
    return data


def request_body(kind: str, observations: list[list[float]], eps_id: str | None) -> bytes:
    """A request the server accepts, asking for sampled actions and their probabilities."""
    wanted = {"explore": True, "outputs": ["action_prob"]}
    if kind == "instances":
        return json.dumps({"instances": observations, **wanted, "eps_id": eps_id}).encode()
    if kind == "observation":
        return json.dumps({"observation": observations[0], **wanted, "eps_id": eps_id}).encode()
    if kind == "legacy":  # seed 002's exported-policy request: every output comes back
        return json.dumps({"inputs": {"observations": observations, "prev_action": [0], "is_training": False}}).encode()
    if kind == "jsonlines":
        return "".join(json.dumps({"observation": o, **wanted}) + "\n" for o in observations).encode()
    if kind == "csv":  # options in X-Amzn-SageMaker-Custom-Attributes, which data capture does not record
        return "".join(",".join(repr(v) for v in o) + "\n" for o in observations).encode()
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(observations, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def answer_body(kind: str, request: bytes, content_type: str, actions, probs) -> bytes:
    """The server's answer, written by its codecs from the decoded request."""
    decoded = codecs.decode(request, content_type, {"explore": True, "outputs": ["action_prob"]})
    assert decoded.count == len(actions) or content_type == codecs.NPY  # .npy: counted when planned
    results = []
    for action, prob in zip(actions, probs):
        result = {"action": int(action), "action_prob": float(prob)}
        if kind == "legacy":
            result.update(action_logp=math.log(prob), action_dist_inputs=[0.1, -0.1], vf_preds=3.5)
        results.append(result)
    return codecs.encode(results, content_type, decoded)


def capture_part(mode: str, content_type: str, body: bytes, encoding: str) -> dict:
    """One ``captureData`` part; text content types in the documented ``JSON``/``CSV`` encodings,
    everything else (and all with ``encoding="BASE64"``) base64, as SageMaker writes it for types not
    listed in ``CaptureContentTypeHeader``."""
    text_encoding = {codecs.JSON: "JSON", codecs.JSONLINES: "JSON", codecs.CSV: "CSV"}.get(content_type)
    if encoding == "BASE64" or text_encoding is None:
        return {
            "observedContentType": content_type,
            "mode": mode,
            "data": base64.b64encode(body).decode(),
            "encoding": "BASE64",
        }
    observed = f"{content_type}; charset=utf-8" if mode == "OUTPUT" else content_type
    return {"observedContentType": observed, "mode": mode, "data": body.decode(), "encoding": text_encoding}


def capture_record(request: bytes, answer: bytes, content_type: str, encoding: str, n: int, inference_id) -> dict:
    meta = {"eventId": f"e{n:05d}-7f3a-4c1e-9b2d", "inferenceTime": f"2026-12-01T15:{n // 60:02d}:{n % 60:02d}Z"}
    if inference_id:
        meta["inferenceId"] = f"decision-{n}"
    return {
        "captureData": {
            "endpointInput": capture_part("INPUT", content_type, request, encoding),
            "endpointOutput": capture_part("OUTPUT", content_type, answer, encoding),
        },
        "eventMetadata": meta,
        "eventVersion": "0",
    }


def write_capture(
    data, folder: Path, kinds, *, encoding: str = "JSON", inference_id: bool = True, answered=None
) -> dict[str, Path]:
    """Play the collected decisions through the endpoint as a live system would (two episodes at a
    time, steps alternating), writing SageMaker's capture files (two hourly files under
    ``yyyy/mm/dd/hh``) and one rewards line per decision, in shuffled order. With `answered`
    (actions, probabilities), the endpoint answered those and the system took the collected actions
    on its own, logging them and their probabilities on the rewards lines."""
    order = np.concatenate([_alternate(data, e, e + 1) for e in range(0, data.num_episodes, 2)])
    episode = data.episode_index
    records, rewards = [], []
    i = n = 0
    while i < len(order):
        kind = kinds[n % len(kinds)]
        content_type, size = FORMATS[kind]
        rows = order[i : i + size]
        i += len(rows)
        eps = data.eps_ids[episode[rows[0]]]
        request = request_body(kind, [data.obs[r].tolist() for r in rows], eps if len(rows) == 1 else None)
        actions, probs = answered if answered is not None else (data.actions, data.action_prob)
        answer = answer_body(kind, request, content_type, actions[rows], probs[rows])
        records.append(capture_record(request, answer, content_type, encoding, n, inference_id))
        key = {"inferenceId": f"decision-{n}"} if inference_id else {"eventId": records[-1]["eventMetadata"]["eventId"]}
        for index, r in enumerate(rows):
            fb = {
                **key,
                "reward": float(data.rewards[r]),
                "terminated": bool(data.terminateds[r]),
                "truncated": bool(data.truncateds[r]),
                "eps_id": data.eps_ids[episode[r]],
            }
            if len(rows) > 1:
                fb["index"] = index
            if answered is not None:
                fb.update(action=int(data.actions[r]), action_prob=float(data.action_prob[r]))
            if data.truncateds[r] or data.terminateds[r]:
                fb["next_observation"] = data.next_obs[r].tolist()
            rewards.append(fb)
        n += 1
    capture = folder / "capture" / "my-endpoint" / "AllTraffic" / "2026" / "12" / "01"
    half = len(records) // 2
    for hour, chunk in (("15", records[:half]), ("16", records[half:])):
        (capture / hour).mkdir(parents=True)
        (capture / hour / f"00-00-000-{hour}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    np.random.default_rng(0).shuffle(rewards)
    (folder / "rewards.jsonl").write_text("".join(json.dumps(f) + "\n" for f in rewards))
    return {"captures": [folder / "capture"], "rewards": folder / "rewards.jsonl"}


def _alternate(data, a: int, b: int) -> np.ndarray:
    rows = [np.arange(data.episode_starts[e], data.episode_starts[e + 1]) for e in (a, b) if e < data.num_episodes]
    out = []
    for k in range(max(len(r) for r in rows)):
        out += [r[k] for r in rows if k < len(r)]
    return np.asarray(out)


def assert_same(original, converted, *, probabilities: bool = True) -> None:
    assert converted.eps_ids == original.eps_ids
    np.testing.assert_array_equal(converted.episode_starts, original.episode_starts)
    names = ["obs", "actions", "rewards", "next_obs", "terminateds", "truncateds"]
    for name in names + (["action_prob"] if probabilities else []):
        np.testing.assert_array_equal(getattr(converted, name), getattr(original, name), err_msg=name)


@pytest.mark.parametrize("encoding", ["JSON", "BASE64"])
def test_every_request_format_with_probabilities_round_trips(collected, tmp_path, encoding):
    kinds = ["instances", "observation", "legacy", "jsonlines", "csv"]
    files = write_capture(collected, tmp_path, kinds, encoding=encoding)
    result = convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    assert (result.num_episodes, result.num_transitions) == (collected.num_episodes, len(collected))
    converted = read_dataset(tmp_path / "out")
    assert_same(collected, converted)
    assert converted.has_behaviour_probabilities
    info = read_info(tmp_path / "out")
    assert info["behaviour_probabilities"] is True and info["behaviour_policy"]["name"] == "endpoint_capture"


def test_rewards_join_by_event_id_when_requests_had_no_inference_id(collected, tmp_path):
    files = write_capture(collected, tmp_path, ["observation", "jsonlines"], inference_id=False)
    convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    assert_same(collected, read_dataset(tmp_path / "out"))


def test_answers_without_probabilities_are_flagged_and_skip_importance_sampling(collected, tmp_path, capsys):
    files = write_capture(collected, tmp_path, ["npy", "observation"])
    convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    assert "have no action_prob: the dataset is flagged" in capsys.readouterr().out
    converted = read_dataset(tmp_path / "out")
    assert_same(collected, converted, probabilities=False)
    info = read_info(tmp_path / "out")
    assert info["behaviour_probabilities"] is False
    assert 0 < info["behaviour_probabilities_missing"] < len(collected)
    assert not converted.has_behaviour_probabilities and np.isnan(converted.action_prob).any()

    def target(obs):
        return greedy_probabilities((obs[:, 2] > 0).astype(np.int64), 2)

    estimates = evaluate_policy(converted, target, 0.99, FQESettings(updates=100))  # no dynamics model
    assert set(estimates) == {"dm"} and math.isfinite(estimates["dm"])
    assert set(NO_PROBABILITY_SKIPPED) == {"is", "wis", "pdis", "dr"}


def test_documented_example_record_and_the_legacy_pair(tmp_path):
    """AWS's documented example (a CSV request and answer, ``text/csv; charset=utf-8`` observed on
    the output) with a CartPole observation, and seed 002's legacy ``inputs``/``outputs`` pair."""
    csv_record = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "text/csv",
                "mode": "INPUT",
                "data": "0.0132,-0.0421,0.0309,0.0247",
                "encoding": "CSV",
            },
            "endpointOutput": {
                "observedContentType": "text/csv; charset=utf-8",
                "mode": "OUTPUT",
                "data": "1,0.5",
                "encoding": "CSV",
            },
        },
        "eventMetadata": {
            "eventId": "b8d1c3e6-1a64-4b45-8f7f-8c2b6f0d3a11",
            "inferenceId": "store-7/episode-1/step-0",
            "inferenceTime": "2026-12-01T15:20:11Z",
        },
        "eventVersion": "0",
    }
    legacy_request = {"inputs": {"observations": [[0.0124, 0.1531, 0.0314, -0.2581]], "prev_action": [1]}}
    legacy_answer = {
        "outputs": {
            "actions_0": [0],
            "action_prob": [0.75],
            "action_logp": [math.log(0.75)],
            "action_dist_inputs": [[0.55, -0.55]],
            "vf_preds": [9.8],
        }
    }
    legacy_record = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/json",
                "mode": "INPUT",
                "data": base64.b64encode(json.dumps(legacy_request).encode()).decode(),
                "encoding": "BASE64",
            },
            "endpointOutput": {
                "observedContentType": "application/json",
                "mode": "OUTPUT",
                "data": base64.b64encode(json.dumps(legacy_answer).encode()).decode(),
                "encoding": "BASE64",
            },
        },
        "eventMetadata": {
            "eventId": "0f6e2d9a-53c4-4d3e-a0b7-2e9c8f1b7c42",
            "inferenceId": "store-7/episode-1/step-1",
            "inferenceTime": "2026-12-01T15:20:12Z",
        },
        "eventVersion": "0",
    }
    (tmp_path / "capture.jsonl").write_text(json.dumps(legacy_record) + "\n" + json.dumps(csv_record) + "\n")
    (tmp_path / "rewards.jsonl").write_text(
        json.dumps({"inferenceId": "store-7/episode-1/step-1", "reward": 1.0, "terminated": True, "truncated": False})
        + "\n"
        + json.dumps(
            {"inferenceId": "store-7/episode-1/step-0", "reward": 1.0, "terminated": False, "truncated": False}
        )
        + "\n"
    )
    convert_capture(
        tmp_path / "out", captures=[tmp_path / "capture.jsonl"], rewards=tmp_path / "rewards.jsonl", env="CartPole-v1"
    )
    data = read_dataset(tmp_path / "out")  # ordered by inferenceTime, not by file line
    np.testing.assert_array_equal(data.actions, [1, 0])
    np.testing.assert_allclose(data.action_prob, [0.5, 0.75])
    np.testing.assert_allclose(data.obs[0], [0.0132, -0.0421, 0.0309, 0.0247], rtol=1e-6)
    np.testing.assert_allclose(data.next_obs[0], data.obs[1])
    assert data.terminateds.tolist() == [False, True] and data.episode_returns().tolist() == [2.0]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_a_decision_without_reward_is_named_by_its_capture_line(collected, tmp_path):
    files = write_capture(collected, tmp_path, ["observation"])
    rewards = _lines(files["rewards"])
    dropped = next(f for f in rewards if f["inferenceId"] == "decision-3")
    _write_lines(files["rewards"], [f for f in rewards if f is not dropped])
    with pytest.raises(DatasetError, match=r"15/00-00-000-15\.jsonl line 4: no reward in .*inferenceId 'decision-3'"):
        convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)


def test_duplicate_inference_ids_are_named_by_line(collected, tmp_path):
    files = write_capture(collected, tmp_path, ["observation"])
    capture = next(files["captures"][0].rglob("*.jsonl"))
    records = _lines(capture)
    records[5]["eventMetadata"]["inferenceId"] = records[2]["eventMetadata"]["inferenceId"]
    _write_lines(capture, records)
    with pytest.raises(DatasetError, match=r"line 6: duplicate inferenceId 'decision-2' \(first at .* line 3\)"):
        convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)


def test_duplicate_and_unknown_rewards_are_named_by_line(collected, tmp_path):
    files = write_capture(collected, tmp_path, ["instances"])
    rewards = _lines(files["rewards"])
    _write_lines(files["rewards"], rewards + [rewards[4]])
    with pytest.raises(DatasetError, match=rf"rewards.jsonl line {len(rewards) + 1}: duplicate reward for inferenceId"):
        convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    _write_lines(files["rewards"], rewards[:2] + [{**rewards[2], "inferenceId": "nobody"}] + rewards[3:])
    with pytest.raises(DatasetError, match="rewards.jsonl line 3: no capture has inferenceId 'nobody'"):
        convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["captureData"].pop("endpointOutput"), "both endpointInput and endpointOutput are needed"),
        (lambda r: r["captureData"]["endpointInput"].update(encoding="GZIP"), "encoding must be one of"),
        (lambda r: r["captureData"]["endpointInput"].update(observedContentType="image/png"), "is not one the server"),
        (
            lambda r: r["captureData"]["endpointOutput"].update(
                data='{"error": "BadRequest", "message": "observation has shape (3,)"}'
            ),
            "the server answered an error",
        ),
        (lambda r: r["captureData"]["endpointInput"].update(data='{"observation": [0.1, 0.2]}'), "shape"),
    ],
)
def test_bad_capture_records_are_named_by_line(collected, tmp_path, change, message):
    files = write_capture(collected, tmp_path, ["observation"])
    capture = next(files["captures"][0].rglob("*.jsonl"))
    records = _lines(capture)
    change(records[1])
    _write_lines(capture, records)
    with pytest.raises(DatasetError, match=rf"00-00-000-15\.jsonl line 2.*{message}"):
        read_captures(files["captures"], *_spaces())


def _spaces():
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    return env.observation_space, env.action_space


def test_cli_converts_captures_and_exits_2_with_the_message(collected, tmp_path, capsys):
    files = write_capture(collected, tmp_path, ["observation", "csv"])
    args = ["--captures", str(files["captures"][0]), "--rewards", str(files["rewards"]), "--env", "CartPole-v1"]
    main([*args, "--out", str(tmp_path / "out"), "--env-config", json.dumps(ENV_CONFIG)])
    assert f"wrote {collected.num_episodes} episodes ({len(collected)} transitions" in capsys.readouterr().out
    assert_same(collected, read_dataset(tmp_path / "out"))
    _write_lines(files["rewards"], _lines(files["rewards"])[1:])
    with pytest.raises(SystemExit) as exited:
        main([*args, "--out", str(tmp_path / "out2"), "--env-config", json.dumps(ENV_CONFIG)])
    assert exited.value.code == 2 and "no reward in" in capsys.readouterr().err


def test_an_episode_that_does_not_end_names_its_reward_lines(collected, tmp_path):
    files = write_capture(collected, tmp_path, ["observation"])
    rewards = _lines(files["rewards"])
    last = next(f for f in rewards if f["terminated"] or f["truncated"])
    last.update(terminated=False, truncated=False)
    _write_lines(files["rewards"], rewards)
    with pytest.raises(
        DatasetError,
        match=rf"episode {last['eps_id']} \(.*rewards.jsonl line \d+ to .*rewards.jsonl line \d+\) does not end",
    ):
        convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)


def test_actions_the_system_took_itself_replace_the_answers(collected, tmp_path):
    """A client exploring on its own (e.g. the answer's action w.p. 0.25, else uniform) logs the
    action it took and its behaviour probability on the rewards line; those, not the answer's, are
    the dataset's. Here every answer was the other action, with probability 0.9."""
    answered = (1 - collected.actions, np.full(len(collected), 0.9))
    files = write_capture(collected, tmp_path, ["instances", "observation"], answered=answered)
    convert_capture(tmp_path / "out", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    assert_same(collected, read_dataset(tmp_path / "out"))
    assert read_info(tmp_path / "out")["behaviour_probabilities"] is True

    rewards = _lines(files["rewards"])
    del rewards[0]["action_prob"]  # the action taken, its probability not logged: unknown, flagged
    _write_lines(files["rewards"], rewards)
    convert_capture(tmp_path / "flagged", env="CartPole-v1", env_config=ENV_CONFIG, **files)
    assert read_info(tmp_path / "flagged")["behaviour_probabilities_missing"] == 1

    for change, message in (
        ({"action": 2}, r"line 1 action: expected an action in Discrete\(2\), got 2"),
        ({"action_prob": 0.0}, r"line 1 action_prob: action_prob must be a number in \(0, 1\]"),
    ):
        _write_lines(files["rewards"], [{**rewards[0], **change}, *rewards[1:]])
        with pytest.raises(DatasetError, match=message):
            convert_capture(tmp_path / "bad", env="CartPole-v1", env_config=ENV_CONFIG, **files)
