"""Where RLlib's actors go in the cluster, and where they went.

`place_actors` turns the master host, ``ray.learner_group`` and ``ray.env_runner_groups`` into RLlib's
own resource settings: ``custom_resources_for_main_process`` requests the master's
``sagemaker_host:<name>`` resource, ``custom_resources_per_learner`` the ``learner_host`` resource,
``custom_resources_per_env_runner`` the ``env_runner_host`` resource (see `node.node_resources`).
RLlib puts these into the placement group of the Tune trial (`Algorithm.default_resource_request`),
so Ray's scheduler does the placing; `check_fits` makes sure it can.

`actor_hosts` reads Ray's state API afterwards, so the job log (and ``cluster.json`` in the output
data) says which host ran which actor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sagemaker_ray_rl.cluster.node import ENV_RUNNER_RESOURCE, HOST_RESOURCE_PREFIX, LEARNER_RESOURCE
from sagemaker_ray_rl.cluster.settings import ClusterSettings
from sagemaker_ray_rl.contract.errors import ClusterError

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

#: Names for actor classes whose Ray class name says little. RLlib starts remote learners through
#: Ray Train's worker group (`LearnerGroup` -> `BackendExecutor`), whose actor class is a wrapper.
ACTOR_CLASS_LABELS = {"create_executable_class.<locals>._WrappedExecutable": "Learner"}

#: Share of a node's ``learner_host`` / ``env_runner_host`` resource one actor asks for: up to 1,000
#: actors per host, so only CPUs and GPUs limit how many land there.
ACTOR_SHARE = 0.001


def place_actors(config: AlgorithmConfig, settings: ClusterSettings, master_host: str) -> None:
    """Place the actors of `config` (in place): the algorithm's main process on the master host,
    learners on ``ray.learner_group``, env runners on ``ray.env_runner_groups``.

    The main process (the Tune trial) writes the checkpoints, and Tune's storage is the master's
    ``/opt/ml/checkpoints``, so it must run on the master. When the learner group does not hold the
    master and ``num_learners`` is 0 (learner inside the main process), one remote learner is asked
    for, so the learner can run on its group. Settings the user made (``custom_resources_*``) are
    extended, not replaced.
    """
    config.resources(
        custom_resources_for_main_process={
            **config.custom_resources_for_main_process,
            f"{HOST_RESOURCE_PREFIX}{master_host}": ACTOR_SHARE,
        }
    )
    if settings.learner_group:
        if config.num_learners == 0 and master_host not in settings.learner_group_hosts:
            config.learners(num_learners=1)
        config.learners(
            custom_resources_per_learner={
                **(config.custom_resources_per_learner or {}),
                LEARNER_RESOURCE: ACTOR_SHARE,
            }
        )
    if settings.env_runner_groups:
        config.env_runners(
            custom_resources_per_env_runner={
                **config.custom_resources_per_env_runner,
                ENV_RUNNER_RESOURCE: ACTOR_SHARE,
            }
        )


def default_num_env_runners(
    nodes: Iterable[Mapping[str, Any]], settings: ClusterSettings, master_host: str, num_learners: int = 0
) -> int:
    """Env runners that fill the cluster: the CPUs of the env-runner hosts, less one CPU for the
    algorithm's main process when the master is one of them, less one per remote learner that may
    land on them. At least 1.

    Args:
        nodes: Ray's ``ray.nodes()`` entries (``Alive``, ``Resources``).
        settings: the cluster settings (which hosts take env runners).
        master_host: the master's host name (it runs the main process).
        num_learners: remote learners (``num_learners``), one CPU each.
    """
    alive = [n for n in nodes if n.get("Alive")]
    runner_hosts = [n for n in alive if not settings.env_runner_groups or ENV_RUNNER_RESOURCE in n.get("Resources", {})]
    cpus = sum(int(n.get("Resources", {}).get("CPU", 0)) for n in runner_hosts)
    if any(host_of(n.get("Resources", {})) == master_host for n in runner_hosts):
        cpus -= 1
    if not settings.learner_group or any(LEARNER_RESOURCE in n.get("Resources", {}) for n in runner_hosts):
        cpus -= num_learners
    return max(1, cpus)


def check_fits(config: AlgorithmConfig, nodes: Iterable[Mapping[str, Any]]) -> None:
    """Fail now, not hang: the trial's placement group must fit in the cluster.

    Sums RLlib's own bundles (`Algorithm.default_resource_request`) per resource and compares them
    with the alive nodes' totals. Tune would otherwise wait forever for a placement group that cannot
    be placed.

    Raises:
        ClusterError: a resource is asked for more than the cluster has (names it, with both numbers).
    """
    bundles = config.algo_class.default_resource_request(config).bundles
    wanted: Counter[str] = Counter()
    for bundle in bundles:
        wanted.update({k: v for k, v in bundle.items() if v})
    have: Counter[str] = Counter()
    for node in nodes:
        if node.get("Alive"):
            have.update(node.get("Resources", {}))
    short = [
        f"{name}: {amount:g} asked, {have.get(name, 0):g} in the cluster"
        for name, amount in wanted.items()
        if amount > have.get(name, 0) + 1e-9
    ]
    if short:
        raise ClusterError(
            f"the experiment's {len(bundles)} actors (main process, env runners, learners) do not fit in the "
            f"Ray cluster ({'; '.join(short)}). Lower num_env_runners or the per-actor resources, or add hosts"
        )


def host_of(resources: Mapping[str, Any]) -> str | None:
    """The SageMaker host name carried by a node's resources, or None for a node that is not ours."""
    for name in resources:
        if name.startswith(HOST_RESOURCE_PREFIX):
            return name[len(HOST_RESOURCE_PREFIX) :]
    return None


def actor_hosts(node_hosts: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """How many actors of each class ran on each host, from Ray's state API (dead actors included).

    Args:
        node_hosts: Ray node id (hex) -> host name.

    Returns:
        class name -> host name -> count. Empty when the state API cannot be reached (it lives in the
        dashboard: ``ray.include_dashboard=false`` turns it off).
    """
    from ray.util.state import list_actors  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

    try:
        actors = list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
    except Exception as exc:  # the state API is best effort: no dashboard, or it is still starting
        print(f"Actor placement unknown: Ray's state API did not answer ({exc})", flush=True)
        return {}
    counts: dict[str, Counter[str]] = {}
    for actor in actors:
        host = node_hosts.get(actor.node_id or "", actor.node_id or "unknown")
        name = ACTOR_CLASS_LABELS.get(actor.class_name, actor.class_name)
        counts.setdefault(name, Counter())[host] += 1
    return {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}
