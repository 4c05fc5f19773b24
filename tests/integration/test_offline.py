"""Batch RL through `train`: a collect job, then an offline job reading its output as a channel
(real RLlib, real env, short settings), plus the dataset read back by RLlib's own offline reader."""

from __future__ import annotations

import collections
import csv
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from helpers import TrainingRun, run_train, write_job

from sagemaker_ray_rl.offline.dataset import dataset_spaces, read_dataset

pytestmark = pytest.mark.integration

ENV_CONFIG = {"max_episode_steps": 200}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Ray's dashboard needs ray[default] packages that this venv's ray[rllib] lacks; the jobs do not need it.
#: A free GCS port: another job's Ray head on the same machine (parallel test runs) holds 6379.
NO_DASHBOARD = {"ray.include_dashboard": "false", "ray.gcs_port": str(_free_port())}


@pytest.fixture(scope="module")
def collect_job(tmp_path_factory) -> TrainingRun:
    base = write_job(
        tmp_path_factory.mktemp("collect"),
        {
            "mode": "collect",
            "env": "CartPole-v1",
            "env_config": ENV_CONFIG,
            "offline.num_episodes": 120,
            "offline.num_envs": 20,
            "offline.seed": 3,
            **NO_DASHBOARD,
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def offline_job(collect_job, tmp_path_factory) -> TrainingRun:
    base = write_job(
        tmp_path_factory.mktemp("offline"),
        {
            "mode": "offline",
            "env": "CartPole-v1",
            "env_config": ENV_CONFIG,
            "offline.num_updates": 400,
            "offline.evaluate_every": 200,
            "offline.num_runs": 2,
            "offline.fqe_updates": 200,
            "offline.model_updates": 300,
            "offline.eval_episodes": 3,
            "offline.select": "dr",
            **NO_DASHBOARD,
        },
        inputdataconfig={"train": {}},
    )
    shutil.copytree(collect_job.base / "output" / "data" / "dataset", base / "input" / "data" / "train")
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_collect_writes_exactly_the_episodes_asked_for(collect_job: TrainingRun):
    data = read_dataset(collect_job.base / "output" / "data" / "dataset")
    assert data.num_episodes == 120
    assert np.all(data.action_prob == 0.5)
    assert data.terminateds.sum() + data.truncateds.sum() == 120
    assert "episode_return_mean: " in collect_job.output


def test_dataset_round_trips_through_rllibs_offline_reader(collect_job: TrainingRun):
    """ray.data.read_parquet (what RLlib's OfflineData runs) + OfflinePreLearner._map_to_episodes:
    the same episodes, transitions and returns as were collected."""
    import ray
    from ray.rllib.algorithms.bc import BCConfig
    from ray.rllib.offline.offline_prelearner import OfflinePreLearner

    path = collect_job.base / "output" / "data" / "dataset"
    obs_space, act_space = dataset_spaces(path)
    config = (
        BCConfig().environment(observation_space=obs_space, action_space=act_space).offline_data(input_=[str(path)])
    )
    spec = config.get_multi_rl_module_spec(
        spaces={"__env__": (obs_space, act_space), "default_policy": (obs_space, act_space)}
    )
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        prelearner = OfflinePreLearner(config=config, spaces=(obs_space, act_space), module_spec=spec)
        returns: dict[str, float] = collections.defaultdict(float)
        steps = 0
        for batch in ray.data.read_parquet(str(path)).iter_batches(batch_size=1024, batch_format="numpy"):
            for episode in prelearner._map_to_episodes(batch)["episodes"]:
                returns[episode.id_] += float(sum(episode.get_rewards()))
                steps += len(episode)
    finally:
        ray.shutdown()
    data = read_dataset(path)
    assert len(returns) == data.num_episodes == 120
    assert steps == len(data)
    expected = dict(zip(data.eps_ids, data.episode_returns()))
    assert returns == pytest.approx(expected)


def test_offline_job_prints_ope_metric_lines_per_checkpoint(offline_job: TrainingRun):
    for name in ("run", "offline_updates", "ope_is", "ope_pdis", "ope_dm", "ope_dr", "ope_mb", "eval_return_mean"):
        assert offline_job.output.count(f"\n{name}: ") == 4, name
    # WIS is undefined (NaN, not printed) when no episode of the data follows the greedy policy
    assert offline_job.output.count("\nope_wis: ") <= 4
    assert "rollouts of 200 steps" in offline_job.output  # mb's horizon: the env's episode limit


def test_offline_job_exports_the_checkpoint_with_the_best_dr_estimate(offline_job: TrainingRun):
    from sagemaker_ray_rl.inference.policy import Policy

    out = offline_job.base / "output" / "data"
    with open(out / "ope.csv") as f:
        rows = list(csv.DictReader(f))
    # two training runs, each checkpointed twice; all four compete
    assert [(int(r["run"]), int(r["offline_updates"])) for r in rows] == [(0, 200), (0, 400), (1, 200), (1, 400)]
    assert len({r["checkpoint"] for r in rows}) == 4
    best = max(rows, key=lambda r: float(r["ope_dr"]))
    selection = json.loads((out / "selection.json").read_text())
    assert selection["selected"]["checkpoint"] == best["checkpoint"]
    assert set(selection["rank_correlations"]) == {"is", "wis", "pdis", "dm", "dr", "mb"}

    model_dir = offline_job.base / "model"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["algorithm"] == "DiscreteCQL"
    assert metadata["metrics"]["offline_updates"] == int(best["offline_updates"])
    policy = Policy.load(model_dir)
    actions = policy.compute(np.zeros((4, 4), np.float32))["action"]
    assert actions.shape == (4,) and set(actions.tolist()) <= {0, 1}
    # the exported module is the selected checkpoint's, not the last one's
    module = Path("learner_group") / "learner" / "rl_module" / "default_policy"
    assert _files(model_dir / module) == _files(Path(best["checkpoint"]) / module)


def test_offline_job_ends_with_a_promotion_verdict_against_the_logged_return(offline_job: TrainingRun, collect_job):
    out = offline_job.base / "output" / "data"
    report = json.loads((out / "promotion.json").read_text())
    selection = json.loads((out / "selection.json").read_text())
    logged = read_dataset(collect_job.base / "output" / "data" / "dataset")
    assert report["estimator"] == "dr" and report["checkpoint"] == selection["selected"]["checkpoint"]
    assert report["episodes"] == logged.num_episodes == 120 and report["gamma"] == 0.99
    assert report["logged"]["return_mean"] == pytest.approx(logged.episode_returns(0.99).mean())
    assert report["logged"]["undiscounted_return_mean"] == pytest.approx(logged.episode_returns().mean())
    assert {"is", "pdis", "dm", "dr", "mb"} <= set(report["estimates"])
    for name, interval in report["estimates"].items():
        if interval["low"] is not None:
            assert interval["low"] <= interval["estimate"] <= interval["high"], name
    # the selected checkpoint's estimates, recomputed per episode for the bootstrap, are the ones it was selected by
    assert report["estimates"]["dr"]["estimate"] == pytest.approx(selection["selected"]["ope_dr"], rel=1e-4)
    assert report["estimates"]["mb"]["estimate"] == pytest.approx(selection["selected"]["ope_mb"], rel=1e-4)
    beats = report["estimates"]["dr"]["low"] > report["logged"]["return_mean"]
    assert report["verdict"] == ("promote" if beats else "keep")
    assert f"\npromotion_verdict: {1 if beats else 0}\n" in offline_job.output
    assert f"Promotion verdict: {report['verdict']} (dr lower bound" in offline_job.output
    metadata = json.loads((offline_job.base / "model" / "metadata.json").read_text())
    assert metadata["offline"]["promotion"]["verdict"] == report["verdict"]


def test_offline_job_on_data_without_behaviour_probabilities_skips_importance_sampling(
    collect_job: TrainingRun, tmp_path: Path
):
    """A dataset converted from endpoint captures whose answers had no action_prob (NaN there)."""
    import pyarrow.parquet as pq

    base = write_job(
        tmp_path,
        {
            "mode": "offline",
            "env": "CartPole-v1",
            "env_config": ENV_CONFIG,
            "offline.num_updates": 200,
            "offline.evaluate_every": 200,
            "offline.num_runs": 1,
            "offline.fqe_updates": 100,
            "offline.model_updates": 100,
            **NO_DASHBOARD,
        },
        inputdataconfig={"train": {}},
    )
    channel = base / "input" / "data" / "train"
    shutil.copytree(collect_job.base / "output" / "data" / "dataset", channel)
    for file in channel.glob("*.parquet"):
        table = pq.read_table(file)
        nan = table.column("action_prob").to_numpy() * np.nan
        table = table.set_column(table.schema.get_field_index("action_prob"), "action_prob", [nan])
        pq.write_table(table.set_column(table.schema.get_field_index("action_logp"), "action_logp", [nan]), file)
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    assert "OPE: skipped is, wis, pdis, dr: the dataset has no behaviour probabilities" in run.output
    assert "\nope_is: " not in run.output and "\nope_mb: " in run.output
    # selected by mb, no real returns: fitted-Q evaluation (dm) runs for the exported checkpoint only
    assert "\nope_dm: " not in run.output
    report = json.loads((base / "output" / "data" / "promotion.json").read_text())
    assert set(report["estimates"]) == {"dm", "mb"} and set(report["skipped"]) == {"is", "wis", "pdis", "dr"}
    assert report["estimator"] == "mb"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_offline_job_without_its_channel_fails_with_a_clear_reason(tmp_path: Path):
    base = write_job(tmp_path, {"mode": "offline", "offline.num_updates": 10, **NO_DASHBOARD})
    run = run_train(base)
    assert run.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "input channel 'train'" in failure


def test_unknown_offline_hyperparameter_fails_before_ray_starts(tmp_path: Path):
    base = write_job(tmp_path, {"mode": "collect", "offline.num_episode": 10})
    run = run_train(base)
    assert run.returncode != 0
    assert "offline.num_episode" in (base / "output" / "failure").read_text()


@pytest.mark.parametrize("algorithm, name", [("bc", "BC"), ("marwil", "MARWIL")])
def test_rllib_imitation_algorithms_train_on_whole_episodes_and_their_model_is_served(
    collect_job: TrainingRun, tmp_path: Path, algorithm: str, name: str
):
    """offline.algorithm=bc/marwil: RLlib's own BC/MARWIL train from the dataset, OPE picks a
    checkpoint, and the exported model answers batch-transform records with action_prob."""
    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving.flask_app import create_app

    base = write_job(
        tmp_path,
        {
            "mode": "offline",
            "env": "CartPole-v1",
            "env_config": ENV_CONFIG,
            "offline.algorithm": algorithm,
            "offline.num_updates": 20,
            "offline.evaluate_every": 10,
            "offline.num_runs": 1,
            "offline.fqe_updates": 100,
            "offline.model_updates": 200,
            "offline.eval_episodes": 2,
            **NO_DASHBOARD,
        },
        inputdataconfig={"train": {}},
    )
    shutil.copytree(collect_job.base / "output" / "data" / "dataset", base / "input" / "data" / "train")
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    assert f"Offline training {name} on 120 episodes" in run.output
    with open(base / "output" / "data" / "ope.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["offline_updates"]) for r in rows] == [10, 20]
    assert all(np.isfinite(float(r["ope_dm"])) and np.isfinite(float(r["ope_mb"])) for r in rows)
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    assert metadata["algorithm"] == name

    client = create_app(Policy.load(base / "model"), ServingSettings()).test_client()
    records = "".join(
        json.dumps({"observation": [0.01 * i, 0.0, -0.02, 0.1], "explore": True, "outputs": ["action_prob"]}) + "\n"
        for i in range(5)
    )
    response = client.post("/invocations", data=records, content_type="application/jsonlines")
    assert response.status_code == 200, response.data
    answers = [json.loads(line) for line in response.data.decode().splitlines()]
    assert len(answers) == 5
    for answer in answers:
        assert answer["action"] in (0, 1) and 0.0 < answer["action_prob"] <= 1.0


def test_exploring_requests_to_an_epsilon_greedy_model_get_its_probabilities(offline_job: TrainingRun):
    """explore=true on a DQN-style module (the exported DiscreteCQL) is epsilon-greedy at the
    schedule's final epsilon, and action_prob is that policy's probability (never a 5xx)."""
    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving.flask_app import create_app

    policy = Policy.load(offline_job.base / "model")
    client = create_app(policy, ServingSettings()).test_client()
    observations = [[0.01 * i, 0.0, -0.02, 0.1] for i in range(200)]
    greedy = client.post("/invocations", json={"instances": observations})
    explored = client.post(
        "/invocations", json={"instances": observations, "explore": True, "outputs": ["action_prob", "action_logp"]}
    )
    assert greedy.status_code == 200 and explored.status_code == 200, explored.data
    module = policy.pipeline(None).module
    epsilon = float(module.epsilon_schedule.get_current_value())
    assert 0 < epsilon < 1
    for before, after in zip(greedy.json["predictions"], explored.json["predictions"]):
        expected = 1 - epsilon + epsilon / 2 if after["action"] == before["action"] else epsilon / 2
        assert after["action_prob"] == pytest.approx(expected, rel=1e-5)
        assert after["action_logp"] == pytest.approx(np.log(expected), abs=1e-5)


@pytest.fixture(scope="module")
def box_collect_job(tmp_path_factory) -> TrainingRun:
    base = write_job(
        tmp_path_factory.mktemp("collect-box"),
        {
            "mode": "collect",
            "env": "Pendulum-v1",
            "env_config": {"max_episode_steps": 50},
            "offline.num_episodes": 12,
            "offline.num_envs": 4,
            "offline.seed": 5,
            **NO_DASHBOARD,
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_collect_on_a_box_env_records_float_actions_and_the_uniform_density(box_collect_job: TrainingRun):
    data = read_dataset(box_collect_job.base / "output" / "data" / "dataset")
    assert data.num_episodes == 12 and len(data) == 12 * 50
    assert data.actions.shape == (600, 1) and data.actions.dtype == np.float32
    assert np.all(np.abs(data.actions) <= 2.0) and data.actions.std() > 0.5
    assert np.allclose(data.action_prob, 0.25)  # 1 / (high - low) = 1 / 4


@pytest.mark.parametrize("algorithm, name", [("cql", "CQL"), ("iql", "IQL")])
def test_rllib_cql_and_iql_train_on_box_actions_and_their_model_is_served(
    box_collect_job: TrainingRun, tmp_path: Path, algorithm: str, name: str
):
    """offline.algorithm=cql/iql on a Box dataset: RLlib's own CQL/IQL train from it, only the mb
    estimate is made (the others are reported as skipped), the real-env return is measured, and the
    exported model's actions through the server lie in the Box."""
    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving.flask_app import create_app

    base = write_job(
        tmp_path,
        {
            "mode": "offline",
            "env": "Pendulum-v1",
            "env_config": {"max_episode_steps": 50},
            "offline.algorithm": algorithm,
            "offline.num_updates": 20,
            "offline.evaluate_every": 10,
            "offline.num_runs": 1,
            "offline.model_updates": 100,
            "offline.eval_episodes": 1,
            **NO_DASHBOARD,
        },
        inputdataconfig={"train": {}},
    )
    shutil.copytree(box_collect_job.base / "output" / "data" / "dataset", base / "input" / "data" / "train")
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    assert "Ray cluster up" in run.output and f"Offline training {name} on 12 episodes" in run.output
    assert "OPE on Box actions: only mb; skipped is, wis, pdis, dr: a deterministic" in run.output
    with open(base / "output" / "data" / "ope.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["offline_updates"]) for r in rows] == [10, 20]
    for r in rows:
        assert np.isfinite(float(r["ope_mb"])) and -50 * 16.3 <= float(r["eval_return_mean"]) <= 0
        assert "ope_wis" not in r and "wis" in r["ope_skipped"]
    assert json.loads((base / "model" / "metadata.json").read_text())["algorithm"] == name

    client = create_app(Policy.load(base / "model"), ServingSettings()).test_client()
    observations = [[np.cos(0.3 * i), np.sin(0.3 * i), 0.5 * i - 4] for i in range(17)]
    response = client.post("/invocations", json={"instances": observations})
    assert response.status_code == 200, response.data
    actions = np.asarray([p["action"] for p in response.json["predictions"]], dtype=np.float64)
    assert actions.shape == (17, 1) and np.all(np.abs(actions) <= 2.0)


@pytest.mark.parametrize("algorithm, kind", [("iql", "Discrete"), ("marwil", "Box")])
def test_an_algorithm_that_does_not_fit_the_action_space_fails_before_ray_starts(
    collect_job: TrainingRun, box_collect_job: TrainingRun, tmp_path: Path, algorithm: str, kind: str
):
    source = box_collect_job if kind == "Box" else collect_job
    base = write_job(
        tmp_path, {"mode": "offline", "offline.algorithm": algorithm, **NO_DASHBOARD}, inputdataconfig={"train": {}}
    )
    shutil.copytree(source.base / "output" / "data" / "dataset", base / "input" / "data" / "train")
    run = run_train(base)
    assert run.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert f"offline.algorithm={algorithm} does not fit the {kind} action space" in failure
    assert "Ray cluster up" not in run.output  # refused before Ray started
