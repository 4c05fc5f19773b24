"""Multi-model endpoints: SageMaker's bring-your-own-container contract for many policies behind
one endpoint (``SAGEMAKER_MULTI_MODEL=true``).

Contract (SageMaker developer guide, "Custom Containers Contract for Multi-Model Endpoints"):

===============================  ================================================================
``POST /models``                 load ``{"model_name": name, "url": "/opt/ml/models/<name>/model"}``:
                                 200; 409 when ``name`` is loaded; 507 when it would not fit the
                                 memory budget (SageMaker then unloads unused models and retries)
``GET /models``                  ``{"models": [{"modelName", "modelUrl"}, ...], "nextPageToken"}``,
                                 sorted by name, query ``max_results`` and ``next_page_token``
``GET /models/<name>``           ``{"modelName", "modelUrl", ...}``; 404 when not loaded
``DELETE /models/<name>``        unload: 200; 404 when not loaded
``POST /models/<name>/invoke``   the same bodies, content types, options and answers as
                                 ``/invocations`` (`protocol.answer_invocation`); 404 unknown
===============================  ================================================================

``X-Amzn-SageMaker-Target-Model`` (the ``TargetModel`` of ``InvokeEndpoint``, which SageMaker
passes for logging) is logged with each invoke, and a plain ``POST /invocations`` in this mode is
routed to the loaded model of that name.

**Every gunicorn worker answers the same.** SageMaker sends each call to whichever worker accepts
the connection, so the set of loaded models is kept in a directory shared by the workers (one JSON
entry per model, created with ``O_EXCL`` so two workers cannot both load a name), not in one
worker's memory. A worker loads a model into its own memory the first time it serves it (the worker
that answered ``POST /models`` already has it) and drops it once the entry is gone.

**Loading does not stall other models.** The load (`Policy.load`: unpickling RLlib modules and
connectors) runs through `ModelRegistry`'s ``run_blocking`` (under gunicorn: gevent's pool of real
threads), so the worker's event loop keeps answering invocations of loaded models meanwhile.

**Memory budget.** ``SAGEMAKER_RAY_RL_MME_MEMORY_MB`` (default: 80% of the container's memory,
its cgroup limit or else the machine's). A model costs `estimate_model_bytes` (its checkpoint's
size on disk, which holds optimizer state the server never loads, plus `MODEL_OVERHEAD_BYTES`; a
test policy is counted 3.2 MB and was measured to add 0.6 MB resident) in every worker; a load
that would take the sum over loaded models times the workers above the budget is answered 507
before anything is loaded. The resident memory the load really added in the worker that loaded it
is reported as ``memoryBytesMeasured``.

One concern despite its length: SageMaker's multi-model contract (the registry shared by the
workers, its memory budget and its routes); each answer is `protocol`'s.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from sagemaker_ray_rl.checkpoint import CHECKPOINT_MARKER
from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError, SageMakerRayRLError
from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.serving import codecs
from sagemaker_ray_rl.serving.flask_app import add_json_errors, request_body
from sagemaker_ray_rl.serving.protocol import PING_BODY, Job, answer_invocation, error_answer, execution_parameters

logger = logging.getLogger(__name__)

TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"
#: Added to a model's size on disk: one more loaded CartPole or Pendulum PPO policy of
#: tests/integration/train_policies.py added 0.6 MB resident (RLlib already imported;
#: scripts/bench/bench_mme_memory.py, docs/benchmarks.md), rounded up.
MODEL_OVERHEAD_BYTES = 1024 * 1024
#: Fraction of the container's memory that is the default budget.
DEFAULT_BUDGET_FRACTION = 0.8
_LOAD_BODY = '{"model_name": "<name>", "url": "/opt/ml/models/<name>/model"}'


def container_memory_bytes() -> int:
    """The container's memory: its cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)
    when set, else the machine's (``/proc/meminfo`` MemTotal, else ``os.sysconf``)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < physical:
            return int(value)
    return physical


def default_budget_bytes() -> int:
    """`DEFAULT_BUDGET_FRACTION` of `container_memory_bytes`."""
    return int(DEFAULT_BUDGET_FRACTION * container_memory_bytes())


def estimate_model_bytes(url: Path) -> int:
    """What loading the model at `url` is counted as against the budget: the size of its files
    (the checkpoint's weights, optimizer and connector states) plus `MODEL_OVERHEAD_BYTES`."""
    size = sum(p.stat().st_size for p in Path(url).rglob("*") if p.is_file())
    return size + MODEL_OVERHEAD_BYTES


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class ModelNotFound(RequestError):
    """404: no model of that name is loaded."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"model {name!r} is not loaded", status=404, field="model_name", expected=f"POST /models {_LOAD_BODY} first"
        )


@dataclass
class _Local:
    """A model this worker holds: the entry's token it was loaded for, the policy, its compute."""

    token: str
    policy: Policy
    compute: Callable[[list[Job]], list[Any]] | None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelRegistry:
    """The models of a multi-model endpoint, shared by all workers through `state_dir`.

    Args:
        state_dir: directory shared by the workers (created by ``serve`` before the fork).
        settings: payload limit and default Accept of the invocations.
        budget_bytes: memory budget (see the module docstring).
        workers: gunicorn workers (each may hold every model).
        run_blocking: runs a blocking call (the load) and returns its result; under gevent a
            thread-pool call so other greenlets keep running. Default: call it here.
        compute_factory: policy -> the compute function of its invocations (e.g. a per-model
            `batching.GreenBatcher`); None: `protocol.compute_jobs`.
        loader: url -> `Policy` (default `Policy.load`).
    """

    def __init__(
        self,
        state_dir: Path,
        settings: ServingSettings,
        *,
        budget_bytes: int,
        workers: int = 1,
        run_blocking: Callable[..., Any] | None = None,
        compute_factory: Callable[[Policy], Callable[[list[Job]], list[Any]]] | None = None,
        loader: Callable[[Path], Policy] = Policy.load,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.budget_bytes = int(budget_bytes)
        self.workers = max(1, int(workers))
        self._run_blocking = run_blocking or (lambda fn, *args: fn(*args))
        self._compute_factory = compute_factory
        self._loader = loader
        self._local: dict[str, _Local] = {}

    # -- shared entries -------------------------------------------------------------------
    def _entry_path(self, name: str) -> Path:
        return self.state_dir / (base64.urlsafe_b64encode(name.encode()).decode().rstrip("=") + ".json")

    def _entry(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._entry_path(name).read_text())
        except (OSError, ValueError):
            return None

    def _entries(self) -> list[dict[str, Any]]:
        entries = []
        for path in self.state_dir.glob("*.json"):
            try:
                entries.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # removed meanwhile, or being written
                continue
        return sorted(entries, key=lambda e: e["modelName"])

    # -- the contract ---------------------------------------------------------------------
    def load(self, body: bytes) -> dict[str, Any]:
        """``POST /models``.

        Raises:
            RequestError: 400 for a body that is not ``{"model_name": str, "url": str}`` or a url
                without a loadable RLlib checkpoint, 409 when the name is loaded, 507 over budget.
        """
        try:
            payload = json.loads(body or b"null")
        except ValueError as exc:
            raise RequestError(f"request body is not JSON: {exc}", expected=_LOAD_BODY) from exc
        if not isinstance(payload, dict) or not all(isinstance(payload.get(k), str) for k in ("model_name", "url")):
            raise RequestError("expected a JSON object with string 'model_name' and 'url'", expected=_LOAD_BODY)
        name, url = payload["model_name"], payload["url"]
        if not name:
            raise RequestError("'model_name' is empty", field="model_name", expected="a non-empty name")
        if not Path(url).is_dir():
            raise RequestError(f"url {url!r} is not a directory", field="url", expected="the model's directory")
        if self._entry(name) is not None:
            raise RequestError(f"model {name!r} is already loaded", status=409, field="model_name")
        estimate = estimate_model_bytes(Path(url))
        used = sum(e["estimatedBytes"] for e in self._entries())
        if (used + estimate) * self.workers > self.budget_bytes:
            raise RequestError(
                f"loading {name!r} ({estimate / 2**20:.1f} MB per worker) would exceed the memory budget: "
                f"{used / 2**20:.1f} MB loaded, {self.workers} worker(s), budget {self.budget_bytes / 2**20:.1f} MB "
                "(SAGEMAKER_RAY_RL_MME_MEMORY_MB)",
                status=507,
                field="model_name",
                expected="unload a model first",
            )
        entry = {
            "modelName": name,
            "modelUrl": url,
            "estimatedBytes": estimate,
            "token": uuid.uuid4().hex,
            "loadedAt": time.time(),
        }
        path = self._entry_path(name)
        try:  # O_EXCL: of two workers loading the same name at once, one gets 409
            fd = os.open(path.with_suffix(".claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise RequestError(f"model {name!r} is already being loaded", status=409, field="model_name") from None
        os.close(fd)
        try:
            before = resident_bytes()
            local = self._load_local(entry)
            entry["memoryBytesMeasured"] = max(0, resident_bytes() - before)
            entry["loadSeconds"] = round(time.time() - entry["loadedAt"], 3)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entry))
            os.replace(tmp, path)
            self._local[name] = local
        finally:
            path.with_suffix(".claim").unlink(missing_ok=True)
        _say(f"loaded model {name!r} from {url} in {entry['loadSeconds']:.2f} s")
        return _public(entry)

    def list(self, max_results: str | None = None, next_page_token: str | None = None) -> dict[str, Any]:
        """``GET /models``: a page of loaded models, sorted by name; ``nextPageToken`` (the last
        name of the page, base64) when more follow.

        Raises:
            RequestError: 400 for a ``max_results`` that is not a positive integer or a bad token.
        """
        limit = None
        if max_results is not None:
            if not max_results.isdigit() or int(max_results) < 1:
                raise RequestError(
                    f"max_results must be a positive integer, got {max_results!r}",
                    field="max_results",
                    expected="an integer >= 1",
                )
            limit = int(max_results)
        entries = self._entries()
        if next_page_token:
            try:
                after = base64.urlsafe_b64decode(next_page_token.encode()).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(
                    "next_page_token is not one this server gave",
                    field="next_page_token",
                    expected="the nextPageToken of the previous page",
                ) from exc
            entries = [e for e in entries if e["modelName"] > after]
        page = entries if limit is None else entries[:limit]
        out: dict[str, Any] = {"models": [{"modelName": e["modelName"], "modelUrl": e["modelUrl"]} for e in page]}
        if limit is not None and len(entries) > limit:
            out["nextPageToken"] = base64.urlsafe_b64encode(page[-1]["modelName"].encode()).decode()
        return out

    def describe(self, name: str) -> dict[str, Any]:
        """``GET /models/<name>``. Raises `ModelNotFound`."""
        entry = self._entry(name)
        if entry is None:
            raise ModelNotFound(name)
        return _public(entry)

    def unload(self, name: str) -> dict[str, Any]:
        """``DELETE /models/<name>``: the entry goes (every worker drops its copy on its next call
        for the name). Raises `ModelNotFound`."""
        entry = self._entry(name)
        if entry is None:
            raise ModelNotFound(name)
        self._entry_path(name).unlink(missing_ok=True)
        self._local.pop(name, None)
        _say(f"unloaded model {name!r}")
        return {"modelName": name, "status": "unloaded"}

    def invoke(self, name: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        """``POST /models/<name>/invoke``: `protocol.answer_invocation` with that model's policy.

        Returns:
            ``(status, content type, body)``; 404 (JSON) for a model that is not loaded.
        """
        target = headers.get(TARGET_MODEL_HEADER)
        if target:
            logger.debug("invoke %r (TargetModel %r)", name, target)
        try:
            local = self._policy(name)
        except RequestError as exc:
            return error_answer(exc)
        return answer_invocation(local.policy, self.settings, headers, body, local.compute)

    def invoke_target(self, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        """``POST /invocations`` in multi-model mode: routed by ``X-Amzn-SageMaker-Target-Model``."""
        target = headers.get(TARGET_MODEL_HEADER)
        if not target:
            return error_answer(
                RequestError(
                    "this is a multi-model endpoint: name the model",
                    field=TARGET_MODEL_HEADER,
                    expected="the header X-Amzn-SageMaker-Target-Model, or POST /models/<name>/invoke",
                )
            )
        return self.invoke(target, headers, body)

    # -- this worker's copies -------------------------------------------------------------
    def _policy(self, name: str) -> _Local:
        entry = self._entry(name)
        if entry is None:
            self._local.pop(name, None)
            raise ModelNotFound(name)
        local = self._local.get(name)
        if local is not None and local.token == entry["token"]:
            return local
        local = self._load_local(entry)
        self._local[name] = local
        _say(f"loaded model {name!r} from {entry['modelUrl']} on first use")
        return local

    def _load_local(self, entry: dict[str, Any]) -> _Local:
        try:
            policy = self._run_blocking(self._loader, Path(entry["modelUrl"]))
        except SageMakerRayRLError as exc:
            raise RequestError(
                f"cannot load model {entry['modelName']!r} from {entry['modelUrl']}: {exc}",
                field="url",
                expected=f"a directory with an RLlib checkpoint ({CHECKPOINT_MARKER})",
            ) from exc
        compute = self._compute_factory(policy) if self._compute_factory is not None else None
        return _Local(entry["token"], policy, compute)


def _say(message: str) -> None:
    """One line on stderr (the container log), naming this worker."""
    print(f"serve: worker {os.getpid()}: {message}", file=sys.stderr, flush=True)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "token"}


def create_app(registry: ModelRegistry, settings: ServingSettings) -> Any:
    """The flask app of a multi-model endpoint: the routes of the module docstring, ``/ping``,
    ``/execution-parameters``, errors as JSON as in `flask_app`."""
    app = Flask("sagemaker_ray_rl_mme")
    parameters_body = execution_parameters(settings)

    def as_json(value: Any, status: int = 200) -> Response:
        return Response(json.dumps(value), status=status, mimetype=codecs.JSON)

    @app.get("/ping")
    def ping() -> Response:
        return Response(PING_BODY, status=200, mimetype=codecs.JSON)

    @app.get("/execution-parameters")
    def parameters() -> Response:
        return Response(parameters_body, status=200, mimetype=codecs.JSON)

    @app.post("/models")
    def load() -> Response:
        return as_json(registry.load(request_body(settings)))

    @app.get("/models")
    def list_models() -> Response:
        return as_json(registry.list(request.args.get("max_results"), request.args.get("next_page_token")))

    @app.get("/models/<name>")
    def describe(name: str) -> Response:
        return as_json(registry.describe(name))

    @app.delete("/models/<name>")
    def unload(name: str) -> Response:
        return as_json(registry.unload(name))

    @app.post("/models/<name>/invoke")
    def invoke(name: str) -> Response:
        status, mimetype, body = registry.invoke(name, request.headers, request_body(settings))
        return Response(body, status=status, mimetype=mimetype)

    @app.post("/invocations")
    def invocations() -> Response:
        status, mimetype, body = registry.invoke_target(request.headers, request_body(settings))
        return Response(body, status=status, mimetype=mimetype)

    add_json_errors(app)
    return app
