"""Two agents, two policies, different observation and action spaces in one env: what seed 000 moved
to Ray 2.x for.

``BalanceAndSwing`` runs a CartPole (agent ``balancer``: ``Box(4,)`` observations, ``Discrete(2)``
actions) and a Pendulum (agent ``swinger``: ``Box(3,)`` observations, ``Box(1,)`` torque) side by
side; each agent leaves when its own episode ends, and the multi-agent episode ends when both have.
Each agent is trained by its own RLModule (module ids ``balancer`` and ``swinger``) with PPO. The
exported checkpoint serves both: a request names the module (``{"module_id": "swinger",
"observation": [...]}``) or maps agent ids to observations.
"""

import gymnasium as gym
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from sagemaker_ray_rl import build_experiment, register_env, train_and_export

ENV_NAME = "balance-and-swing"
AGENTS = {"balancer": "CartPole-v1", "swinger": "Pendulum-v1"}


class BalanceAndSwing(MultiAgentEnv):
    """One Gymnasium env per agent (`AGENTS`), stepped together; rewards are each env's own."""

    def __init__(self, config=None):
        super().__init__()
        self.envs = {agent: gym.make(env_id) for agent, env_id in AGENTS.items()}
        self.agents = self.possible_agents = list(AGENTS)
        self.observation_spaces = {agent: env.observation_space for agent, env in self.envs.items()}
        self.action_spaces = {agent: env.action_space for agent, env in self.envs.items()}

    def reset(self, *, seed=None, options=None):
        self.agents = list(AGENTS)
        observations, infos = {}, {}
        for i, (agent, env) in enumerate(self.envs.items()):
            observations[agent], infos[agent] = env.reset(seed=None if seed is None else seed + i)
        return observations, infos

    def step(self, action_dict):
        observations, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
        for agent, action in action_dict.items():
            obs, reward, terminated, truncated, info = self.envs[agent].step(action)
            observations[agent], rewards[agent], infos[agent] = obs, reward, info
            terminateds[agent], truncateds[agent] = terminated, truncated
            if terminated or truncated:
                self.agents.remove(agent)
        terminateds["__all__"] = not self.agents and all(terminateds.get(a, True) for a in action_dict)
        truncateds["__all__"] = not self.agents and not terminateds["__all__"]
        return observations, rewards, terminateds, truncateds, infos


def policy_mapping_fn(agent_id, episode, **kwargs):
    """Agent id -> module id: one module per agent."""
    return agent_id


DEFAULTS = {
    "rl.training.config.lr": 0.0003,
    "rl.training.config.train_batch_size_per_learner": 4000,
    "rl.training.stop.training_iteration": 20,
}


def main():
    register_env(ENV_NAME, lambda config: BalanceAndSwing(config))
    experiment = build_experiment(DEFAULTS, env=ENV_NAME)
    config = experiment.config.multi_agent(policies=set(AGENTS), policy_mapping_fn=policy_mapping_fn)
    train_and_export(experiment, config)  # one checkpoint holds both modules


if __name__ == "__main__":
    main()
