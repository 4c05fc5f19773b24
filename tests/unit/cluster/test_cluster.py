"""The cluster launcher's pure parts: ray.* hyperparameters, ray start command lines, object store
sizing, placement of RLlib's actors, DNS retries and port probes."""

from __future__ import annotations

import socket

import pytest

from sagemaker_ray_rl.cluster import node, placement
from sagemaker_ray_rl.cluster.auth import RayAuth
from sagemaker_ray_rl.cluster.network import port_open, resolve_host, wait_for_port
from sagemaker_ray_rl.cluster.settings import ClusterSettings
from sagemaker_ray_rl.contract.environment import InstanceGroup, ResourceConfig
from sagemaker_ray_rl.contract.errors import ClusterError, HyperparameterError

MB = 1024 * 1024
HOSTS = ("algo-1-ab3cd", "algo-2-xk9p2", "algo-3-q1w2e")
HETERO = ResourceConfig(
    current_host=HOSTS[0],
    hosts=HOSTS,
    current_group_name="rollout",
    instance_groups=(
        InstanceGroup("rollout", "ml.c5.xlarge", (HOSTS[0], HOSTS[2])),
        InstanceGroup("learner", "ml.g5.xlarge", (HOSTS[1],)),
    ),
)


def settings(**hps) -> ClusterSettings:
    return ClusterSettings.from_hyperparameters(hps, HETERO)


class TestSettings:
    def test_defaults_wait_for_every_host(self):
        s = settings()
        assert s.join_timeout_s == 300 and s.gcs_port == 6379 and s.include_dashboard
        assert s.required_hosts(HETERO) == 3
        assert s.learner_group is None and s.env_runner_groups == ()

    def test_values_and_groups(self):
        s = settings(
            **{
                "ray.join_timeout_s": 20,
                "ray.min_hosts": 2,
                "ray.gcs_port": 6380,
                "ray.include_dashboard": "false",
                "ray.object_store_memory_mb": 256,
                "ray.learner_group": "learner",
                "ray.env_runner_groups": "rollout",
            }
        )
        assert (s.join_timeout_s, s.required_hosts(HETERO), s.gcs_port) == (20.0, 2, 6380)
        assert s.include_dashboard is False and s.object_store_bytes == 256 * MB
        assert s.learner_group == "learner" and s.learner_group_hosts == (HOSTS[1],)
        assert s.env_runner_groups == ("rollout",)
        assert settings(**{"ray.env_runner_groups": ["rollout", "learner"]}).env_runner_groups == ("rollout", "learner")

    def test_other_keys_are_not_ours(self):
        assert settings(**{"rl.training.config.lr": 0.1, "sagemaker_program": "x.py"}) == ClusterSettings()

    @pytest.mark.parametrize(
        ("key", "value", "message"),
        [
            ("ray.join_timout_s", 1, "Did you mean 'ray.join_timeout_s'"),
            ("ray.min_hosts", 4, "from 1 to 3 (the job has 3 host(s))"),
            ("ray.min_hosts", 0, "from 1 to 3"),
            ("ray.join_timeout_s", -1, "seconds > 0"),
            ("ray.join_timeout_s", "soon", "seconds > 0"),
            ("ray.gcs_port", 80, "from 1024 to 65535"),
            ("ray.include_dashboard", "yes", "true or false"),
            ("ray.object_store_memory_mb", 10, "integer >= 76"),
            ("ray.learner_group", "gpu", "expected one of the job's instance groups: learner, rollout, got 'gpu'"),
            ("ray.env_runner_groups", {"a": 1}, "comma-separated list"),
        ],
    )
    def test_bad_values_name_the_key(self, key, value, message):
        with pytest.raises(HyperparameterError, match=key.replace(".", r"\.")) as err:
            settings(**{key: value})
        assert message in str(err.value)

    def test_groups_need_instance_groups(self):
        with pytest.raises(HyperparameterError, match="resourceconfig.json has no instance_groups"):
            ClusterSettings.from_hyperparameters({"ray.learner_group": "x"}, ResourceConfig.single_host("h"))


class TestNode:
    def test_resources_carry_group_host_and_roles(self):
        s = settings(**{"ray.learner_group": "learner", "ray.env_runner_groups": "rollout"})
        assert node.node_resources(HOSTS[1], "learner", s) == {
            "instance_group:learner": 1.0,
            f"sagemaker_host:{HOSTS[1]}": 1.0,
            "learner_host": 1.0,
        }
        assert node.node_resources(HOSTS[0], "rollout", s) == {
            "instance_group:rollout": 1.0,
            f"sagemaker_host:{HOSTS[0]}": 1.0,
            "env_runner_host": 1.0,
        }

    def test_head_and_worker_commands(self):
        plan = node.ObjectStorePlan(100 * MB, "/tmp", "")
        spec = node.NodeSpec("10.0.0.2", 4, 1, {"instance_group:g": 1.0}, plan)
        head = node.head_command(spec, ClusterSettings(gcs_port=6390))
        assert head[1:3] == ["start", "--block"]
        for arg in (
            "--head",
            "--port=6390",
            "--node-ip-address=10.0.0.2",
            "--num-cpus=4",
            "--num-gpus=1",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--object-store-memory={100 * MB}",
            "--plasma-directory=/tmp",
            '--resources={"instance_group:g": 1.0}',
        ):
            assert arg in head
        worker = node.worker_command(spec, "10.0.0.1:6390")
        assert "--address=10.0.0.1:6390" in worker and "--head" not in worker

    def test_object_store_in_shm_when_it_fits(self):
        plan = node.plan_object_store(None, shm_free_bytes=8000 * MB, memory_bytes=10000 * MB)
        assert plan.size_bytes == 3000 * MB and plan.directory is None

    def test_object_store_uses_most_of_a_large_enough_shm(self):
        plan = node.plan_object_store(None, shm_free_bytes=1000 * MB, memory_bytes=10000 * MB)
        assert plan.size_bytes == 900 * MB and plan.directory is None

    def test_object_store_in_tmp_with_dockers_64_mb_shm(self):
        plan = node.plan_object_store(None, shm_free_bytes=64 * MB, memory_bytes=10000 * MB)
        assert plan.directory == "/tmp" and plan.size_bytes == 3000 * MB
        assert "64 MB free" in plan.reason

    def test_a_requested_size_is_kept(self):
        plan = node.plan_object_store(2000 * MB, shm_free_bytes=1000 * MB, memory_bytes=10000 * MB)
        assert plan.size_bytes == 2000 * MB and plan.directory == "/tmp"

    def test_auth_mode_is_explicit(self):
        env = node.ray_environment(RayAuth("disabled", "test"), {"RAY_AUTH_MODE": "token"})
        assert env["RAY_AUTH_MODE"] == "disabled" and env["RAY_USAGE_STATS_ENABLED"] == "0"
        env = node.ray_environment(RayAuth("token", "test"), {"RAY_AUTH_TOKEN": "t"})
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t" and "RAY_AUTH_TOKEN_PATH" not in env


def ray_node(host: str, cpus: int, *roles: str, alive: bool = True) -> dict:
    resources = {"CPU": float(cpus), f"sagemaker_host:{host}": 1.0, **{r: 1.0 for r in roles}}
    return {"NodeID": host, "Alive": alive, "Resources": resources}


class TestPlacement:
    def test_default_env_runners_fill_the_cluster_less_the_main_process(self):
        nodes = [ray_node(h, 2) for h in HOSTS] + [ray_node("gone", 8, alive=False)]
        assert placement.default_num_env_runners(nodes, ClusterSettings(), HOSTS[0]) == 5
        assert placement.default_num_env_runners(nodes[:1], ClusterSettings(), HOSTS[0]) == 1
        assert placement.default_num_env_runners(nodes, ClusterSettings(), HOSTS[0], num_learners=2) == 3

    def test_default_env_runners_on_their_group_only(self):
        s = settings(**{"ray.learner_group": "learner", "ray.env_runner_groups": "rollout"})
        nodes = [
            ray_node(HOSTS[0], 4, "env_runner_host"),
            ray_node(HOSTS[1], 8, "learner_host"),
            ray_node(HOSTS[2], 4, "env_runner_host"),
        ]
        assert placement.default_num_env_runners(nodes, s, HOSTS[0], num_learners=1) == 7

    def test_place_actors(self):
        from ray.rllib.algorithms.ppo import PPOConfig

        s = settings(**{"ray.learner_group": "learner", "ray.env_runner_groups": "rollout"})
        config = PPOConfig().env_runners(custom_resources_per_env_runner={"mine": 1})
        placement.place_actors(config, s, HOSTS[0])
        assert config.custom_resources_for_main_process == {f"sagemaker_host:{HOSTS[0]}": placement.ACTOR_SHARE}
        # The learner group does not hold the master: the learner becomes a remote actor there.
        assert config.num_learners == 1
        assert config.custom_resources_per_learner == {"learner_host": placement.ACTOR_SHARE}
        assert config.custom_resources_per_env_runner == {"mine": 1, "env_runner_host": placement.ACTOR_SHARE}

    def test_learner_stays_in_the_main_process_on_a_master_of_its_group(self):
        from ray.rllib.algorithms.ppo import PPOConfig

        config = PPOConfig()
        placement.place_actors(config, settings(**{"ray.learner_group": "rollout"}), HOSTS[0])
        assert config.num_learners == 0

    def test_check_fits(self):
        from ray.rllib.algorithms.ppo import PPOConfig

        nodes = [ray_node(h, 2) for h in HOSTS[:2]]
        placement.check_fits(PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=3), nodes)
        with pytest.raises(ClusterError, match="CPU: 5 asked, 4 in the cluster"):
            placement.check_fits(PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=4), nodes)

    def test_host_of(self):
        assert placement.host_of({"CPU": 1, "sagemaker_host:algo-1-x": 1}) == "algo-1-x"
        assert placement.host_of({"CPU": 1}) is None


class TestNetwork:
    def test_resolve_retries_until_the_timeout(self):
        now = [0.0]
        sleeps = []

        def sleep(s):
            sleeps.append(s)
            now[0] += s

        with pytest.raises(ClusterError, match="did not resolve to an address within 3 s"):
            resolve_host("no-such-host.invalid", timeout_s=3, clock=lambda: now[0], sleep=sleep)
        assert len(sleeps) == 3

    def test_resolve_localhost(self):
        assert resolve_host("localhost", timeout_s=1) == "127.0.0.1"

    def test_port_probes(self):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        try:
            assert port_open("127.0.0.1", port)
            assert wait_for_port("127.0.0.1", port, timeout_s=1)
        finally:
            server.close()
        assert not port_open("127.0.0.1", port)
        assert not wait_for_port("127.0.0.1", port, timeout_s=0.5, interval_s=0.1)


def test_the_dashboard_starts_by_default_only_on_several_hosts():
    assert not ClusterSettings.from_hyperparameters({}, ResourceConfig.single_host("algo-1")).include_dashboard
    assert ClusterSettings.from_hyperparameters(
        {"ray.include_dashboard": "true"}, ResourceConfig.single_host("algo-1")
    ).include_dashboard
    assert settings().include_dashboard


def test_a_gcs_port_in_use_fails_before_any_head_starts(tmp_path, monkeypatch):
    from helpers import write_job

    from sagemaker_ray_rl.cluster.launcher import start_cluster
    from sagemaker_ray_rl.contract.environment import Environment

    resource_config = {"current_host": "localhost", "hosts": ["localhost"], "network_interface_name": "lo"}
    base = write_job(tmp_path, {}, resourceconfig=resource_config, inputdataconfig={})
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    other_head = socket.socket()
    other_head.bind(("127.0.0.1", 0))
    other_head.listen()
    port = other_head.getsockname()[1]
    try:
        environment = Environment.from_environ()
        cluster_settings = ClusterSettings.from_hyperparameters({"ray.gcs_port": port}, environment.resource_config)
        with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 .* already in use.*ray.gcs_port"):
            start_cluster(environment, cluster_settings)
    finally:
        other_head.close()
