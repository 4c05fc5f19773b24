"""Collect and offline jobs (``mode=collect`` / ``mode=offline``), run by `sagemaker_ray_rl.train`
inside its ``ray_cluster(...)`` block on the master host.

Offline job: read the dataset of the input channel -> fit the dynamics model of the ``mb``
estimator once -> ``num_runs`` times, train ``offline.algorithm`` (Discrete actions: `DiscreteCQL`,
or RLlib's BC or MARWIL; Box actions: RLlib's CQL or IQL) from a fresh seed for ``num_updates``
gradient updates, every ``evaluate_every`` updates saving a checkpoint and estimating its value
off-policy (IS, WIS, PDIS, MB, and DM and DR with fitted-Q evaluation when they select or real
returns are asked for, else only for the exported checkpoint; on Box actions only MB,
`ope.BOX_SKIPPED` says why; without behaviour probabilities DM and MB,
`ope.NO_PROBABILITY_SKIPPED`) and, when asked, its real return in the env -> export the checkpoint,
of all runs, with the best chosen estimate to the model dir (``metadata.json`` by
`checkpoint.build_metadata`) and write ``ope.csv``, ``ope.png``, ``selection.json`` to the output data dir
-> the promotion report (`promotion`): every estimate of the exported policy with a bootstrap
interval over episodes against the logged policy's return on the same data, and the verdict, in
``promotion.json`` and metric lines.

One concern despite its length: the order of a collect or offline job's steps and what each writes;
the steps themselves live in the other modules of this package.
"""

from __future__ import annotations

import math
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from sagemaker_ray_rl.checkpoint import CHECKPOINT_MARKER, build_metadata, export_model
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import HyperparameterError, TrainingError
from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.offline import promotion, report
from sagemaker_ray_rl.offline.collect import CollectResult, collect, make_env
from sagemaker_ray_rl.offline.continuous import BoxCQLConfig, BoxIQLConfig
from sagemaker_ray_rl.offline.dataset import (
    INFO_FILE,
    DatasetError,
    Transitions,
    dataset_spaces,
    read_dataset,
    read_info,
)
from sagemaker_ray_rl.offline.discrete_cql import DiscreteCQLConfig
from sagemaker_ray_rl.offline.imitation import EpisodeBCConfig, EpisodeMARWILConfig
from sagemaker_ray_rl.offline.ope import (
    ESTIMATORS,
    DynamicsModel,
    FQESettings,
    ModelSettings,
    evaluate_policy,
    evaluate_terms,
    greedy_probabilities,
    skipped_estimators,
)
from sagemaker_ray_rl.offline.q_module import StandardizedDQNTorchRLModule, observation_statistics
from sagemaker_ray_rl.offline.selection import rank_correlations, select_checkpoint
from sagemaker_ray_rl.offline.settings import COLLECT, OfflineSettings, check_action_space, promotion_estimator

#: ``offline.algorithm`` -> the name recorded in ``metadata.json`` (Discrete, Box actions).
ALGORITHM_NAMES = {"cql": "DiscreteCQL", "bc": "BC", "marwil": "MARWIL"}
BOX_ALGORITHM_NAMES = {"cql": "CQL", "iql": "IQL"}
#: Steps (whole episodes) per BC/MARWIL update.
IMITATION_BATCH_STEPS = 1024
#: Training run ``r`` of a job is seeded ``offline.seed + RUN_SEED_STRIDE * r``.
RUN_SEED_STRIDE = 1000
DATASET_SUBDIR = "dataset"


@dataclass(frozen=True)
class OfflineResult:
    """What an offline job produced.

    Attributes:
        rows: one dict per checkpoint (``checkpoint``, ``offline_updates``, ``ope_*``,
            ``eval_return_mean``/``eval_return_std`` when evaluated, ``learn_time_s``: seconds in
            ``algo.train()`` so far, ``time_total_s``: including checkpointing and evaluation).
        selected: the row of the exported checkpoint.
        rank_correlations: estimator -> Spearman ρ against the real return (NaN without it).
        model_dir: where the selected checkpoint was exported.
        promotion: the promotion report (`promotion.promotion_report`, also ``promotion.json``).
    """

    rows: list[dict[str, Any]]
    selected: dict[str, Any]
    rank_correlations: dict[str, float]
    model_dir: Path
    promotion: dict[str, Any]


def run(environment: Environment, settings: OfflineSettings) -> None:
    """Run the job `settings.mode` names. Raises what `run_collect` / `run_offline` raise."""
    if settings.mode == COLLECT:
        run_collect(environment, settings)
    else:
        run_offline(environment, settings)


def check_before_ray(environment: Environment, settings: OfflineSettings) -> None:
    """`settings.check_action_space` on the action space of the input channel's
    ``dataset_info.json`` (the first under the channel), else of ``env`` when it can be built here;
    called before Ray starts. Datasets only inside a ``*.tar.gz`` are checked after unpacking, in
    `build_config`.

    Raises:
        HyperparameterError: the algorithm or selection does not fit the action space.
    """
    if settings.mode == COLLECT:
        return
    space = None
    channel = environment.channels.get(settings.input_channel)
    if channel is not None:
        info = next(iter(sorted(Path(channel).rglob(INFO_FILE))), None)
        spaces = dataset_spaces(info.parent) if info is not None else None
        space = spaces[1] if spaces else None
    if space is None:
        try:
            env = make_env(settings.env, settings.env_config)
        except Exception:  # no such env here: the dataset's spaces are checked once it is unpacked
            return
        space = env.action_space
        env.close()
    check_action_space(settings, space)


def run_collect(environment: Environment, settings: OfflineSettings) -> CollectResult:
    """Collect ``num_episodes`` episodes into ``<output_data_dir>/dataset`` (or the model dir).

    Raises:
        HyperparameterError: ``epsilon_greedy`` without its model channel.
        DatasetError: see `collect.collect`.
    """
    out = environment.model_dir if settings.output == "model" else environment.output_data_dir / DATASET_SUBDIR
    model_dir = None
    if settings.behaviour != "random":
        if settings.behaviour_channel not in environment.channels:
            raise HyperparameterError(
                f"offline.behaviour={settings.behaviour} acts with the model in input channel "
                f"{settings.behaviour_channel!r}, which this job does not have (channels: {sorted(environment.channels)})"
            )
        model_dir = _unpacked(environment.channels[settings.behaviour_channel])
    start = time.perf_counter()
    result = collect(
        out,
        env=settings.env,
        env_config=settings.env_config,
        num_episodes=settings.num_episodes,
        num_envs=settings.num_envs,
        behaviour=settings.behaviour,
        epsilon=settings.epsilon,
        model_dir=model_dir,
        seed=settings.seed,
    )
    print(
        f"Collected {result.num_episodes} episodes ({result.num_transitions} transitions) with the "
        f"{settings.behaviour} policy into {out} in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    print(f"episode_return_mean: {result.episode_return_mean:.6g}", flush=True)
    return result


def run_offline(environment: Environment, settings: OfflineSettings) -> OfflineResult:
    """Train from the input channel, evaluate checkpoints off-policy, export the selected one.

    Raises:
        HyperparameterError: the input channel is missing.
        DatasetError: the channel holds no readable dataset.
        TrainingError: RLlib failed to build or train the algorithm.
    """
    if settings.input_channel not in environment.channels:
        raise HyperparameterError(
            f"offline training reads input channel {settings.input_channel!r} (offline.input_channel), "
            f"which this job does not have (channels: {sorted(environment.channels)})"
        )
    return train_offline(
        _unpacked(environment.channels[settings.input_channel]),
        settings,
        checkpoint_root=environment.checkpoint_dir / "offline",
        output_data_dir=environment.output_data_dir,
        model_dir=environment.model_dir,
    )


def build_config(
    dataset_dir: Path, settings: OfflineSettings, seed: int | None = None, data: Transitions | None = None
):
    """The config of ``settings.algorithm`` (Discrete: `DiscreteCQLConfig`, `EpisodeBCConfig` or
    `EpisodeMARWILConfig`; Box: `BoxCQLConfig` or `BoxIQLConfig`) reading `dataset_dir`; spaces from
    ``dataset_info.json`` or, without it, from the env. `seed` (default ``settings.seed``) seeds the
    network initialisation and sampling. `DiscreteCQL` on a flat Box observation space with
    ``offline.standardize`` gets `q_module.StandardizedDQNTorchRLModule` with the dataset's
    observation mean and standard deviation (of `data`, the dataset's `Transitions` when the
    caller has read them, else read here).

    Raises:
        HyperparameterError: the algorithm does not fit the action space (`check_action_space`).
        TrainingError: RLlib refused the config.
    """
    spaces = dataset_spaces(dataset_dir)
    if spaces is None:
        env = make_env(settings.env, settings.env_config)
        spaces = (env.observation_space, env.action_space)
        env.close()
    check_action_space(settings, spaces[1])
    q_model = {"fcnet_hiddens": list(settings.hidden), "head_fcnet_hiddens": [settings.hidden[-1]]}
    training: dict[str, Any] = {"gamma": settings.gamma, "num_updates_per_iteration": settings.evaluate_every}
    if isinstance(spaces[1], gym.spaces.Box):
        # RLlib's SAC-family configs refuse `lr` (they take actor_lr/critic_lr): their defaults apply.
        config, model_config = (BoxCQLConfig() if settings.algorithm == "cql" else BoxIQLConfig()), q_model
    elif settings.algorithm == "cql":
        config, model_config = DiscreteCQLConfig().training(cql_alpha=settings.cql_alpha), q_model
        training["lr"] = lr_schedule(settings)
        if settings.standardize and isinstance(spaces[0], gym.spaces.Box) and len(spaces[0].shape) == 1:
            obs = (data if data is not None else read_dataset(dataset_dir)).obs
            model_config = {**q_model, **observation_statistics(obs)}
            config.rl_module(rl_module_spec=RLModuleSpec(module_class=StandardizedDQNTorchRLModule))
    else:
        config = EpisodeBCConfig() if settings.algorithm == "bc" else EpisodeMARWILConfig().training(beta=settings.beta)
        config.training(train_batch_size_per_learner=IMITATION_BATCH_STEPS)
        model_config = {"fcnet_hiddens": list(settings.hidden)}
        training["lr"] = lr_schedule(settings)
    config = (
        config.environment(observation_space=spaces[0], action_space=spaces[1])
        .offline_data(input_=[str(dataset_dir)])
        .training(**training)
        .rl_module(model_config=model_config)
        .debugging(seed=settings.seed if seed is None else seed)
    )
    try:
        config.validate()
    except Exception as exc:
        raise TrainingError(f"RLlib refused the offline configuration: {exc}") from exc
    return config


def lr_schedule(settings: OfflineSettings) -> float | list[list[float]]:
    """``offline.lr``, or RLlib's piecewise-linear schedule ``[[0, lr], [num_updates, lr_end]]``
    (its timesteps are the gradient updates done: the offline algorithms pass those as
    ``NUM_ENV_STEPS_SAMPLED_LIFETIME``, which RLlib's Learner schedules read)."""
    if settings.lr_end == settings.lr:
        return settings.lr
    return [[0, settings.lr], [settings.num_updates, settings.lr_end]]


def train_offline(
    dataset_dir: Path,
    settings: OfflineSettings,
    *,
    checkpoint_root: Path,
    output_data_dir: Path,
    model_dir: Path,
) -> OfflineResult:
    """The offline job on a running Ray (see the module docstring). Needs ``ray.init()`` done.

    Torch runs on one intra-op thread for the job (restored after): the networks are small MLPs on
    minibatches of 256, where a second thread only adds synchronisation. On 2 cores a checkpoint
    (500 updates, FQE, ``mb``) took about twice as long with 2 threads; the trained checkpoints were
    the same, the ``mb`` estimates differed by about 0.3 (the dynamics model's float sums), enough
    to reorder near-ties, and docs/benchmarks.md's figures were measured with one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_offline(
            dataset_dir, settings, checkpoint_root=checkpoint_root, output_data_dir=output_data_dir, model_dir=model_dir
        )
    finally:
        torch.set_num_threads(threads)


def _train_offline(
    dataset_dir: Path,
    settings: OfflineSettings,
    *,
    checkpoint_root: Path,
    output_data_dir: Path,
    model_dir: Path,
) -> OfflineResult:
    data = read_dataset(dataset_dir)
    config = build_config(dataset_dir, settings, data=data)
    box = data.continuous
    algorithm = (BOX_ALGORITHM_NAMES if box else ALGORITHM_NAMES)[settings.algorithm]
    print(
        f"Offline training {algorithm} on {data.num_episodes} episodes ({len(data)} transitions, "
        f"logged mean return {data.episode_returns().mean():.2f}) for {settings.num_updates} updates",
        flush=True,
    )
    eval_env = make_env(settings.env, settings.env_config) if settings.eval_episodes else None
    output_data_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    fqe = FQESettings(updates=settings.fqe_updates, seed=settings.seed) if settings.fqe_updates else None
    # Fitted-Q evaluation is most of a checkpoint's OPE time (about 2 s of 2.3 s on CartPole); per
    # checkpoint it is needed only to select by dm/dr or to rank every estimator against real returns.
    fqe_each = fqe if settings.select in ("dm", "dr") or settings.eval_episodes else None
    model = None
    if settings.model_updates:
        horizon = settings.horizon or episode_limit(dataset_dir, settings, data)
        tick = time.perf_counter()
        model = DynamicsModel(
            data,
            None if box else int(config.action_space.n),
            ModelSettings(updates=settings.model_updates, horizon=horizon, seed=settings.seed),
        )
        print(
            f"Dynamics model for mb fitted in {time.perf_counter() - tick:.1f} s (rollouts of {horizon} steps)",
            flush=True,
        )
    not_applicable = skipped_estimators(data)
    estimators = tuple(
        e for e in ESTIMATORS if (fqe or e not in ("dm", "dr")) and (model or e != "mb") and e not in not_applicable
    )
    reasons: dict[str, list[str]] = {}
    for name, reason in not_applicable.items():
        reasons.setdefault(reason, []).append(name)
    skipped = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
    if settings.select in not_applicable:
        raise DatasetError(
            f"offline.select={settings.select} cannot rank checkpoints on this dataset: {not_applicable[settings.select]}"
            " (choose mb, dm or last)"
        )
    if skipped:
        print(f"OPE on Box actions: only mb; skipped {skipped}" if box else f"OPE: skipped {skipped}", flush=True)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    learn_time = 0.0
    for run in range(settings.num_runs):
        run_seed = settings.seed + RUN_SEED_STRIDE * run
        run_root = checkpoint_root / f"run{run}" if settings.num_runs > 1 else checkpoint_root
        algo = (config if run == 0 else build_config(dataset_dir, settings, seed=run_seed, data=data)).build_algo()
        try:
            updates = 0
            while updates < settings.num_updates:
                tick = time.perf_counter()
                algo.train()
                learn_time += time.perf_counter() - tick
                updates += settings.evaluate_every
                path = Path(algo.save_to_path(str(run_root / f"checkpoint_{updates:07d}")))
                policy = Policy.load(path)
                target = _target_policy(policy, box)
                row: dict[str, Any] = {
                    "checkpoint": str(path),
                    "run": run,
                    "offline_updates": updates,
                    "learn_time_s": round(learn_time, 1),
                    "time_total_s": round(time.perf_counter() - start, 1),
                }
                row.update(
                    {f"ope_{k}": v for k, v in evaluate_policy(data, target, settings.gamma, fqe_each, model).items()}
                )
                if skipped:
                    row["ope_skipped"] = skipped
                if eval_env is not None:
                    returns = evaluate_in_env(policy, eval_env, settings.eval_episodes, seed=10_000 + settings.seed)
                    row["eval_return_mean"] = float(np.mean(returns))
                    row["eval_return_std"] = float(np.std(returns))
                rows.append(row)
                print("\n".join(report.metric_lines(row)), flush=True)
        except (DatasetError, HyperparameterError):
            raise
        except Exception as exc:
            raise TrainingError(f"offline training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            algo.stop()
    selected = dict(select_checkpoint(rows, settings.select))
    correlations = rank_correlations(rows, estimators, "eval_return_mean") if eval_env is not None else {}
    report.write_csv(output_data_dir / report.CSV_FILE, rows)
    report.write_plot(output_data_dir / report.PLOT_FILE, rows, estimators)
    report.write_selection(
        output_data_dir / report.SELECTION_FILE,
        {
            "select": settings.select,
            "selected": selected,
            "rank_correlations": correlations,
        },
    )
    metrics = {k: v for k, v in selected.items() if isinstance(v, (int, float))}
    metadata = build_metadata(
        Path(selected["checkpoint"]),
        algorithm=algorithm,
        env=settings.env,
        env_config=settings.env_config,
        metrics=metrics,
        hyperparameters=settings.hyperparameters,
    )
    metadata["offline"] = {
        "select": settings.select,
        "rank_correlations": correlations,
        "dataset": {"episodes": data.num_episodes, "transitions": len(data)},
    }
    tick = time.perf_counter()
    promotion_estimator_name = promotion_estimator(settings.select, settings.promote_by, model is not None)
    verdict = promotion.promotion_report(
        evaluate_terms(data, _target_policy(Policy.load(selected["checkpoint"]), box), settings.gamma, fqe, model),
        data.episode_returns(settings.gamma),
        estimator=promotion_estimator_name,
        gamma=settings.gamma,
        undiscounted_returns=data.episode_returns(),
        skipped=not_applicable,
        confidence=settings.confidence,
        samples=settings.bootstrap_samples,
        seed=settings.seed,
        checkpoint=str(selected["checkpoint"]),
    )
    promotion.write_report(output_data_dir / promotion.PROMOTION_FILE, verdict)
    metadata["offline"]["promotion"] = {k: verdict[k] for k in ("verdict", "estimator", "reason")}
    export_model(Path(selected["checkpoint"]), model_dir, metadata)
    print(f"Exported {selected['checkpoint']} (selected by {settings.select}) to {model_dir}", flush=True)
    print("\n".join(promotion.metric_lines(verdict)), flush=True)
    print(
        f"Promotion verdict: {verdict['verdict']} ({verdict['reason']}; {time.perf_counter() - tick:.1f} s)",
        flush=True,
    )
    for name, rho in correlations.items():
        if math.isfinite(rho):
            print(f"ope_rank_correlation_{name}: {rho:.4g}", flush=True)
    return OfflineResult(rows, selected, correlations, model_dir, verdict)


def _target_policy(policy: Any, box: bool) -> Any:
    """The OPE target of a loaded `Policy`: Box: obs -> actions float32 ``(n, act_dim)``; Discrete:
    obs -> one-hot greedy probabilities float64 ``(n, num_actions)``."""
    if box:

        def target(obs: np.ndarray) -> np.ndarray:
            actions = policy.compute(obs.astype(np.float32))["action"]
            return np.asarray(actions, dtype=np.float32).reshape(len(obs), -1)

        return target
    num_actions = int(policy.pipeline(None).action_space.n)

    def greedy(obs: np.ndarray) -> np.ndarray:
        return greedy_probabilities(policy.compute(obs.astype(np.float32))["action"], num_actions)

    return greedy


def episode_limit(dataset_dir: Path, settings: OfflineSettings, data: Any) -> int:
    """Rollout horizon of the ``mb`` estimator: the ``max_episode_steps`` of the job's env (its
    ``env_config`` or its registered spec), else of the env recorded in ``dataset_info.json``, else
    the longest logged episode."""
    info = read_info(dataset_dir)
    for env, env_config in ((settings.env, settings.env_config), (info.get("env"), info.get("env_config") or {})):
        if not env:
            continue
        if isinstance(env_config.get("max_episode_steps"), int):
            return int(env_config["max_episode_steps"])
        try:
            limit = make_env(env, env_config).spec.max_episode_steps
        except Exception:  # an env that is not importable here: fall through to the data
            continue
        if limit:
            return int(limit)
    return int(np.diff(data.episode_starts).max())


def evaluate_in_env(policy: Any, env: Any, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of `episodes` greedy episodes (env seeded ``seed + i``)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            action = policy.compute(np.asarray(obs, dtype=np.float32)[None])["action"][0]
            obs, reward, terminated, truncated, _ = env.step(
                np.asarray(action) if isinstance(env.action_space, gym.spaces.Box) else int(action)
            )
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def _unpacked(channel: Path) -> Path:
    """The channel itself, or, when it holds a ``*.tar.gz`` (a previous job's ``output.tar.gz`` or
    ``model.tar.gz``), a temporary directory it was extracted to."""
    channel = Path(channel)
    archives = sorted(channel.glob("*.tar.gz"))
    if not archives or any(channel.rglob("*.parquet")) or any(channel.rglob(CHECKPOINT_MARKER)):
        return channel
    target = Path(tempfile.mkdtemp(prefix="smrl-channel-"))
    for archive in archives:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    return target
