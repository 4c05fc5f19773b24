"""Train tiny policies of each kind the server must handle and save them as a user entry point
would (``algo.save(model_dir)``, no metadata of ours).

    python tests/integration/train_policies.py OUT_DIR KIND [KIND ...]

Kinds: ``cartpole`` (Discrete actions), ``pendulum`` (Box actions), ``meanstd`` (Pendulum with a
MeanStdFilter connector), ``dict_obs`` (Dict observations flattened by FlattenObservations),
``multi_agent`` (two modules on MultiAgentCartPole), ``lstm`` (a stateful module on CartPole).
One training iteration each on a tiny batch: the tests check serving, not learning. Except
``cartpole_good``, a policy that plays CartPole well even sampling: the PPO module fitted by
cross-entropy to a fixed linear controller's actions (behaviour cloning; `clone_controller`), a
few seconds where PPO itself took over 10 minutes to play 200 steps on a loaded machine.
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
    if kind in ("cartpole", "cartpole_good"):
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


def controller(obs):
    """The fixed CartPole controller cloned by ``cartpole_good``: push right (1) when
    ``θ + 0.5 θ̇ + 0.1 ẋ + 0.05 x`` > 0 (pole angle, angular velocity, cart velocity, cart position;
    obs float ``(n, 4)`` -> int ``(n,)``). It balances CartPole-v1 for its 500 steps from every reset."""
    import numpy as np

    return (obs[:, 2] + 0.5 * obs[:, 3] + 0.1 * obs[:, 1] + 0.05 * obs[:, 0] > 0).astype(np.int64)


def clone_controller(module, seed: int = 0) -> None:
    """Fit the PPO `module`'s action logits to `controller` (cross-entropy, Adam 1e-3, 1000 steps
    of 256) on the states of 20 CartPole episodes in which the controller acts with 20 % random
    actions (states near the ones a sampling policy visits)."""
    import gymnasium as gym
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    env, states = gym.make("CartPole-v1", max_episode_steps=200), []
    for episode in range(20):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            states.append(obs)
            action = int(controller(obs[None])[0]) if rng.random() > 0.2 else int(rng.integers(2))
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    obs = torch.as_tensor(np.asarray(states, dtype=np.float32))
    labels = torch.as_tensor(controller(obs.numpy()))
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    for _ in range(1000):
        idx = torch.randint(0, len(obs), (256,))
        logits = module.forward_train({"obs": obs[idx]})["action_dist_inputs"]
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    import ray

    out = Path(sys.argv[1])
    # A new local cluster, never one found through /tmp/ray (another job's on this machine).
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    for kind in sys.argv[2:]:
        algo = config(kind).build_algo()
        if kind == "cartpole_good":
            clone_controller(algo.learner_group._learner.module["default_policy"])
        else:
            algo.train()
        algo.save(str((out / kind).resolve()))
        algo.stop()
        print(f"trained {kind}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
