"""Batch (offline) RL: collect a dataset with a behaviour policy, train a discrete conservative
Q-learner from it without the env, estimate checkpoints off-policy, export the best one.

Modules: `dataset` (format, read/write), `collect` (behaviour policies, recording), `convert`
(batch-transform JSON Lines + rewards -> dataset), `capture` (endpoint data captures + rewards ->
dataset), `logged` (what the two converters share), `learner` and
`discrete_cql` (``DiscreteCQL`` on RLlib's DQN), `ope` (IS, WIS, PDIS, DM, DR, fitted-Q evaluation),
`selection` (checkpoint choice, rank correlation), `report` (metric lines, CSV, plot), `settings`
(``mode`` and ``offline.*`` hyperparameters) and `runner` (the collect and offline jobs).
"""
