"""One Ray cluster over the hosts of a SageMaker training job, from resourceconfig.json alone.

The master is the first host of the sorted host list (`ResourceConfig.master_host`). It starts the
Ray head on its own IP, waits until the hosts have joined (``ray.nodes()``), and only then runs
training, with ``RAY_ADDRESS`` set, so that ``ray.init()`` in any driver joins this cluster. While
training runs it watches the nodes: a host that leaves fails the job within seconds of Ray noticing
(instead of a placement group that waits forever). When training ends it tells every worker that the
job is over, then stops the head.

A worker resolves the master (retrying DNS: the contract says names may not resolve at first), starts
its Ray node against the head, retrying until ``ray.join_timeout_s``, and then blocks. It exits 0
once the master said the job is over, and fails (failure file, non-zero exit) when the head becomes
unreachable before that. Workers never run user code.

Why our own launcher: Ray's cluster launcher (``ray up``) provisions machines through cloud APIs;
SageMaker has already provisioned them and says which they are only through its contract files.
The "job is over" signal travels through Ray itself: a task pinned to each worker node writes a
marker file there (`mark_job_done`), because Ray tells worker nodes nothing when a head shuts down
(their raylets just lose the GCS and exit a minute later).

One concern despite its length: the lifecycle of one cluster (start, join, watch, finish, stop) seen
from both roles, which share its state and its signals; what stands alone is in `settings`,
`network`, `node` and `placement`.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagemaker_ray_rl.cluster import quiet
from sagemaker_ray_rl.cluster.auth import RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_PATH_ENV, RayAuth, resolve_auth
from sagemaker_ray_rl.cluster.network import own_ip, port_open, resolve_host, wait_for_port
from sagemaker_ray_rl.cluster.node import (
    NodeSpec,
    RayHeadProcess,
    RayNodeProcess,
    head_command,
    host_object_store,
    node_resources,
    ray_environment,
    worker_command,
)
from sagemaker_ray_rl.cluster.placement import actor_hosts, host_of
from sagemaker_ray_rl.cluster.settings import ClusterSettings
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import ClusterError
from sagemaker_ray_rl.contract.failure import write_failure

#: Where a worker host finds the master's "job is over" message (written by `mark_job_done`).
DONE_MARKER = Path(tempfile.gettempdir()) / "sagemaker_ray_rl" / "job_done"
#: Seconds the head gets to start (GCS port open) before the job fails.
HEAD_START_TIMEOUT_S = 60.0
#: Seconds between two looks at ``ray.nodes()`` (master) or at the head's port (worker).
POLL_INTERVAL_S = 1.0
#: Seconds a worker waits for the head to go away after the job is over, before it stops anyway.
DONE_GRACE_S = 20.0
#: Seconds a worker keeps its node up after SIGTERM, while the master checkpoints (SageMaker kills
#: every host 120 s after SIGTERM).
STOP_GRACE_S = 100.0
#: Seconds a worker's ``ray start`` gets to stop its processes before they are killed.
WORKER_STOP_TIMEOUT_S = 3.0
#: Seconds a ``ray start`` must stay up on a worker to count as joined (else it is retried).
JOIN_SETTLE_S = 10.0
#: The name of the cluster summary in the output data dir.
SUMMARY_FILE = "cluster.json"


def log(message: str) -> None:
    """One line in the job log, prefixed so launcher lines stand out from Ray's."""
    print(f"[sagemaker-ray-rl] {message}", flush=True)


def mark_job_done(marker: str, status: dict[str, Any]) -> str:
    """Write `status` as JSON to `marker` on the node this runs on (a Ray task; see the module
    docstring). Returns the node's IP, for the master's log."""
    import ray  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

    path = Path(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status))
    return ray.util.get_node_ip_address()


@dataclass
class Cluster:
    """The running cluster, as the master sees it.

    Attributes:
        address: the head's GCS address ``ip:port`` (also in ``RAY_ADDRESS``).
        hosts: hosts that joined, sorted.
        node_hosts: Ray node id (hex) -> host name.
        bring_up_s: seconds from starting the head to the last required host alive.
        all_alive_at: Unix time at which the required hosts were alive.
        head: the head node's process.
    """

    environment: Environment
    settings: ClusterSettings
    address: str
    head: RayHeadProcess
    hosts: tuple[str, ...] = ()
    node_hosts: dict[str, str] = field(default_factory=dict)
    bring_up_s: float = 0.0
    all_alive_at: float = 0.0
    _stop_watch: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """Start a daemon thread that calls `on_lost(host)` once a joined host is no longer alive in
        Ray (Ray's GCS marks a node dead after its health checks fail, about 15 s)."""

        def loop() -> None:
            import ray  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

            while not self._stop_watch.wait(POLL_INTERVAL_S):
                try:
                    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
                except Exception:  # the head is going away; the main thread decides what that means
                    continue
                lost = sorted(h for node, h in self.node_hosts.items() if node not in alive)
                if lost and not self._stop_watch.is_set():
                    on_lost(", ".join(lost))
                    return

        self._watcher = threading.Thread(target=loop, name="sagemaker-ray-rl-node-watch", daemon=True)
        self._watcher.start()

    def summary(self) -> dict[str, Any]:
        """Hosts, bring-up time and which host ran which actor (Ray's state API), as saved in
        ``cluster.json``."""
        return {
            "hosts": list(self.hosts),
            "master_host": self.environment.resource_config.master_host,
            "bring_up_s": round(self.bring_up_s, 3),
            "all_alive_at": self.all_alive_at,
            "actors": actor_hosts(self.node_hosts) if self.settings.include_dashboard else {},
        }

    def finish(self, status: dict[str, Any]) -> None:
        """End the job: stop watching, tell every worker the job is over, stop the head."""
        import ray  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

        self._stop_watch.set()
        try:
            head_node = ray.get_runtime_context().get_node_id()
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            remote = ray.remote(num_cpus=0, max_retries=0)(mark_job_done)
            refs = [
                remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
                    str(DONE_MARKER), status
                )
                for node in self.node_hosts
                if node != head_node and node in alive
            ]
            ray.get(refs, timeout=30)
        except Exception as exc:  # workers that miss it give up when the head goes away
            log(f"could not tell every worker that the job is over ({type(exc).__name__}: {exc})")
        finally:
            ray.shutdown()
            self.head.stop()


def start_cluster(environment: Environment, settings: ClusterSettings) -> Cluster:
    """On the master: start the Ray head, connect this process as a driver, wait for the hosts.

    Sets ``RAY_ADDRESS``, ``RAY_AUTH_MODE`` and, for a derived token, ``RAY_AUTH_TOKEN_PATH`` in
    ``os.environ`` (for ``ray.init()`` here and in child processes such as a user entry point).

    Raises:
        HyperparameterError: ``RAY_AUTH_MODE`` is invalid or contradicts ``ray.auth`` (`auth`).
        ClusterError: the token file is missing or cannot be written; the head did not start, or fewer than ``ray.min_hosts`` hosts joined within
            ``ray.join_timeout_s`` (the message names the missing hosts).
    """
    import ray  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

    rc = environment.resource_config
    started = time.monotonic()
    auth = resolve_auth(environment, settings.auth, secret_id=settings.auth_token_secret)
    ip = own_ip(rc.current_host, rc.network_interface_name, timeout_s=settings.join_timeout_s)
    env = ray_environment(auth)
    os.environ.update(
        {k: env[k] for k in (RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_PATH_ENV, "RAY_USAGE_STATS_ENABLED") if k in env}
    )
    _reload_ray_auth()
    store = host_object_store(settings.object_store_bytes)
    spec = NodeSpec(
        ip=ip,
        num_cpus=environment.num_cpus,
        num_gpus=environment.num_gpus,
        resources=node_resources(rc.current_host, rc.current_group_name, settings),
        object_store=store,
    )
    log(
        f"master {rc.current_host} ({ip}): starting the Ray head for {len(rc.hosts)} host(s), "
        f"{spec.num_cpus} CPU(s), {spec.num_gpus} GPU(s), {store.reason}, {_describe_auth(auth, len(rc.hosts))}"
    )
    address = f"{ip}:{settings.gcs_port}"
    if port_open(ip, settings.gcs_port):
        # Another Ray head (another job on this machine) answers there: `ray start` would fail and
        # ray.init would join that cluster instead, with a confusing authentication error.
        raise ClusterError(
            f"port {settings.gcs_port} on {ip} (master host {rc.current_host}) is already in use, e.g. by "
            f"another job's Ray head on the same machine; set the hyperparameter ray.gcs_port to a free port"
        )
    head = RayHeadProcess(head_command(spec, settings), env, address)
    if not wait_for_port(ip, settings.gcs_port, timeout_s=HEAD_START_TIMEOUT_S) or not head.running():
        head.stop()
        raise ClusterError(
            f"the Ray head on master host {rc.current_host} did not start within {HEAD_START_TIMEOUT_S:g} s "
            f"(ray start exit status {head.returncode}); its last lines:\n{head.output_tail()}"
        )
    os.environ["RAY_ADDRESS"] = address
    cluster = Cluster(environment=environment, settings=settings, address=address, head=head)
    try:
        _connect_driver(address, head, deadline=time.monotonic() + HEAD_START_TIMEOUT_S)
        quiet.install(environment.hyperparameters)
        quiet.filter_worker_logs(environment.hyperparameters)
        _wait_for_hosts(cluster)
    except BaseException:
        ray.shutdown()
        head.stop()
        raise
    cluster.bring_up_s = time.monotonic() - started
    cluster.all_alive_at = time.time()
    log(f"Ray cluster up: {len(cluster.hosts)} of {len(rc.hosts)} host(s) alive after {cluster.bring_up_s:.1f} s")
    return cluster


def _connect_driver(address: str, head: RayHeadProcess, *, deadline: float) -> None:
    """``ray.init(address)`` on the master, tried again while the head runs and ``deadline``
    (``time.monotonic()`` seconds) is ahead.

    The head's GCS port opens before its raylet has registered; on a loaded host Ray 2.60's driver
    can give up looking for the local node first ("No node info found matching attributes", raised
    as ``ConnectionError: Failed to connect to Ray cluster``).

    Raises:
        ClusterError: the head exited, or the driver could not connect before ``deadline``; names
            the address and Ray's error.
    """
    import ray  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

    while True:
        try:
            ray.init(address=address, logging_level="warning", log_to_driver=True)
            return
        except ConnectionError as error:
            ray.shutdown()
            if not head.running() or time.monotonic() >= deadline:
                raise ClusterError(
                    f"the driver on the master could not connect to the Ray head at {address} "
                    f"(head running: {head.running()}): {error}; its last lines:\n{head.output_tail()}"
                ) from error
            log(f"the Ray head at {address} is not ready for a driver yet ({error}); trying again")
            time.sleep(POLL_INTERVAL_S)


def _describe_auth(auth: RayAuth, hosts: int) -> str:
    """The job log's words for `auth` (never the token)."""
    if auth.enabled:
        return f"Ray token authentication on (token: {auth.source})"
    exposed = " (anyone who reaches the hosts' Ray ports can run code in the job)" if hosts > 1 else ""
    return f"Ray token authentication OFF: {auth.source}{exposed}"


def _reload_ray_auth() -> None:
    """Make this process's Ray read ``RAY_AUTH_MODE`` and the token again: Ray's config and token
    loader cache what they read when Ray was imported (before the variables were set here), the way
    Ray's own ``ray.init()`` refreshes them when it turns authentication on
    (``ray._private.authentication.authentication_token_setup``)."""
    from ray._raylet import AuthenticationTokenLoader, Config  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _wait_for_hosts(cluster: Cluster) -> None:
    import ray  # noqa: PLC0415  (Ray's API in the driver only: docs/architecture.md)

    rc = cluster.environment.resource_config
    settings = cluster.settings
    required = settings.required_hosts(rc)
    deadline = time.monotonic() + settings.join_timeout_s
    while True:
        if not cluster.head.running():
            raise ClusterError(
                f"the Ray head on master host {rc.current_host} stopped while waiting for the hosts "
                f"(ray start exit status {cluster.head.returncode})"
            )
        node_hosts = {
            n["NodeID"]: host
            for n in ray.nodes()
            if n.get("Alive") and (host := host_of(n.get("Resources", {}))) in rc.hosts
        }
        joined = set(node_hosts.values())
        if len(joined) == len(rc.hosts) or (time.monotonic() >= deadline and len(joined) >= required):
            cluster.node_hosts = node_hosts
            cluster.hosts = tuple(sorted(joined))
            missing = sorted(set(rc.hosts) - joined)
            if missing:
                log(f"continuing without host(s) {', '.join(missing)}: {len(joined)} joined, ray.min_hosts={required}")
            return
        if time.monotonic() >= deadline:
            missing = sorted(set(rc.hosts) - joined)
            raise ClusterError(
                f"host(s) {', '.join(_describe(h) for h in missing)} did not join the Ray cluster within "
                f"{settings.join_timeout_s:g} s (ray.join_timeout_s); joined: {', '.join(sorted(joined))}; "
                f"{required} of {len(rc.hosts)} host(s) required (ray.min_hosts). Look for the missing host's "
                "log; raise ray.join_timeout_s when hosts start slowly"
            )
        time.sleep(0.25)


def _describe(host: str) -> str:
    """`host` with what DNS says of it now, for a join failure (a name that never resolves means the
    host never came up on the job network)."""
    try:
        return f"{host} (resolves to {resolve_host(host, timeout_s=0)})"
    except ClusterError:
        return f"{host} (its name does not resolve)"


def run_worker(environment: Environment, settings: ClusterSettings, *, marker: Path = DONE_MARKER) -> dict[str, Any]:
    """On a worker host: join the master's Ray head and block until the job is over.

    On SIGTERM (the job is being stopped: SageMaker sends it to every host) the node stays up until the
    master has checkpointed and stopped its head, at most `STOP_GRACE_S` seconds: the master's env
    runners may be on this host.

    Returns:
        The master's final status (``{"succeeded": bool, ...}``) once it said the job is over;
        ``{"stopped": True}`` after SIGTERM.

    Raises:
        ClusterError: the master did not resolve or answer within ``ray.join_timeout_s``; this host's
            Ray node could not join or stopped; or the head became unreachable for
            ``ray.head_lost_timeout_s`` before the job was over.
    """
    rc = environment.resource_config
    host, master = rc.current_host, rc.master_host
    deadline = time.monotonic() + settings.join_timeout_s
    master_ip = resolve_host(master, timeout_s=settings.join_timeout_s)
    ip = own_ip(host, rc.network_interface_name, timeout_s=max(1.0, deadline - time.monotonic()))
    head = f"{master_ip}:{settings.gcs_port}"
    auth = resolve_auth(environment, settings.auth, secret_id=settings.auth_token_secret)
    log(
        f"worker {host} ({ip}): joining the Ray head on master {master} ({head}), {_describe_auth(auth, len(rc.hosts))}"
    )
    if not wait_for_port(master_ip, settings.gcs_port, timeout_s=max(0.0, deadline - time.monotonic())):
        raise ClusterError(
            f"worker host {host} could not reach the Ray head on master host {master} ({head}) within "
            f"{settings.join_timeout_s:g} s (ray.join_timeout_s)"
        )
    marker.unlink(missing_ok=True)
    spec = NodeSpec(
        ip=ip,
        num_cpus=environment.num_cpus,
        num_gpus=environment.num_gpus,
        resources=node_resources(host, rc.current_group_name, settings),
        object_store=host_object_store(settings.object_store_bytes),
    )
    node = RayNodeProcess(worker_command(spec, head), ray_environment(auth))
    stop = _StopRequest()
    head_seen = time.monotonic()
    stopped_at: float | None = None
    done_at: float | None = None
    status: dict[str, Any] = {}
    try:
        with stop.on_sigterm():
            while True:
                now = time.monotonic()
                if done_at is None and marker.exists():
                    done_at, status = now, json.loads(marker.read_text() or "{}")
                    log(f"worker {host}: the master says the job is over (succeeded: {status.get('succeeded')})")
                head_up = port_open(master_ip, settings.gcs_port)
                if done_at is not None and (
                    stop.requested or not node.running() or now - done_at > DONE_GRACE_S or not head_up
                ):
                    return status
                if stop.requested and stopped_at is None:
                    stopped_at = now
                    log(f"worker {host}: SIGTERM; serving the master until it has checkpointed and stopped")
                if stopped_at is not None and (not head_up or now - stopped_at > STOP_GRACE_S):
                    return {"stopped": True}
                if head_up:
                    head_seen = now
                elif now - head_seen > settings.head_lost_timeout_s:
                    raise ClusterError(
                        f"worker host {host} lost the Ray head on master host {master} ({head}): unreachable for "
                        f"{settings.head_lost_timeout_s:g} s (ray.head_lost_timeout_s) before the job was over; "
                        "the master host failed or was stopped"
                    )
                if not node.running():
                    if now - node.started < JOIN_SETTLE_S and now < deadline:
                        log(f"worker {host}: ray start exited ({node.returncode}) before joining; retrying")
                        time.sleep(2.0)
                        node.restart()
                        continue
                    raise ClusterError(
                        f"the Ray node on worker host {host} stopped (ray start exit status {node.returncode}) "
                        "before the job was over; its output is in this host's log"
                    )
                time.sleep(POLL_INTERVAL_S)
    finally:
        # A worker node holds nothing to save; Ray's drain on SIGTERM waits for a head that is gone.
        node.stop(timeout_s=WORKER_STOP_TIMEOUT_S)


class _StopRequest:
    """Remembers SIGTERM (SageMaker's StopTrainingJob, or docker compose ending the job) on a worker."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def on_sigterm(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def master_sigterm_exits() -> Iterator[None]:
    """Within this block, SIGTERM on the master raises SystemExit(143) in the main thread, so that
    ``finally`` blocks stop the cluster (Python's default would end the process on the spot)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail_on_lost_host(
    environment: Environment, cluster: Cluster, kill: Callable[[], None] = lambda: None
) -> Callable[[str], None]:
    """The master's reaction to a lost host (for `Cluster.watch`): write the failure file naming the
    host, run `kill` (e.g. stop a user entry point), stop the head and end the process with status 1.

    The process ends with ``os._exit``: the driver's main thread may be inside Tune waiting for actors
    that will never come back, and nothing there would return in time.
    """

    def on_lost(hosts: str) -> None:
        write_failure(
            environment,
            f"ClusterError: host(s) {hosts} left the Ray cluster during training (Ray marked the node dead); "
            f"all {len(cluster.hosts)} joined hosts were expected until the job ended. Look at that host's log "
            "(it may have run out of memory or been stopped)",
        )
        try:
            kill()
        finally:
            cluster.head.stop(timeout_s=10)
            os._exit(1)

    return on_lost


@contextmanager
def ray_cluster(environment: Environment | None = None, settings: ClusterSettings | None = None) -> Iterator[Cluster]:
    """The job's Ray cluster, for scripts that bring their own driver (e.g. SDK v3 ``ModelTrainer``).

    On the master host: bring the cluster up, yield the `Cluster` (``ray.init()`` joins it), and on
    leaving the block write ``cluster.json`` to the output data dir, tell the workers the job is over
    and stop Ray. On a worker host: join, block until the master is done, then exit the process with
    status 0 (status 1 and the failure file when the cluster fails), so the block never runs there.

    Example::

        from sagemaker_ray_rl.cluster import ray_cluster

        with ray_cluster():
            ray.init()
            ...  # train; only the master host runs this

    Raises:
        ClusterError: on the master, when the cluster cannot be formed.
        HyperparameterError: a ``ray.*`` hyperparameter is invalid.
    """
    environment = environment or Environment.from_environ()
    settings = settings or ClusterSettings.from_hyperparameters(
        environment.hyperparameters, environment.resource_config
    )
    if not environment.resource_config.is_master:
        try:
            run_worker(environment, settings)
        except ClusterError as exc:
            write_failure(environment, f"ClusterError: {exc}")
            raise SystemExit(1) from exc
        raise SystemExit(0)
    with master_sigterm_exits():
        cluster = start_cluster(environment, settings)
        cluster.watch(fail_on_lost_host(environment, cluster))
        succeeded = False
        try:
            yield cluster
            succeeded = True
        finally:
            try:
                write_summary(environment, cluster)
            finally:  # the workers and the head stop whatever happened to the summary
                cluster.finish({"succeeded": succeeded, "master_host": environment.resource_config.current_host})


def write_summary(environment: Environment, cluster: Cluster) -> None:
    """Print the placement summary and save it as ``cluster.json`` in the output data dir."""
    try:
        summary = cluster.summary()
    except Exception as exc:  # a summary must never turn a finished job into a failed one
        log(f"no cluster summary: {type(exc).__name__}: {exc}")
        return
    for name, hosts in summary["actors"].items():
        log(f"{name} actors per host: {', '.join(f'{h}: {n}' for h, n in hosts.items())}")
    try:
        environment.output_data_dir.mkdir(parents=True, exist_ok=True)
        (environment.output_data_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:  # a full disk or an unwritable output dir: the log above has it all
        log(f"could not write {environment.output_data_dir / SUMMARY_FILE}: {type(exc).__name__}: {exc}")
