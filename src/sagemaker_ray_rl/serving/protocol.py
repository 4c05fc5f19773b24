"""The serving protocol, without any web framework: what ``/ping``, ``/invocations`` and
``/execution-parameters`` answer (SageMaker hosting and batch transform).

One request goes through six steps, each a function both transports (`flask_app` under gunicorn,
`ray_serve`) call and neither re-implements:

0. read: the body, up to ``SAGEMAKER_MAX_PAYLOAD_IN_MB``, whether it comes with ``Content-Length`` or
   chunked (`BodyCollector`, `read_body`);
1. decode: content type, Accept, custom attributes and body -> `codecs.Decoded` (`read_invocation`);
2. validate and plan: each group's observations checked against its module's spaces and stacked into
   `Job` batches (`plan`);
3. compute: jobs with equal options share one forward pass (`compute_jobs`);
4. encode: each job's rows back in request order, in the Accept type (`write_invocation`);
5. errors: a `RequestError` anywhere is a 4xx with a JSON body naming the field and what was
   expected (`error_answer`); a path no route has (404) or a method its route does not take (405)
   is `http_error_answer`, an unexpected exception (e.g. in the policy) a 500 from
   `internal_error_answer`. The bodies of errors both transports answer are built here, so they match.

`answer_invocation` runs all five for one request.

One concern despite its length: the request path from bytes to bytes, which both transports must
share whole (reading the body within its limit included) so that neither re-implements a step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import numpy as np
import tree

from sagemaker_ray_rl.contract import names
from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.serving import codecs
from sagemaker_ray_rl.serving.observations import describe, observation_batch, state_batch

#: ``GET /ping``'s body (200 once the policy is loaded).
PING_BODY = b'{"status": "healthy"}'


#: Bytes of a body over the payload limit that are read and thrown away (never kept) before the 413
#: is answered. A client sends its whole body before it reads the answer; a server that answers and
#: closes while body bytes are still arriving makes the kernel reset the connection, and the
#: client sees ``Connection reset`` or ``Broken pipe`` instead of the 413. Beyond this many bytes
#: the server stops reading (a body that large is not a mistake to explain).
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024
#: Bytes asked of the input stream per read.
READ_SIZE = 64 * 1024


class BodyCollector:
    """A request body collected chunk by chunk, never holding more than the payload limit.

    Transports feed it what they read (`read_body` for WSGI streams, the Ray Serve transport for
    ASGI chunks), with or without a ``Content-Length`` (``Transfer-Encoding: chunked``), and call
    `body` at the end. Past the limit the chunks are counted and dropped, so the 413 can say how
    large the body was and the client can read it (`DISCARD_LIMIT_BYTES`).

    Args:
        settings: ``max_payload_bytes`` is the limit (``SAGEMAKER_MAX_PAYLOAD_IN_MB``, 1 MB =
            1,048,576 bytes); a body of exactly that many bytes is accepted.
        content_length: the ``Content-Length`` header as an int, or None (chunked, or absent).
    """

    def __init__(self, settings: ServingSettings, content_length: int | None = None) -> None:
        self.limit = settings.max_payload_bytes
        self.limit_mb = settings.max_payload_mb
        self.content_length = content_length
        #: Bytes received so far (kept or dropped).
        self.received = 0
        self.too_large = content_length is not None and content_length > self.limit
        self._parts: list[bytes] = []

    def add(self, chunk: bytes) -> bool:
        """Take the next chunk of the body.

        Returns:
            True while reading should go on; False once `DISCARD_LIMIT_BYTES` beyond the limit
            were dropped (stop reading; `body` raises the 413).
        """
        self.received += len(chunk)
        if not self.too_large:
            if self.received <= self.limit:
                self._parts.append(chunk)
                return True
            self.too_large = True
            self._parts = []
        return self.received <= self.limit + DISCARD_LIMIT_BYTES

    def body(self, complete: bool = True) -> bytes:
        """The whole body, at most ``limit`` bytes.

        Args:
            complete: whether the stream was read to its end (False after `add` said stop).

        Raises:
            RequestError: 413 when the body (its ``Content-Length``, or the bytes that came) is over
                the limit, naming ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` and the largest size accepted.
        """
        if not self.too_large:
            return b"".join(self._parts)
        if self.content_length is not None:
            size = f"{self.content_length} bytes"
        elif complete:
            size = f"{self.received} bytes (chunked)"
        else:
            size = f"more than {self.received} bytes (chunked)"
        raise RequestError(
            f"request body is {size}, more than {names.MAX_PAYLOAD_IN_MB_ENV}={self.limit_mb:g} allows",
            status=413,
            expected=f"a body of at most {self.limit} bytes; send fewer records per request",
        )


def read_body(read: Callable[[int], bytes], content_length: int | None, settings: ServingSettings) -> bytes:
    """Read a request body from a blocking stream, never holding more than the payload limit.

    Args:
        read: the stream's ``read(size)``; returns ``b""`` at the body's end (a WSGI server's
            ``wsgi.input`` ends there for chunked and ``Content-Length`` bodies alike, e.g.
            gunicorn's, which sets ``wsgi.input_terminated``).
        content_length: the ``Content-Length`` header as an int, or None.
        settings: the payload limit.

    Returns:
        The body, at most ``settings.max_payload_bytes`` bytes.

    Raises:
        RequestError: 413 for a body over the limit, after reading and dropping the rest of it
            (up to `DISCARD_LIMIT_BYTES`) so the client reads the answer.
    """
    collector = BodyCollector(settings, content_length)
    while True:
        chunk = read(READ_SIZE)
        if not chunk:
            return collector.body(complete=True)
        if not collector.add(chunk):
            return collector.body(complete=False)


def execution_parameters(settings: ServingSettings) -> bytes:
    """``GET /execution-parameters`` for batch transform: one concurrent transform per worker,
    multi-record batches up to the payload limit."""
    return json.dumps(
        {
            "MaxConcurrentTransforms": settings.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": max(1, int(settings.max_payload_mb)),
        }
    ).encode()


def answer_invocation(
    policy: Policy,
    settings: ServingSettings,
    headers: Any,
    body: bytes,
    compute: Callable[[list[Job]], list[Any]] | None = None,
) -> tuple[int, str, bytes]:
    """``POST /invocations`` without a web framework (the flask app's handler).

    Args:
        policy: the loaded policy.
        settings: payload limit and default Accept.
        headers: the request headers (a case-insensitive mapping with ``get``).
        body: the request body.
        compute: runs the request's jobs (default `compute_jobs` with `policy`).

    Returns:
        ``(status, content type, body)``: 200 with the answer, or a 4xx with a JSON error naming
        the field and what was expected.
    """
    try:
        accept, decoded, jobs = read_invocation(policy, settings, headers, body)
        answers = compute(jobs) if compute is not None else compute_jobs(policy, jobs)
        return 200, accept, write_invocation(accept, decoded, jobs, answers)
    except RequestError as exc:
        return error_answer(exc)


def ping_body(policy: Policy) -> bytes:
    """``GET /ping``'s body for a server of one policy (200 once it is loaded): ``{"status":
    "healthy", "inference": {module_id: "onnx" | "torch"}}``, what answers each module's greedy
    requests. `PING_BODY` is the body without a policy (e.g. a multi-model endpoint's)."""
    return json.dumps({"status": "healthy", "inference": policy.engines}).encode()


def error_answer(exc: RequestError) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of a user error: its 4xx and a JSON body."""
    return exc.status, codecs.JSON, json.dumps(exc.to_dict()).encode()


#: The messages of the errors a transport's router answers before any route runs: no route for
#: the path (404; a trailing slash is another path), or none for the method (405). werkzeug's
#: wording, which the gunicorn transport answered first.
ROUTE_ERRORS = {
    404: (
        "NotFound",
        "The requested URL was not found on the server. If you entered the URL manually please check your "
        "spelling and try again.",
    ),
    405: ("MethodNotAllowed", "The method is not allowed for the requested URL."),
}


def http_error_answer(status: int, error: str | None = None, message: str | None = None) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of an HTTP error a transport's framework raises, above all
    its router's 404 and 405: ``{"error": "NotFound", "message": ...}`` in `ROUTE_ERRORS`' words,
    whichever framework raised it.

    Args:
        status: the framework's status.
        error, message: the framework's name and message for the error, used only for a status
            without words in `ROUTE_ERRORS` (none that the routes of this package raise); the
            status' phrase when None.
    """
    if status in ROUTE_ERRORS:
        error, message = ROUTE_ERRORS[status]
    else:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        error, message = error or phrase.replace(" ", ""), message or phrase
    return status, codecs.JSON, json.dumps({"error": error, "message": message}).encode()


def internal_error_answer(exc: BaseException) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of an unexpected exception (the policy's own, or a bug of
    the server): 500 ``{"error": "InternalServerError", "message": "<type>: <message>"}``. The
    transport logs the traceback and keeps serving."""
    body = {"error": "InternalServerError", "message": f"{type(exc).__name__}: {exc}"}
    return 500, codecs.JSON, json.dumps(body).encode()


@dataclass
class Job:
    """One forward pass a request needs: validated observations for one module, one set of options.

    Attributes:
        module_id: the module (resolved: never None).
        observations: the batch, in the structure of the module's observation space (arrays,
            batch first, the space's dtype; see `observation_batch`).
        size: observations in the batch.
        explore: sample instead of the greedy action.
        outputs: extra outputs (`policy.OPTIONAL_OUTPUTS`).
        state: RNN state-ins, batch first, or None for the initial state.
        positions: each observation's place in the response.
    """

    module_id: str
    observations: Any
    size: int
    explore: bool
    outputs: tuple[str, ...]
    state: Any
    positions: list[int]

    @property
    def key(self) -> tuple[Any, ...]:
        """Jobs with equal keys can run as one forward pass (`compute_jobs`)."""
        return self.module_id, self.explore, self.outputs, self.state is None


def read_invocation(
    policy: Policy, settings: ServingSettings, headers: Any, body: bytes
) -> tuple[str, codecs.Decoded, list[Job]]:
    """Parse and validate a request: the response type, the decoded body and its forward passes.

    Args:
        policy: the loaded policy.
        settings: payload and record limits, default Accept.
        headers: the request headers (a case-insensitive mapping with ``get``).
        body: the whole body (read with `read_body` or `BodyCollector`).

    Raises:
        RequestError: 413 over the payload limit or over ``settings.max_records`` records
            (checked before any observation is validated), 415/406 for content types, 400 for
            bodies, observations or states the policy cannot take.
    """
    if len(body) > settings.max_payload_bytes:
        collector = BodyCollector(settings, len(body))
        collector.body()
    content_type = _content_type(headers.get("Content-Type"))
    accept = _accept(headers.get("Accept"), settings.default_accept or content_type)
    header_options = codecs.parse_custom_attributes(headers.get(codecs.CUSTOM_ATTRIBUTES))
    decoded = codecs.decode(body, content_type, header_options)
    _check_records(decoded, settings)
    jobs = plan(policy, decoded)
    _check_records(decoded, settings)  # arrays (.npy) are counted once their shape is checked
    return accept, decoded, jobs


def _check_records(decoded: codecs.Decoded, settings: ServingSettings) -> None:
    if settings.max_records and decoded.count > settings.max_records:
        raise RequestError(
            f"request has {decoded.count} records, more than {names.MAX_RECORDS_ENV}={settings.max_records} allows",
            status=413,
            expected=f"at most {settings.max_records} records (observations, lines or rows) per request",
        )


def write_invocation(accept: str, decoded: codecs.Decoded, jobs: list[Job], answers: list[Any]) -> bytes:
    """The response body from each job's answer (`compute_jobs` or `compute_jobs_apart`, same order
    as `jobs`).

    Raises:
        Exception: the first answer that is one (in request order): a `RequestError`, or the
            policy's own exception (`compute_jobs_apart`); or a 406 for an ``agents`` request
            that asks for anything but JSON.
    """
    if len(jobs) == 1 and decoded.agents is None and not isinstance(answers[0], Exception):
        columns = answers[0]
        body = None
        if accept == codecs.JSON and not decoded.legacy and len(columns) == 1:  # ``{"action": a}`` per record
            ((name, column),) = columns.items()
            body = codecs.encode_predictions(name, column)
        elif accept == codecs.NPY:  # the actions alone
            body = codecs.encode_npy_actions(columns["action"])
        if body is not None:
            return body
    results: list[dict[str, Any]] = [{}] * decoded.count
    for job, columns in zip(jobs, answers):
        if isinstance(columns, Exception):
            raise columns
        names = list(columns)
        values = [_per_record(columns[name], job.size) for name in names]
        if len(names) == 1:  # the common answer, ``{"action": a}``: a fifth of dict(zip()) per record
            name = names[0]
            rows = [{name: value} for value in values[0]]
        else:
            rows = [dict(zip(names, row)) for row in zip(*values)]
        if len(jobs) == 1:  # one job answers every record, in order
            results = rows
            break
        for position, row in zip(job.positions, rows):
            results[position] = row
    return codecs.encode(results, accept, decoded)


def plan(policy: Policy, decoded: codecs.Decoded) -> list[Job]:
    """The forward passes of a decoded request: each group's observations validated against its
    module's observation space and stacked into one batch.

    Raises:
        RequestError: 400 for observations or states the module's spaces do not hold, an unknown
            module id.
    """
    jobs: list[Job] = []
    groups = decoded.groups if decoded.agents is None else _agent_groups(policy, decoded)
    for group in groups:
        pipeline = policy.pipeline(group.options.module_id)
        observations = group.observations
        if isinstance(observations, np.ndarray):
            observations = _array_batch(observations, pipeline.observation_space, group.field)
            group.positions = list(range(len(observations)))
            decoded.count = len(observations)
        if group.field == "agents":  # already validated one by one, with the agent's field name
            batch = tree.map_structure(lambda *xs: np.concatenate(xs), *observations)
        else:
            batch = observation_batch(observations, pipeline.observation_space, group.field)
        state = None
        if pipeline.module.is_stateful():
            field = "state" if group.field == "observation" else "states"
            state = state_batch(group.states, pipeline.module.get_initial_state(), field)
        options = group.options
        jobs.append(
            Job(
                pipeline.module_id,
                batch,
                len(group.positions),
                options.explore,
                options.outputs,
                state,
                group.positions,
            )
        )
    return jobs


def compute_jobs(policy: Policy, jobs: list[Job]) -> list[dict[str, Any] | RequestError]:
    """Run jobs, those with equal `Job.key` (module, options, state given or not) as one forward
    pass over their concatenated observations, and give each job its rows back.

    Every connector and RLlib's action step work row by row (greedy actions, frozen filters,
    unsquash/clip), so a row's answer does not depend on the rows it is batched with. Used per
    request by the gunicorn transport and across concurrent requests by Ray Serve's ``@serve.batch``.

    Returns:
        One entry per job, in order: `Policy.compute`'s columns for the job's rows (batch-first
        arrays), or the `RequestError` that job raised (e.g. ``vf_preds`` of a module without a
        value function). When a merged pass raises one, its jobs are retried one by one so each
        gets its own answer.
    """
    if len(jobs) == 1:  # one request's one group: nothing to merge
        try:
            return [_run(policy, jobs[0])]
        except RequestError as exc:
            return [exc]
    by_key: dict[tuple[Any, ...], list[int]] = {}
    for index, job in enumerate(jobs):
        by_key.setdefault(job.key, []).append(index)
    answers: list[Any] = [None] * len(jobs)
    for indices in by_key.values():
        members = [jobs[i] for i in indices]
        if len(members) > 1:
            try:
                merged = _run(policy, _concatenate(members))
            except RequestError:
                pass
            else:
                start = 0
                for index, job in zip(indices, members):
                    stop = start + job.size
                    answers[index] = {
                        name: tree.map_structure(lambda x, a=start, b=stop: x[a:b], value)
                        for name, value in merged.items()
                    }
                    start = stop
                continue
        for index, job in zip(indices, members):
            try:
                answers[index] = _run(policy, job)
            except RequestError as exc:
                answers[index] = exc
    return answers


def compute_jobs_apart(policy: Policy, jobs: list[Job]) -> list[dict[str, Any] | Exception]:
    """`compute_jobs` for the jobs of several requests at once (Ray Serve's ``@serve.batch``), where
    an unexpected exception (the policy's own, not a `RequestError`) must fail only the job that
    causes it, as it would alone: then each job is run alone and gets its own answer or exception.

    The gunicorn transport's `batching.GreenBatcher` does the same for its batches.

    Returns:
        One entry per job, in order: as `compute_jobs`, or the exception the job raised alone
        (`write_invocation` raises it).
    """
    try:
        return compute_jobs(policy, jobs)
    except Exception as exc:
        if len(jobs) == 1:
            return [exc]
    return [compute_jobs_apart(policy, [job])[0] for job in jobs]


def _run(policy: Policy, job: Job) -> dict[str, Any]:
    return policy.compute(
        job.observations, module_id=job.module_id, explore=job.explore, outputs=job.outputs, state=job.state
    )


def _concatenate(jobs: list[Job]) -> Job:
    def concat(*parts: Any) -> Any:
        return tree.map_structure(lambda *xs: np.concatenate(xs), *parts)

    first = jobs[0]
    state = None if first.state is None else concat(*(job.state for job in jobs))
    size = sum(job.size for job in jobs)
    return Job(
        first.module_id, concat(*(job.observations for job in jobs)), size, first.explore, first.outputs, state, []
    )


def _agent_groups(policy: Policy, decoded: codecs.Decoded) -> list[codecs.Group]:
    """Split an ``agents`` request into one group per module (``module_id`` if the request names
    one, else the checkpoint's ``policy_mapping_fn``), each observation validated under the field
    ``agents.<agent_id>``."""
    (group,) = decoded.groups
    by_module: dict[str, codecs.Group] = {}
    for position, (agent_id, observation) in enumerate(zip(decoded.agents or [], group.observations)):
        module_id = group.options.module_id or policy.module_for_agent(agent_id)
        pipeline = policy.pipeline(module_id)
        try:
            single = observation_batch([observation], pipeline.observation_space, "observation")
        except RequestError as exc:
            exc.field = f"agents.{agent_id}" + (exc.field or "")[len("observation") :]
            raise
        target = by_module.get(module_id)
        if target is None:
            options = codecs.Options(module_id, group.options.explore, group.options.outputs)
            target = by_module[module_id] = codecs.Group([], "agents", options, [], [])
        target.observations.append(single)
        target.positions.append(position)
        target.states.append(group.states[position] if group.states else None)
    return list(by_module.values())


def _per_record(value: Any, count: int) -> list[Any]:
    """A batch-first column (an array, or a dict/tuple of arrays for structured spaces) as one
    JSON-ready value per record; one ``tolist`` per array, not per record."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    lists = tree.map_structure(lambda x: np.asarray(x).tolist(), value)
    return [tree.map_structure_up_to(value, lambda column, i=i: column[i], lists) for i in range(count)]


def _array_batch(array: np.ndarray, space: Any, field: str) -> np.ndarray:
    """CSV rows or an NPY array as a batch of observations of a Box `space`."""
    shape = getattr(space, "shape", None)
    if shape is None or space.__class__.__name__ != "Box":
        raise RequestError(
            f"{field}s of numbers cannot hold observations of {space}",
            field="Content-Type",
            expected="application/json or application/jsonlines for this observation space",
        )
    if field == "row":
        size = int(np.prod(shape))
        if array.ndim != 2 or array.shape[1] != size:
            raise RequestError(
                f"rows have {array.shape[-1]} values, the policy expects {size}",
                field="row",
                expected=f"{size} comma-separated numbers per row ({describe(space)}, flattened)",
            )
        return array.reshape(len(array), *shape)
    if array.shape == shape:
        return array[None]
    if array.shape[1:] != shape or array.ndim == 0 or len(array) == 0:
        raise RequestError(
            f"array has shape {array.shape}, the policy expects {shape} or (batch, *{shape})",
            field="array",
            expected=f"an array of shape (batch, {', '.join(map(str, shape))}) ({space.dtype})",
        )
    return array


def _content_type(header: str | None) -> str:
    mimetype = codecs.media_type(header) or codecs.JSON  # missing Content-Type means JSON (SageMaker contract)
    if mimetype not in codecs.SUPPORTED:
        raise RequestError(
            f"unsupported Content-Type {header!r}",
            status=415,
            field="Content-Type",
            expected=" or ".join(codecs.SUPPORTED),
        )
    return mimetype


def _accept(header: str | None, default: str) -> str:
    """The response type: the first acceptable supported type in `header` (q > 0, listed order),
    `default` for a missing header or a wildcard.

    Raises:
        RequestError: 406 when nothing in `header` is supported.
    """
    if not header or not header.strip():
        return default
    for item in header.split(","):
        parts = item.split(";")
        mimetype = codecs.media_type(parts[0])
        quality = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if mimetype in codecs.SUPPORTED:
            return mimetype
        if mimetype in ("*/*", "application/*", "text/*"):
            return default
    raise RequestError(
        f"cannot answer in {header!r}", status=406, field="Accept", expected=" or ".join(codecs.SUPPORTED)
    )
