"""Off-policy evaluation (OPE): estimate a target policy's value from data logged by a behaviour policy.

Estimators (all per-episode, discount ``gamma``; ``ρ_t = π(a_t|s_t) / μ(a_t|s_t)``,
``w_{0:t} = Π_{k<=t} ρ_k``, ``G = Σ_t γ^t r_t``):

- ``is``: ordinary importance sampling, mean over episodes of ``w_{0:T} G`` (Precup, Sutton and
  Singh 2000, "Eligibility Traces for Off-Policy Policy Evaluation", ICML).
- ``wis``: weighted IS, ``Σ_i w^i_{0:T} G^i / Σ_i w^i_{0:T}`` (ibid.; biased, consistent, low variance).
- ``pdis``: per-decision IS, mean of ``Σ_t γ^t w_{0:t} r_t`` (ibid.).
- ``dm``: direct method, mean of ``V̂(s_0) = Σ_a π(a|s_0) Q̂(s_0, a)`` with Q̂ from fitted-Q evaluation.
- ``dr``: doubly robust, mean of ``Σ_t γ^t [w_{0:t} (r_t − Q̂(s_t, a_t)) + w_{0:t−1} V̂(s_t)]``
  (Jiang and Li 2016, "Doubly Robust Off-policy Value Evaluation for Reinforcement Learning", ICML,
  Eq. 10 unrolled; Thomas and Brunskill 2016).

- ``mb``: model-based, mean over the logged initial states of ``Σ_{t<H} γ^t r̂_t Π_{k<t} (1 − p̂_k)``
  along the target policy's rollout in a dynamics model learned from the data (next-state delta,
  reward and termination probability; Paduraru 2013, "Off-policy evaluation in Markov decision
  processes", PhD thesis, McGill; the "model-based" baseline of Voloshin et al. 2019, "Empirical
  Study of Off-Policy Policy Evaluation for Reinforcement Learning", and Fu et al. 2021, "Benchmarks
  for Deep Off-Policy Evaluation", ICLR). It is the one estimator that sees what happens past the
  logged episodes' length: a greedy policy that slowly drifts out of the data and fails at step 150
  scores the same as a stable one under DM on data of 22-step random episodes.
  The model's rewards are clipped to the logged rewards' range ``[min r, max r]``: past the data a
  regression extrapolates (a reward that grew with a state variable keeps growing), and an estimate
  must never exceed the best return the data's rewards allow over the horizon,
  ``Σ_{t<H} γ^t max r``.

Fitted-Q evaluation (Le, Voloshin and Yue 2019, "Batch Policy Learning under Constraints", ICML,
Algorithm 3): regress ``Q̂(s, a)`` on ``r + γ (1 − terminated) Σ_a' π(a'|s') Q̄(s', a')`` with a
periodically copied target network Q̄; time-limit truncation bootstraps like any non-terminal step.

Why our own code: RLlib's new-stack ``OfflinePolicyEvaluationRunner`` scores 1-step episodes from
column data, raises ``KeyError: 'action_logp'`` on episode data, takes the target probability of a
*sampled* action instead of the logged one, and uses per-step instead of cumulative ratios for PDIS;
its old-stack estimators need an old-stack ``Policy``. The formulas
above are a few NumPy lines; the tests check them against known answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sagemaker_ray_rl.offline.dataset import Transitions

#: Estimator names, in report order.
ESTIMATORS = ("is", "wis", "pdis", "dm", "dr", "mb")
#: obs float32 (n, obs_dim) -> action probabilities float64 (n, num_actions) (Discrete), or the
#: actions themselves, float32 (n, act_dim) as sent to the env (Box: a deterministic target policy).
TargetPolicy = Callable[[np.ndarray], np.ndarray]
#: Estimators left out on Box-action data, and why (printed and written to ``ope.csv``).
BOX_SKIPPED = {
    **dict.fromkeys(
        ("is", "wis", "pdis", "dr"),
        "a deterministic target policy has no density ratio against a continuous behaviour density",
    ),
    "dm": "fitted-Q evaluation here averages Q over Discrete actions",
}
#: Estimators left out when the dataset lacks behaviour probabilities (NaN ``action_prob``: endpoint
#: captures of answers without ``action_prob``), and why.
NO_PROBABILITY_SKIPPED = dict.fromkeys(
    ("is", "wis", "pdis", "dr"),
    "the dataset has no behaviour probabilities (captured answers without action_prob), which importance ratios need",
)


def skipped_estimators(data: Transitions) -> dict[str, str]:
    """Estimator name -> why it is not computed on `data` (`BOX_SKIPPED` on Box actions,
    `NO_PROBABILITY_SKIPPED` without behaviour probabilities); empty when all apply."""
    if data.continuous:
        return dict(BOX_SKIPPED)
    return {} if data.has_behaviour_probabilities else dict(NO_PROBABILITY_SKIPPED)


@dataclass(frozen=True)
class FQESettings:
    """Fitted-Q evaluation settings: ``updates`` Adam steps (``lr``) on minibatches of ``batch_size``,
    target network copied every ``target_update_freq`` steps, an MLP of ``hidden`` units (ReLU)."""

    updates: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    target_update_freq: int = 50
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0


@dataclass(frozen=True)
class ModelSettings:
    """Dynamics-model settings of the ``mb`` estimator: ``updates`` Adam steps (``lr``) on
    minibatches of ``batch_size``, an MLP of ``hidden`` units (ReLU) on standardised inputs, rollouts
    of ``horizon`` steps (the env's episode limit)."""

    updates: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    hidden: tuple[int, ...] = (128, 128)
    horizon: int = 200
    seed: int = 0


class DynamicsModel:
    """``(s, a) -> (s' − s, r, P(terminated))`` learned from the dataset by regression (MSE on the
    standardised delta and reward, cross-entropy on ``terminated``); policy-independent, so it is
    fitted once per dataset and reused for every checkpoint. Predicted rewards are clipped to the
    logged rewards' range (module docstring).

    Args:
        data: the dataset; num_actions: size of the Discrete action space, or None for Box actions
            (float vectors, standardised like the observations); settings: see `ModelSettings`.
    """

    def __init__(self, data: Transitions, num_actions: int | None, settings: ModelSettings = ModelSettings()):
        self.settings, self.num_actions = settings, num_actions
        torch.manual_seed(settings.seed)
        gen = torch.Generator().manual_seed(settings.seed)
        obs = torch.as_tensor(data.obs)
        delta = torch.as_tensor(data.next_obs - data.obs)
        self.obs_mean, self.obs_std = obs.mean(0), obs.std(0) + 1e-6
        self.delta_mean, self.delta_std = delta.mean(0), delta.std(0) + 1e-6
        rewards = torch.as_tensor(data.rewards, dtype=torch.float32)
        self.r_mean, self.r_std = rewards.mean(), rewards.std() + 1e-6
        self.r_low, self.r_high = float(rewards.min()), float(rewards.max())
        term = torch.as_tensor(data.terminateds, dtype=torch.float32)
        actions = torch.as_tensor(data.actions)
        if num_actions is None:
            self.act_mean, self.act_std = actions.mean(0), actions.std(0) + 1e-6
        dim = obs.shape[1]
        self.net = _mlp(dim + (actions.shape[1] if num_actions is None else num_actions), dim + 2, settings.hidden)
        opt = torch.optim.Adam(self.net.parameters(), lr=settings.lr)
        y = torch.cat([(delta - self.delta_mean) / self.delta_std, ((rewards - self.r_mean) / self.r_std)[:, None]], 1)
        for _ in range(settings.updates):
            idx = torch.randint(0, len(data), (settings.batch_size,), generator=gen)
            out = self.net(self._inputs(obs[idx], actions[idx]))
            loss = torch.nn.functional.mse_loss(
                out[:, :-1], y[idx]
            ) + torch.nn.functional.binary_cross_entropy_with_logits(out[:, -1], term[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _inputs(self, obs: Any, actions: Any) -> Any:
        if self.num_actions is None:
            acts = (actions.float().reshape(len(obs), -1) - self.act_mean) / self.act_std
        else:
            acts = torch.nn.functional.one_hot(actions.long(), self.num_actions).float()
        return torch.cat([(obs - self.obs_mean) / self.obs_std, acts], 1)

    def step(self, obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted next observations float32 ``(n, obs_dim)``, rewards ``(n,)`` (within the logged
        rewards' range) and termination probabilities ``(n,)`` for observations ``(n, obs_dim)`` and
        int actions ``(n,)`` (Box: float actions ``(n, act_dim)``)."""
        with torch.no_grad():
            out = self.net(self._inputs(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(actions)))
            next_obs = torch.as_tensor(obs) + out[:, :-2] * self.delta_std + self.delta_mean
            reward = (out[:, -2] * self.r_std + self.r_mean).clamp(self.r_low, self.r_high)
            return next_obs.numpy(), reward.numpy(), torch.sigmoid(out[:, -1]).numpy()

    def estimate(self, data: Transitions, target_policy: TargetPolicy, gamma: float, seed: int = 0) -> float:
        """The ``mb`` estimate (module docstring) from the dataset's initial states; actions are
        drawn from the target policy's probabilities (the greedy one for a deterministic policy);
        for a Box-action model the target policy gives the actions themselves."""
        return float(self.episode_values(data, target_policy, gamma, seed).mean())

    def episode_values(self, data: Transitions, target_policy: TargetPolicy, gamma: float, seed: int = 0) -> np.ndarray:
        """float64 ``(num_episodes,)``: the model rollout's discounted return from each logged
        episode's initial state (`estimate` is their mean)."""
        rng = np.random.default_rng(seed)
        obs = data.obs[data.episode_starts[:-1]].astype(np.float32)
        alive = np.ones(len(obs))
        value = np.zeros(len(obs))
        for t in range(self.settings.horizon):
            if self.num_actions is None:
                actions = np.asarray(target_policy(obs), dtype=np.float32)
            else:
                probs = target_policy(obs)
                actions = (probs.cumsum(1) > rng.random((len(obs), 1))).argmax(1)
            obs, reward, p_term = self.step(obs, actions)
            value += gamma**t * alive * reward
            alive *= 1.0 - p_term
        return value


#: Per-episode terms of an estimator: ``(numerator, denominator)``, float64 ``(num_episodes,)``
#: each; the estimate is ``Σ numerator / Σ denominator`` (denominator None: the numerator's mean).
#: Resampling episodes and recomputing that ratio is the bootstrap (`promotion.bootstrap_interval`).
EpisodeTerms = tuple[np.ndarray, np.ndarray | None]


def estimate_from_terms(terms: EpisodeTerms) -> float:
    """``mean(numerator)``, or ``Σ numerator / Σ denominator`` (NaN when that sum is 0)."""
    numerator, denominator = terms
    if denominator is None:
        return float(np.mean(numerator))
    total = float(np.sum(denominator))
    return float(np.sum(numerator) / total) if total > 0 else float("nan")


def importance_estimates(data: Transitions, target_probs: np.ndarray, gamma: float) -> dict[str, float]:
    """IS, WIS and PDIS estimates of the target policy's expected discounted return.

    Args:
        data: the logged episodes (behaviour probabilities in ``data.action_prob``).
        target_probs: float, shape ``(len(data), num_actions)``: π(·|s_t) for every row.
        gamma: discount in [0, 1].

    Returns:
        ``{"is", "wis", "pdis"}`` -> estimate; ``wis`` is NaN when every episode weight is 0.
    """
    return {k: estimate_from_terms(v) for k, v in importance_terms(data, target_probs, gamma).items()}


def importance_terms(data: Transitions, target_probs: np.ndarray, gamma: float) -> dict[str, EpisodeTerms]:
    """Per-episode terms (`EpisodeTerms`) of IS (``w_{0:T} G``), WIS (``w_{0:T} G`` over
    ``w_{0:T}``) and PDIS (``Σ_t γ^t w_{0:t} r_t``); arguments as in `importance_estimates`."""
    rho = _ratios(data, target_probs)
    cum = _cumulative_products(data, rho)
    disc = gamma**data.step_index
    starts = data.episode_starts[:-1]
    ends = data.episode_starts[1:] - 1
    returns = np.add.reduceat(disc * data.rewards, starts)
    weights = cum[ends]
    return {
        "is": (weights * returns, None),
        "wis": (weights * returns, weights),
        "pdis": (np.add.reduceat(disc * cum * data.rewards, starts), None),
    }


def model_estimates(
    data: Transitions, target_probs: np.ndarray, q_values: np.ndarray, gamma: float
) -> dict[str, float]:
    """DM and DR estimates from a Q-model of the target policy.

    Args:
        q_values: float, shape ``(len(data), num_actions)``: Q̂(s_t, ·) for every row.
        target_probs, gamma: as in `importance_estimates`.
    """
    return {k: estimate_from_terms(v) for k, v in model_terms(data, target_probs, q_values, gamma).items()}


def model_terms(
    data: Transitions, target_probs: np.ndarray, q_values: np.ndarray, gamma: float, *, ratios: bool = True
) -> dict[str, EpisodeTerms]:
    """Per-episode terms of DM (``V̂(s_0)``) and, with `ratios` (behaviour probabilities known), DR;
    arguments as in `model_estimates`."""
    v = (target_probs * q_values).sum(axis=1)
    starts = data.episode_starts[:-1]
    out: dict[str, EpisodeTerms] = {"dm": (v[starts].astype(np.float64), None)}
    if ratios:
        rho = _ratios(data, target_probs)
        cum = _cumulative_products(data, rho)
        prev = np.where(data.step_index == 0, 1.0, np.roll(cum, 1))
        q_logged = q_values[np.arange(len(data)), data.actions]
        disc = gamma**data.step_index
        terms = disc * (cum * (data.rewards - q_logged) + prev * v)
        out["dr"] = (np.add.reduceat(terms, starts), None)
    return out


def fitted_q_evaluation(
    data: Transitions, target_policy: TargetPolicy, gamma: float, settings: FQESettings = FQESettings()
) -> np.ndarray:
    """Fit Q̂^π on the dataset (see the module docstring) and return it for every row.

    Returns:
        float64, shape ``(len(data), num_actions)``.
    """
    gen = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    next_probs = torch.as_tensor(target_policy(data.next_obs), dtype=torch.float32)
    num_actions = next_probs.shape[1]
    obs = torch.as_tensor(data.obs)
    next_obs = torch.as_tensor(data.next_obs)
    actions = torch.as_tensor(data.actions)
    rewards = torch.as_tensor(data.rewards, dtype=torch.float32)
    not_done = 1.0 - torch.as_tensor(data.terminateds, dtype=torch.float32)
    q = _mlp(obs.shape[1], num_actions, settings.hidden)
    q_target = _mlp(obs.shape[1], num_actions, settings.hidden)
    q_target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=settings.lr)
    for step in range(settings.updates):
        if step % settings.target_update_freq == 0:
            q_target.load_state_dict(q.state_dict())
        idx = torch.randint(0, len(data), (settings.batch_size,), generator=gen)
        with torch.no_grad():
            y = rewards[idx] + gamma * not_done[idx] * (next_probs[idx] * q_target(next_obs[idx])).sum(-1)
        pred = q(obs[idx]).gather(1, actions[idx, None]).squeeze(1)
        loss = torch.nn.functional.mse_loss(pred, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return q(obs).double().numpy()


def evaluate_policy(
    data: Transitions,
    target_policy: TargetPolicy,
    gamma: float,
    fqe: FQESettings | None = FQESettings(),
    model: DynamicsModel | None = None,
) -> dict[str, float]:
    """All estimators (`ESTIMATORS`) of the target policy on `data`; ``dm``/``dr`` only when `fqe`,
    ``mb`` only when `model`. On Box-action data (`Transitions.continuous`) only ``mb``
    (`BOX_SKIPPED` says why), with `target_policy` giving actions; without behaviour
    probabilities only ``dm`` and ``mb`` (`NO_PROBABILITY_SKIPPED`)."""
    return {k: estimate_from_terms(v) for k, v in evaluate_terms(data, target_policy, gamma, fqe, model).items()}


def evaluate_terms(
    data: Transitions,
    target_policy: TargetPolicy,
    gamma: float,
    fqe: FQESettings | None = FQESettings(),
    model: DynamicsModel | None = None,
) -> dict[str, EpisodeTerms]:
    """The per-episode terms (`EpisodeTerms`) behind `evaluate_policy`'s estimates (same arguments,
    same estimators)."""
    if data.continuous:
        return {} if model is None else {"mb": (model.episode_values(data, target_policy, gamma), None)}
    target_probs = target_policy(data.obs)
    ratios = data.has_behaviour_probabilities
    out = importance_terms(data, target_probs, gamma) if ratios else {}
    if fqe is not None:
        q_values = fitted_q_evaluation(data, target_policy, gamma, fqe)
        out.update(model_terms(data, target_probs, q_values, gamma, ratios=ratios))
    if model is not None:
        out["mb"] = (model.episode_values(data, target_policy, gamma), None)
    return out


def greedy_probabilities(actions: np.ndarray, num_actions: int, epsilon: float = 0.0) -> np.ndarray:
    """One-hot (``epsilon`` = 0) or epsilon-greedy probabilities, float64 ``(n, num_actions)``, for
    greedy actions int ``(n,)``."""
    probs = np.full((actions.shape[0], num_actions), epsilon / num_actions)
    probs[np.arange(actions.shape[0]), actions.astype(np.int64)] += 1.0 - epsilon
    return probs


def _ratios(data: Transitions, target_probs: np.ndarray) -> np.ndarray:
    if target_probs.shape[0] != len(data):
        raise ValueError(f"target_probs has {target_probs.shape[0]} rows, the dataset {len(data)}")
    return target_probs[np.arange(len(data)), data.actions] / data.action_prob.astype(np.float64)


def _cumulative_products(data: Transitions, rho: np.ndarray) -> np.ndarray:
    """w_{0:t} for every row (products restart at each episode): exp of per-episode cumulative log
    ratios, and 0 from the first zero ratio on."""
    with np.errstate(divide="ignore"):
        logs = np.log(rho)
    zeros = np.isneginf(logs)
    first_zero = _first_zero_per_row(data, zeros)
    finite_logs = np.where(zeros, 0.0, logs)
    fcsum = np.cumsum(finite_logs)
    foffsets = np.concatenate([[0.0], fcsum])[data.episode_starts[:-1]]
    w = np.exp(fcsum - np.repeat(foffsets, np.diff(data.episode_starts)))
    return np.where(first_zero, 0.0, w)


def _first_zero_per_row(data: Transitions, zeros: np.ndarray) -> np.ndarray:
    """bool (n,): whether any ratio at or before this step of its episode is 0."""
    counts = np.cumsum(zeros.astype(np.int64))
    offsets = np.concatenate([[0], counts])[data.episode_starts[:-1]]
    return (counts - np.repeat(offsets, np.diff(data.episode_starts))) > 0


def _mlp(inputs: int, outputs: int, hidden: tuple[int, ...]) -> Any:
    layers: list[Any] = []
    for width in hidden:
        layers += [torch.nn.Linear(inputs, width), torch.nn.ReLU()]
        inputs = width
    layers.append(torch.nn.Linear(inputs, outputs))
    return torch.nn.Sequential(*layers)
