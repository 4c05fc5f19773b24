"""Train tiny policies of each kind the server must handle and save them as a user entry point
would (``algo.save(model_dir)``, no metadata of ours).

    python tests/integration/train_policies.py OUT_DIR KIND [KIND ...]

Kinds: ``cartpole`` (Discrete actions), ``pendulum`` (Box actions), ``meanstd`` (Pendulum with a
MeanStdFilter connector), ``dict_obs`` (Dict observations flattened by FlattenObservations),
``multi_agent`` (two modules on MultiAgentCartPole), ``lstm`` (a stateful module on CartPole).
One training iteration each on a tiny batch: the tests check serving, not learning.
Run as a subprocess so Ray's local cluster never lives in the test process.
"""

from __future__ import annotations

import sys
from pathlib import Path


def config(kind: str):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import FlattenObservations, MeanStdFilter
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    cfg = PPOConfig().training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
    cfg = cfg.env_runners(num_env_runners=0).debugging(seed=0)
    if kind == "cartpole":
        return cfg.environment("CartPole-v1")
    if kind == "pendulum":
        return cfg.environment("Pendulum-v1")
    if kind == "meanstd":
        return cfg.environment("Pendulum-v1").env_runners(env_to_module_connector=lambda *a, **k: MeanStdFilter())
    if kind == "dict_obs":
        from ray.rllib.examples.envs.classes.cartpole_with_dict_observation_space import (
            CartPoleWithDictObservationSpace,
        )

        return cfg.environment(CartPoleWithDictObservationSpace).env_runners(
            env_to_module_connector=lambda *a, **k: FlattenObservations()
        )
    if kind == "multi_agent":
        from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole

        return cfg.environment(MultiAgentCartPole, env_config={"num_agents": 2}).multi_agent(
            policies={"p0", "p1"}, policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agent_id}"
        )
    if kind == "lstm":
        return cfg.environment("CartPole-v1").rl_module(
            model_config=DefaultModelConfig(use_lstm=True, lstm_cell_size=16, max_seq_len=10)
        )
    raise SystemExit(f"unknown kind {kind!r}")


def main() -> None:
    import ray

    out = Path(sys.argv[1])
    # A new local cluster, never one found through /tmp/ray (another job's on this machine).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    for kind in sys.argv[2:]:
        algo = config(kind).build_algo()
        algo.train()
        algo.save(str((out / kind).resolve()))
        algo.stop()
        print(f"trained {kind}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
