"""The user entry points in examples/, each run in the real image as SageMaker runs a source dir
(``sagemaker_program`` + ``sagemaker_submit_directory``), shortened by hyperparameters, and the model
each exports served by the image (without the examples' code: the server needs none of it)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from container.conftest import REPO, docker
from container.test_image import Server
from helpers import write_job

pytestmark = pytest.mark.container

# Shortened runs: 2 iterations of small batches; everything else is the example's own default.
SHORT = {
    "rl.training.stop.training_iteration": 2,
    "rl.training.config.train_batch_size_per_learner": 400,
    "rl.training.config.minibatch_size": 100,
    "rl.training.config.num_epochs": 2,
    "num_env_runners": 1,
}
EXAMPLES = {
    "cartpole.py": {**SHORT, "rl.training.config.lr": 0.0005},
    "newsvendor.py": {**SHORT, "evaluation_episodes": 5, "env_config": {"mean_demand": 8.0}},
    "custom_model.py": {
        **SHORT,
        "custom_model": "residual_mlp",
        "rl_module.model_config": {"hidden_dim": 32, "num_blocks": 3},
    },
    "multi_agent.py": SHORT,
}


@pytest.fixture(scope="module")
def example_jobs(image: str, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """name -> (job dir, the `docker run ... train` result), every example run once, two jobs at a
    time (a job spends part of its time waiting on Ray's start and stop, which the other fills)."""

    def run_job(base: Path):
        return docker(
            "run",
            "--rm",
            "-v",
            f"{base}:/opt/ml",
            "-v",
            f"{REPO / 'examples'}:/opt/ml/code:ro",
            image,
            "train",
            timeout=900,
        )

    bases = {
        program: write_job(
            tmp_path_factory.mktemp(program.removesuffix(".py")),
            {**hyperparameters, "sagemaker_program": program, "sagemaker_submit_directory": "/opt/ml/code"},
        )
        for program, hyperparameters in EXAMPLES.items()
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {program: pool.submit(run_job, base) for program, base in bases.items()}
        return {program: (bases[program], run.result()) for program, run in runs.items()}


def trained(example_jobs, program: str) -> Path:
    base, run = example_jobs[program]
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    model = base / "model"
    assert (model / "rllib_checkpoint.json").is_file() and (model / "metadata.json").is_file()
    assert (base / "output" / "success").exists()
    return base


def serve_and_ask(image: str, model: Path, body: dict) -> dict:
    server = Server(image, model)
    try:
        server.wait_until_healthy()
        response = requests.post(f"{server.url}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()
    finally:
        assert server.stop() == 0, server.logs()


def test_cartpole_in_the_style_of_seed_000(image: str, example_jobs):
    base = trained(example_jobs, "cartpole.py")
    output = example_jobs["cartpole.py"][1].stdout
    # train_and_export's line (the examples end with it).
    assert "training_iteration: 2" in output and "to /opt/ml/model (metadata.json written)" in output
    # The job's hyperparameter won over the script's default (lr 0.0001); the other defaults stayed.
    config = json.loads(next((base / "checkpoints" / "experiment").glob("*/params.json")).read_text())
    assert config["lr"] == 0.0005 and config["batch_mode"] == "truncate_episodes"
    answer = serve_and_ask(image, base / "model", {"instances": [[0.0, 0.1, 0.02, -0.1]]})
    assert answer["predictions"][0]["action"] in (0, 1)


def test_newsvendor_compares_ppo_with_the_base_stock_policy(image: str, example_jobs):
    base = trained(example_jobs, "newsvendor.py")
    report = json.loads((base / "output" / "data" / "newsvendor_evaluation.json").read_text())
    assert report["episodes"] == 5
    for name in ("newsvendor_ppo_profit_mean", "newsvendor_base_stock_profit_mean"):
        assert f"{name}: " in example_jobs["newsvendor.py"][1].stdout
    # The base-stock policy is profitable on this store; the value is deterministic given the seeds.
    assert report["newsvendor_base_stock_profit_mean"] > 0
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    assert metadata["env_config"] == {"mean_demand": 8.0}
    # Served with the MeanStdFilter restored: an order in [0, 40] for a raw-unit observation.
    observation = [30.0, 12.0, 1.5, 6.0, 8.0, 25.0, 8.0, 8.0, 8.0, 8.0]
    answer = serve_and_ask(image, base / "model", {"observation": observation, "outputs": ["action_prob"]})
    prediction = answer["predictions"][0]
    assert 0 <= prediction["action"] <= 40 and 0 < prediction["action_prob"] <= 1


def test_custom_rlmodule_selected_by_hyperparameter(image: str, example_jobs):
    base = trained(example_jobs, "custom_model.py")
    assert "to /opt/ml/model (metadata.json written)" in example_jobs["custom_model.py"][1].stdout
    module_dir = base / "model" / "learner_group" / "learner" / "rl_module" / "default_policy"
    # The module's own class and its model_config (from the hyperparameter) are in the checkpoint.
    ctor = docker(
        "run",
        "--rm",
        "-v",
        f"{module_dir}:/m:ro",
        image,
        "python",
        "-c",
        "from ray.rllib.core.rl_module.rl_module import RLModule; m = RLModule.from_checkpoint('/m'); "
        "print(type(m).__name__, len(m.encoder) - 2, m.pi.in_features)",
    )
    assert ctor.returncode == 0, ctor.stderr[-3000:]
    assert ctor.stdout.split() == ["ResidualMLPModule", "3", "32"]
    answer = serve_and_ask(image, base / "model", {"instances": [[0.0, 0.1, 0.02, -0.1]], "outputs": ["vf_preds"]})
    assert answer["predictions"][0]["action"] in (0, 1) and isinstance(answer["predictions"][0]["vf_preds"], float)


def test_multi_agent_two_policies_with_different_spaces(image: str, example_jobs):
    base = trained(example_jobs, "multi_agent.py")
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    assert sorted(metadata["module_ids"]) == ["balancer", "swinger"]
    answer = serve_and_ask(
        image, base / "model", {"agents": {"balancer": [0.0, 0.1, 0.02, -0.1], "swinger": [1.0, 0.0, 0.5]}}
    )
    assert answer["agents"]["balancer"]["action"] in (0, 1)
    torque = answer["agents"]["swinger"]["action"]
    assert len(torque) == 1 and -2.0 <= torque[0] <= 2.0
