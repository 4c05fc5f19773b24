"""Served actions equal what RLlib's own restored pipelines compute, for every kind of policy.

Each policy is trained briefly with RLlib and saved with ``algo.save()`` (as a user entry point
would, no metadata of ours), then served by the real `serve` command over HTTP. The reference is
written here independently of the server: the env runner's way of acting (RLlib's
``EnvToModulePipeline`` / ``ModuleToEnvPipeline`` restored from the checkpoint, one
``SingleAgentEpisode`` per observation, ``forward_inference``), with the ``MeanStdFilter``'s
statistics frozen, as a deployed policy must keep them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import requests
from helpers import rllib_reference

pytestmark = pytest.mark.integration

N = 16


def to_json(value):
    """A gymnasium sample as JSON values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [to_json(v) for v in value]
    return np.asarray(value).tolist()


def samples(space: gym.Space, n: int = N, seed: int = 0) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


@pytest.mark.parametrize("kind", ["cartpole", "pendulum", "meanstd", "dict_obs"])
def test_served_actions_equal_rllibs_pipeline(kind, policy_dirs, servers):
    from sagemaker_ray_rl.inference.policy import Policy

    space = Policy.load(policy_dirs[kind]).pipeline(None).observation_space
    observations = samples(space)
    if kind == "meanstd":  # observations the filter moves far from identity
        observations = [np.array([0.9, 0.1, 6.0], np.float32) * (i % 3 - 1) for i in range(N)]
    expected = rllib_reference(policy_dirs[kind], observations)
    response = requests.post(
        f"{servers(kind).url}/invocations",
        json={"instances": [to_json(o) for o in observations], "outputs": ["action_dist_inputs"]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    served = np.array([p["action"] for p in predictions])
    if kind in ("cartpole", "dict_obs"):
        assert served.tolist() == expected["action"].tolist()
    else:
        np.testing.assert_allclose(served, expected["action"], rtol=1e-6, atol=1e-6)
        assert np.all(np.abs(served) <= 2.0)  # unsquashed into Pendulum's [-2, 2]
    np.testing.assert_allclose(
        np.array([p["action_dist_inputs"] for p in predictions]), expected["action_dist_inputs"], rtol=1e-5, atol=1e-6
    )


def test_meanstd_filter_is_applied_and_frozen(policy_dirs, servers):
    """Without the filter the module would get raw observations: answers would differ; with
    stats updating, the same request would drift."""
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    obs = [[0.9, 0.1, 6.0], [-0.9, -0.1, -6.0]]
    url = f"{servers('meanstd').url}/invocations"
    first = requests.post(url, json={"instances": obs, "outputs": ["action_dist_inputs"]}, timeout=30).json()
    for _ in range(20):
        requests.post(url, json={"instances": obs * 50}, timeout=30)
    again = requests.post(url, json={"instances": obs, "outputs": ["action_dist_inputs"]}, timeout=30).json()
    assert first == again
    module = RLModule.from_checkpoint(
        str(policy_dirs["meanstd"] / "learner_group" / "learner" / "rl_module" / "default_policy")
    )
    with torch.no_grad():
        raw = module.forward_inference({Columns.OBS: torch.tensor(obs)})[Columns.ACTION_DIST_INPUTS].numpy()
    served = np.array([p["action_dist_inputs"] for p in first["predictions"]])
    assert not np.allclose(served, raw, atol=1e-4)


def test_multi_agent_requests_name_the_module(policy_dirs, servers):
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    url = f"{servers('multi_agent').url}/invocations"
    observations = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5], [-0.2, 0.0, 0.2, 1.0]]
    for module_id in ("p0", "p1"):
        module = RLModule.from_checkpoint(
            str(policy_dirs["multi_agent"] / "learner_group" / "learner" / "rl_module" / module_id)
        )
        with torch.no_grad():
            logits = module.forward_inference({Columns.OBS: torch.tensor(observations)})[Columns.ACTION_DIST_INPUTS]
        response = requests.post(url, json={"instances": observations, "module_id": module_id}, timeout=30)
        assert [p["action"] for p in response.json()["predictions"]] == logits.argmax(-1).tolist()
        header = requests.post(
            url,
            json={"instances": observations},
            headers={"X-Amzn-SageMaker-Custom-Attributes": f"module_id={module_id}"},
            timeout=30,
        )
        assert header.json() == response.json()
    missing = requests.post(url, json={"instances": observations}, timeout=30)
    assert missing.status_code == 400
    assert missing.json()["field"] == "module_id" and "p0" in missing.json()["expected"]


def test_multi_agent_requests_map_agent_ids_with_the_policy_mapping_fn(servers):
    """MultiAgentCartPole's agents 0 and 1 were trained by modules p0 and p1 (mapping fn f"p{id}")."""
    url = f"{servers('multi_agent').url}/invocations"
    observations = {"0": [0.01, -0.02, 0.03, 0.04], "1": [0.1, 0.5, -0.1, -0.5]}
    response = requests.post(url, json={"agents": observations, "outputs": ["action_dist_inputs"]}, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()["agents"]
    for agent_id, module_id in (("0", "p0"), ("1", "p1")):
        alone = requests.post(
            url,
            json={"observation": observations[agent_id], "module_id": module_id, "outputs": ["action_dist_inputs"]},
            timeout=30,
        ).json()["predictions"][0]
        assert answer[agent_id] == alone
    unknown = requests.post(url, json={"agents": {"7": observations["0"]}}, timeout=30)
    assert unknown.status_code == 400 and unknown.json()["field"] == "agents.7"
    bad = requests.post(url, json={"agents": {"0": [1, 2]}}, timeout=30)
    assert bad.status_code == 400 and bad.json()["field"] == "agents.0"


def test_lstm_state_goes_in_and_out(policy_dirs, servers):
    import torch
    import tree
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(
        str(policy_dirs["lstm"] / "learner_group" / "learner" / "rl_module" / "default_policy")
    )
    url = f"{servers('lstm').url}/invocations"
    observations = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5], [-0.2, 0.0, 0.2, 1.0]]
    state = tree.map_structure(lambda s: torch.as_tensor(s)[None], module.get_initial_state())
    served_state = None
    for obs in observations:
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.tensor([[obs]]), Columns.STATE_IN: state})
        body = {"observation": obs, "outputs": ["action_dist_inputs"]}
        if served_state is not None:
            body["state"] = served_state
        response = requests.post(url, json=body, timeout=30)
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        np.testing.assert_allclose(
            prediction["action_dist_inputs"], out[Columns.ACTION_DIST_INPUTS][0, 0].numpy(), rtol=1e-5, atol=1e-6
        )
        assert prediction["action"] == int(out[Columns.ACTION_DIST_INPUTS][0, 0].argmax())
        state, served_state = out[Columns.STATE_OUT], prediction["state_out"]
    bad = requests.post(url, json={"observation": observations[0], "state": {"h": [1.0]}}, timeout=30)
    assert bad.status_code == 400 and bad.json()["field"] == "state"


def test_explore_samples_and_reports_logp(servers):
    url = f"{servers('pendulum').url}/invocations"
    body = {"instances": [[1.0, 0.0, 0.0]] * 200, "outputs": ["action_logp", "action_prob", "vf_preds"]}
    greedy = requests.post(url, json=body, timeout=30).json()["predictions"]
    assert len({p["action"][0] for p in greedy}) == 1 and all(p["action_logp"] == 0.0 for p in greedy)
    sampled = requests.post(url, json={**body, "explore": True}, timeout=30).json()["predictions"]
    assert len({p["action"][0] for p in sampled}) > 100
    assert all(abs(np.exp(p["action_logp"]) - p["action_prob"]) < 1e-5 * max(1, p["action_prob"]) for p in sampled)
    assert len({p["vf_preds"] for p in sampled}) == 1
    header = requests.post(
        url,
        json={"instances": body["instances"]},
        headers={"X-Amzn-SageMaker-Custom-Attributes": "explore=true"},
        timeout=30,
    ).json()["predictions"]
    assert len({p["action"][0] for p in header}) > 100


def test_json_lines_round_trip_of_1000_records(policy_dirs, servers):
    url = f"{servers('cartpole').url}/invocations"
    observations = [to_json(o) for o in samples(gym.spaces.Box(-1, 1, (4,), np.float32), 1000, seed=1)]
    lines = "\n".join(json.dumps(o) if i % 2 else json.dumps({"observation": o}) for i, o in enumerate(observations))
    response = requests.post(url, data=lines + "\n", headers={"Content-Type": "application/jsonlines"}, timeout=60)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/jsonlines")
    out = [json.loads(line) for line in response.text.splitlines()]
    assert len(out) == 1000
    reference = requests.post(url, json={"instances": observations}, timeout=60).json()["predictions"]
    assert out == reference
    assert out == [
        {"action": int(a)} for a in rllib_reference(policy_dirs["cartpole"], np.float32(observations))["action"]
    ]


def test_csv_and_npy_round_trips(servers):
    url = f"{servers('pendulum').url}/invocations"
    observations = np.float32([[1.0, 0.0, 0.5], [0.0, 1.0, -3.0], [-1.0, 0.0, 8.0]])
    reference = [
        p["action"]
        for p in requests.post(url, json={"instances": observations.tolist()}, timeout=30).json()["predictions"]
    ]
    csv_body = "\n".join(",".join(repr(float(v)) for v in row) for row in observations)
    csv_answer = requests.post(url, data=csv_body, headers={"Content-Type": "text/csv"}, timeout=30)
    assert csv_answer.status_code == 200 and csv_answer.headers["Content-Type"].startswith("text/csv")
    assert [[float(v) for v in line.split(",")] for line in csv_answer.text.splitlines()] == reference
    buffer = io.BytesIO()
    np.save(buffer, observations)
    npy_answer = requests.post(url, data=buffer.getvalue(), headers={"Content-Type": "application/x-npy"}, timeout=30)
    assert npy_answer.status_code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(npy_answer.content)), np.float32(reference))
    as_json = requests.post(
        url,
        data=buffer.getvalue(),
        headers={"Content-Type": "application/x-npy", "Accept": "application/json"},
        timeout=30,
    )
    assert [p["action"] for p in as_json.json()["predictions"]] == reference
    wrong = requests.post(url, data="1,2\n", headers={"Content-Type": "text/csv"}, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["field"] == "row"


def test_legacy_exported_policy_request(servers):
    """Seed 002's request, answered in the legacy ``outputs`` shape."""
    url = f"{servers('pendulum').url}/invocations"
    body = {
        "inputs": {
            "observations": [[1.0, 0.0, 0.5]],
            "prev_action": [0],
            "is_training": False,
            "prev_reward": -1,
            "seq_lens": -1,
        }
    }
    response = requests.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert set(outputs) == {"actions_0", "action_logp", "action_prob", "action_dist_inputs", "vf_preds"}
    assert len(outputs["actions_0"]) == 1 and len(outputs["actions_0"][0]) == 1
    assert len(outputs["action_dist_inputs"][0]) == 2 and isinstance(outputs["vf_preds"][0], float)
    current = requests.post(url, json={"observation": [1.0, 0.0, 0.5]}, timeout=30).json()
    assert outputs["actions_0"][0] == current["predictions"][0]["action"]


def test_execution_parameters_and_payload_limit(servers):
    server = servers("cartpole")
    assert requests.get(f"{server.url}/execution-parameters", timeout=5).json() == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }
    big = b'{"instances": [' + b",".join([b"[0.1, 0.2, 0.3, 0.4]"] * 320_000) + b"]}"
    assert len(big) > 6 * 1024 * 1024
    response = requests.post(
        f"{server.url}/invocations", data=big, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 413 and response.json()["error"] == "PayloadTooLarge"
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200


def test_corrupt_model_makes_serve_exit_with_the_reason(policy_dirs, tmp_path):
    import shutil
    import subprocess
    import time

    from helpers import BIN, job_environ

    model = tmp_path / "model"
    shutil.copytree(policy_dirs["cartpole"], model)
    for state in (model / "learner_group" / "learner" / "rl_module" / "default_policy").glob("*.pkl"):
        state.write_bytes(state.read_bytes()[:40])
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "serve")],
        env=job_environ(tmp_path, SM_MODEL_DIR=str(model)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(f"corrupt model: serve exited {proc.returncode} after {time.monotonic() - start:.1f} s")
    assert proc.returncode == 1
    assert "serve: cannot start: cannot load RLModule 'default_policy'" in proc.stderr


def test_sigterm_lets_the_request_in_flight_finish(policy_dirs, tmp_path):
    """A request whose body is still arriving when SIGTERM comes is answered, then serve exits 0."""
    import socket
    import time

    from integration.conftest import ServeProcess

    server = ServeProcess(policy_dirs["cartpole"], tmp_path)
    server.wait_until_healthy()
    body = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]] * 64}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:100]
        )
        time.sleep(0.5)
        server.proc.terminate()
        time.sleep(0.5)
        sock.sendall(body[100:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["predictions"][0]["action"] in (0, 1)
    assert server.stop() == 0


def test_ray_serve_backend_answers_like_gunicorn(policy_dirs, servers, tmp_path):
    """Same statuses and bodies as gunicorn, also for concurrent single observations that Ray
    Serve's ``@serve.batch`` runs as one forward pass (float32 rounding of a batch aside)."""
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from integration.conftest import ServeProcess

    ray_tmp = Path(tempfile.mkdtemp(prefix="smrl-rs-", dir="/tmp"))  # Ray's socket paths must stay short
    server = ServeProcess(
        policy_dirs["pendulum"],
        tmp_path,
        SAGEMAKER_RAY_RL_SERVER="ray-serve",
        SAGEMAKER_RAY_SERVE_REPLICAS="1",
        SAGEMAKER_RAY_SERVE_BATCH_WAIT_TIMEOUT_S="0.05",
        RAY_TMPDIR=str(ray_tmp),
    )
    try:
        server.wait_until_healthy(timeout=180)
        gunicorn = servers("pendulum").url
        for body in (
            {"instances": [[1.0, 0.0, 0.5], [0.0, 1.0, -3.0]], "outputs": ["action_dist_inputs", "vf_preds"]},
            {"inputs": {"observations": [[1.0, 0.0, 0.5]]}},
            {"instances": [[1.0, 0.0]]},
            {"observation": [1.0, 0.0, 0.5], "outputs": ["vf_preds", "nope"]},
        ):
            ours = requests.post(f"{server.url}/invocations", json=body, timeout=30)
            reference = requests.post(f"{gunicorn}/invocations", json=body, timeout=30)
            assert (ours.status_code, ours.json()) == (reference.status_code, reference.json())
        lines = requests.post(
            f"{server.url}/invocations",
            data="[1, 0, 0.5]\n[0, 1, -3]\n",
            headers={"Content-Type": "application/jsonlines"},
            timeout=30,
        )
        assert lines.status_code == 200 and len(lines.text.splitlines()) == 2
        assert requests.get(f"{server.url}/execution-parameters", timeout=5).json()["BatchStrategy"] == "MULTI_RECORD"

        observations = [to_json(o) for o in samples(gym.spaces.Box(-1.0, 1.0, (3,), np.float32), 24, seed=7)]
        bodies = [{"observation": o, "outputs": ["action_dist_inputs"]} for o in observations]
        bodies[5] = {"observation": [1.0, 2.0]}  # a bad one among them: only its own answer is a 400
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda b: requests.post(f"{server.url}/invocations", json=b, timeout=60), bodies))
        for body, ours in zip(bodies, answers):
            reference = requests.post(f"{gunicorn}/invocations", json=body, timeout=30)
            assert ours.status_code == reference.status_code
            if ours.status_code != 200:
                assert ours.json() == reference.json()
                continue
            for name in ("action", "action_dist_inputs"):
                np.testing.assert_allclose(
                    ours.json()["predictions"][0][name], reference.json()["predictions"][0][name], rtol=1e-6, atol=1e-6
                )
    finally:
        code = server.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert code == 0, server.log.read_text()[-3000:]


@pytest.mark.parametrize("kind", ["cartpole", "pendulum", "dict_obs"])
def test_concurrent_requests_answer_as_each_alone(kind, policy_dirs, servers):
    """gunicorn's gevent worker runs the forward passes of requests that arrive together as one
    (`batching.GreenBatcher`): 32 concurrent requests, one of them bad and one exploring, each
    get the status and answer they get alone (Discrete actions identical, floats up to float32
    rounding)."""
    from concurrent.futures import ThreadPoolExecutor

    from sagemaker_ray_rl.inference.policy import Policy

    url = servers(kind).url + "/invocations"
    space = Policy.load(policy_dirs[kind]).pipeline(None).observation_space
    bodies = [{"observation": to_json(o), "outputs": ["action_dist_inputs"]} for o in samples(space, 32, seed=11)]
    bodies[9] = {"observation": "not an observation"}
    bodies[20]["explore"] = True
    alone = [requests.post(url, json=body, timeout=30) for body in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda body: requests.post(url, json=body, timeout=60), bodies))
    assert (
        [r.status_code for r in together]
        == [r.status_code for r in alone]
        == [400 if i == 9 else 200 for i in range(32)]
    )
    assert together[9].json() == alone[9].json()
    for i, (one, batched) in enumerate(zip(alone, together)):
        if i in (9, 20):
            continue
        one, batched = one.json()["predictions"][0], batched.json()["predictions"][0]
        if kind != "pendulum":
            assert batched["action"] == one["action"]
        for a, b in zip(tree_leaves(one), tree_leaves(batched)):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["cartpole", "pendulum", "meanstd", "dict_obs", "lstm"])
def test_batched_jobs_answer_as_each_alone_in_one_forward_pass(kind, policy_dirs):
    """What Ray Serve's ``@serve.batch`` runs: single-observation requests with the same options
    go through one `Policy.compute`, a request with other options through its own, and every
    request gets the answer it gets alone (Discrete actions identical; floats up to the float32
    rounding MKL's matrix products give a different batch size)."""
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving import codecs
    from sagemaker_ray_rl.serving.protocol import compute_jobs, plan

    policy = Policy.load(policy_dirs[kind])
    space = policy.pipeline(None).observation_space
    requests_ = [{"observation": to_json(o), "outputs": ["action_dist_inputs"]} for o in samples(space, 12, seed=3)]
    requests_[4]["explore"] = True  # other options: its own forward pass
    if kind == "lstm":
        alone_state = policy.compute(np.zeros((1, 4), np.float32))["state_out"]
        requests_[7]["state"] = {k: np.asarray(v)[0].tolist() for k, v in alone_state.items()}
    jobs = [
        job for body in requests_ for job in plan(policy, codecs.decode(json.dumps(body).encode(), codecs.JSON, {}))
    ]
    alone = [compute_jobs(policy, [job])[0] for job in jobs]

    calls = []
    compute = policy.compute
    policy.compute = lambda *args, **kwargs: calls.append(len(tree_leaves(args[0])[0])) or compute(*args, **kwargs)
    try:
        together = compute_jobs(policy, jobs)
    finally:
        policy.compute = compute
    assert sorted(calls) == ([1, 1, 10] if kind == "lstm" else [1, 11])
    for i, (one, batched) in enumerate(zip(alone, together)):
        assert set(one) == set(batched)
        if i == 4:  # sampled: a valid action of the same shape
            assert np.shape(batched["action"]) == np.shape(one["action"])
            continue
        if kind in ("cartpole", "dict_obs", "lstm"):
            assert batched["action"].tolist() == one["action"].tolist()
        for a, b in zip(tree_leaves(one), tree_leaves(batched)):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def tree_leaves(value):
    import tree

    return tree.flatten(value)


@pytest.mark.parametrize("kind", ["pendulum", "meanstd", "dict_obs"])
def test_episode_path_equals_the_batched_path(kind, policy_dirs):
    """The fallback for pipelines with connectors the batched path does not know (RLlib's
    per-episode connectors) gives the same answers as the batched path."""
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving.observations import observation_batch

    pipeline = Policy.load(policy_dirs[kind]).pipeline(None)
    assert pipeline.batched
    space = pipeline.observation_space
    batch = observation_batch([to_json(o) for o in samples(space, seed=5)], space, "instances")
    batched, _ = pipeline._batched(batch, False, None)
    episodes, _ = pipeline._episodes(batch, False)
    for column in ("actions_for_env", "action_dist_inputs"):
        np.testing.assert_allclose(episodes[column], batched[column], rtol=1e-5, atol=1e-6)
