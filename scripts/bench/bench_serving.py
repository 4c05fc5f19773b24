"""Benchmark: `serve` over HTTP vs the same RLModule's forward_inference in-process, side by side.

    .venv/bin/python scripts/bench/bench_serving.py --model DIR [--image TAG] [--backend gunicorn|ray-serve|both]
    PYTHONPATH=src .venv/bin/python scripts/bench/bench_serving.py --model DIR --acceptance
    PYTHONPATH=src .venv/bin/python scripts/bench/bench_serving.py --model DIR --request-path

DIR is an exported checkpoint (scripts/demo.sh leaves one in build/demo/job/model; any
``algo.save()`` directory works). Measures, in one run on the same cores:
- in-process, one torch thread: ``forward_inference`` and `Policy.compute` (connectors, forward,
  greedy action, unsquash) on 1 and on 1,024 observations, with the server's Python (inside the
  image with ``--image``);
- per backend: cold start (``serve`` started -> first 200 on /ping), then ``POST /invocations``
  with one observation at concurrency 1, 8 and 32 (p50/p99 latency, requests/s) and with 1,024
  observations at concurrency 1.
With ``--acceptance`` (this venv only; DIR must have an ``onnx/`` export) the run is instead, side
by side on the same model: in-process `Policy.compute` on torch and on ONNX Runtime, then
gunicorn ``serve`` with ``SAGEMAKER_RAY_RL_INFERENCE=torch`` and ``=onnx``, then the same
gunicorn settings answering a constant (`constant_server.py`: flask, and ``--bare`` WSGI), each
with the same loads (and a 1,024-observation ``application/x-npy`` body besides the JSON one); it
ends with the acceptance table (ONNX path: p50 at concurrency 1, absolute and as a ratio to the
flask constant server's in the same run; requests/s at 8 and 32 against the flask constant
server's; the 1,024-observation request, JSON and NPY, against in-process ONNX Runtime plus the
constant server's round trip for the same body).
The server runs from this venv (``serve``), or from the image with ``--image`` (``docker run
--network host``). Clients (``--client``): wrk (C, one thread, HTTP/1.1
keep-alive connections: ``apt-get install wrk``; the default where ``wrk`` is on the PATH) or
keep-alive ``http.client`` connections, one per client thread, spread over two client processes
(several times wrk's CPU per request, taken from the server's cores). Either shares the machine's cores with the
server, as the in-process loop does not. Prints the load average before and after. Results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for devtools

from devtools import docker_cli, wait_for_ping  # noqa: E402

BIN = Path(sys.executable).parent
JSON = "application/json"
NPY = "application/x-npy"
#: The concurrency-1 target's anchor in the issue: 0.25 ms when the gunicorn + flask constant
#: server answered in 0.18 ms on the machine it was measured on, i.e. 0.25 / 0.18 of the constant
#: server's p50 measured in the same run (the machine-independent reading of the same target).
C1_TARGET_S = 0.25e-3
C1_ANCHOR_CONSTANT_S = 0.18e-3


class Client:
    """One keep-alive connection; reconnects when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = JSON) -> int:
        headers = {"Content-Type": content_type} if body is not None else {}
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return response.status
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _client_process(port: int, body: bytes, threads: int, seconds: float, queue, content_type: str) -> None:
    import threading

    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        client = Client(port)
        while time.monotonic() < stop:
            start = time.perf_counter()
            status = client.request("POST", "/invocations", body, content_type)
            latencies[i].append(time.perf_counter() - start)
            assert status == 200, status

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put([x for per in latencies for x in per])


def load(
    port: int, body: bytes, concurrency: int, seconds: float, content_type: str = JSON
) -> tuple[np.ndarray, float]:
    """(latencies in s, requests/s) of `concurrency` keep-alive clients over `seconds`, posting
    `body` as `content_type`."""
    processes = min(concurrency, 2)
    queue = mp.get_context("fork").Queue()
    procs = [
        mp.get_context("fork").Process(
            target=_client_process, args=(port, body, concurrency // processes, seconds, queue, content_type)
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    latencies = [x for _ in procs for x in queue.get()]
    for p in procs:
        p.join()
    return np.array(latencies), len(latencies) / seconds


_WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
"""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def load_wrk(
    port: int, body: bytes, concurrency: int, seconds: float, content_type: str = JSON
) -> tuple[np.ndarray, float]:
    """(latencies in s at p50 and p99, requests/s) from ``wrk -t 1 -c concurrency --latency``
    (HTTP/1.1 keep-alive connections, one thread) posting `body` as `content_type`; every request
    must answer 2xx."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.json").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(_WRK_SCRIPT)
        cmd = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(concurrency),
            "-d",
            f"{seconds}s",
            "--timeout",
            "60s",
            "--latency",
            "-s",
            str(Path(tmp) / "post.lua"),
            f"http://127.0.0.1:{port}/invocations",
        ]
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "BENCH_BODY": str(Path(tmp) / "body.json"), "BENCH_CONTENT_TYPE": content_type},
        ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk: errors or non-2xx answers:\n{out}")
    quantiles = {q: float(v) * _UNITS[u] for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return np.array([quantiles["50"], quantiles["99"]]), float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def sequential(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def row(name: str, seconds: np.ndarray, rate: float | None = None) -> str:
    """A table row: p50, p99 (of `seconds`; wrk's own p50 and p99 when it has two), rate."""
    ms = seconds * 1000
    rate = rate if rate is not None else len(seconds) / seconds.sum()
    p50, p99 = (ms[0], ms[1]) if len(ms) == 2 else (np.percentile(ms, 50), np.percentile(ms, 99))
    return f"| {name} | {p50:.3f} ms | {p99:.3f} ms | {rate:,.0f} /s |"


def start_server(
    args, backend: str, port: int, env_extra: dict[str, str] | None = None, command: list[str] | None = None
):
    """Start `serve` (or `command`, from this venv) on `port`; returns a function that stops it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(SAGEMAKER_BIND_TO_PORT=str(port), SAGEMAKER_RAY_RL_SERVER=backend, RAY_USAGE_STATS_ENABLED="0")
    extra = dict(item.split("=", 1) for item in args.server_env)
    extra.update(env_extra or {})
    env.update(extra)
    if args.image:
        cmd = [
            docker_cli(),
            "run",
            "-d",
            "--rm",
            "--network",
            "host",
            "--name",
            f"bench-serving-{port}",
            "-e",
            f"SAGEMAKER_BIND_TO_PORT={port}",
            "-e",
            f"SAGEMAKER_RAY_RL_SERVER={backend}",
            *(f"-e{key}={value}" for key, value in extra.items()),
            "-v",
            f"{args.model}:/opt/ml/model:ro",
            args.image,
            "serve",
        ]
        container = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        return lambda: subprocess.run([docker_cli(), "stop", "-t", "30", container], capture_output=True)
    env["SM_MODEL_DIR"] = str(args.model)
    proc = subprocess.Popen(
        command or [str(BIN / "serve")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=60)

    return stop


def bench_backend(
    args,
    backend: str,
    obs: list,
    port: int,
    label: str | None = None,
    env_extra: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> tuple[list[str], dict[str, float]]:
    """Table rows of one server under the loads, and its figures (``c1_p50`` in s, ``c8_rate``,
    ``c32_rate`` in requests/s, ``b1024_p50`` in s)."""
    label = label or backend
    lines = []
    figures: dict[str, float] = {}
    start = time.monotonic()
    stop = start_server(args, backend, port, env_extra, command)
    try:
        try:
            wait_for_ping(f"http://127.0.0.1:{port}", 180, interval=0.02)
        except TimeoutError as error:
            raise SystemExit(f"{label}: {error}") from None
        lines.append(f"| {label}: cold start, started -> first 200 on `/ping` | {time.monotonic() - start:.2f} s | | |")
        single = json.dumps({"observation": obs}).encode()
        batch = json.dumps({"instances": [obs] * 1024}).encode()
        client = load_wrk if args.client == "wrk" else load
        client(port, single, 8, 1)  # warm up
        for concurrency in (1, 8, 32):
            latencies, rate = client(port, single, concurrency, args.seconds)
            lines.append(row(f"{label}: HTTP, 1 obs, concurrency {concurrency}", latencies, rate))
            figures[f"c{concurrency}_rate"] = rate
            if concurrency == 1:
                figures["c1_p50"] = p50(latencies)
        latencies, rate = client(port, batch, 1, args.seconds)
        lines.append(row(f"{label}: HTTP, 1,024 obs, concurrency 1", latencies, rate))
        figures["b1024_p50"] = p50(latencies)
    finally:
        stop()
    return lines, figures


def p50(seconds: np.ndarray) -> float:
    """The median of `seconds` (wrk's own p50 when it gave two quantiles)."""
    return float(seconds[0]) if len(seconds) == 2 else float(np.percentile(seconds, 50))


def in_process(model: Path, onnx: bool = False) -> tuple[list[str], list[float], dict[str, float]]:
    """Table rows of the in-process calls (one torch thread, sequential), the observation the
    HTTP requests send (the observation space's sample with seed 0, clipped to [-1, 1]) and the
    p50s in seconds by name (``onnx_1``, ``onnx_1024`` with `onnx`: `Policy.compute` answered by
    ONNX Runtime, one intra-op thread)."""
    import torch

    torch.set_num_threads(1)
    from ray.rllib.core.columns import Columns

    from sagemaker_ray_rl.inference.policy import Policy

    policy = Policy.load(model)
    pipeline = policy.pipeline(None)
    pipeline.observation_space.seed(0)
    obs_array = np.clip(np.asarray(pipeline.observation_space.sample(), dtype=np.float32), -1, 1)
    one = torch.from_numpy(obs_array[None])
    many = torch.from_numpy(np.repeat(obs_array[None], 1024, axis=0))
    with torch.inference_mode():
        fwd1 = sequential(lambda: pipeline.module.forward_inference({Columns.OBS: one}), 3000)
        fwd1024 = sequential(lambda: pipeline.module.forward_inference({Columns.OBS: many}), 200)
    lines = [
        f"spaces {pipeline.observation_space} -> {pipeline.action_space}",
        row("in-process `forward_inference`, 1 obs", fwd1),
        row("in-process `forward_inference`, 1,024 obs", fwd1024),
        row("in-process `Policy.compute`, 1 obs", sequential(lambda: policy.compute(one.numpy()), 3000)),
        row("in-process `Policy.compute`, 1,024 obs", sequential(lambda: policy.compute(many.numpy()), 200)),
    ]
    figures: dict[str, float] = {}
    if onnx:
        onnx_policy = Policy.load(model, engine="onnx")
        for name, batch, n in (("1", one.numpy(), 3000), ("1,024", many.numpy(), 200)):
            onnx_policy.compute(batch)  # the session's first run
            seconds = sequential(lambda b=batch: onnx_policy.compute(b), n)
            figures[f"onnx_{name.replace(',', '')}"] = float(np.percentile(seconds, 50))
            lines.append(row(f"in-process `Policy.compute` on ONNX Runtime, {name} obs", seconds))
    return lines, obs_array.tolist(), figures


def in_process_in_image(image: str, model: Path) -> tuple[list[str], list[float], dict[str, float]]:
    """`in_process` run inside the image (its Python build and libraries: the server's), so the
    ratio compares like with like (Debian's Python in the image runs this faster than a pyenv
    build on the host: docs/benchmarks.md)."""
    cmd = [
        docker_cli(),
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{model}:/opt/ml/model:ro",
        "-v",
        f"{Path(__file__).resolve().parents[1]}:/opt/scripts:ro",  # this script and devtools.py
        "--entrypoint",
        "python",
        image,
        "/opt/scripts/bench/bench_serving.py",
        "--in-process-only",
        "--model",
        "/opt/ml/model",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    answer = json.loads(out.strip().splitlines()[-1])
    return answer["lines"], answer["obs"], {}


def _step_times(policy, settings, apps, body: bytes, n: int) -> list[str]:
    """`request_path`'s cells for one body: p50 of `n` sequential calls of each step."""
    from werkzeug.datastructures import EnvironHeaders
    from werkzeug.test import EnvironBuilder

    from sagemaker_ray_rl.serving import protocol

    headers = EnvironHeaders({"CONTENT_TYPE": "application/json"})
    accept, decoded, jobs = protocol.read_invocation(policy, settings, headers, body)
    answers = protocol.compute_jobs(policy, jobs)
    environ = EnvironBuilder(
        path="/invocations", method="POST", data=body, content_type="application/json"
    ).get_environ()

    def wsgi(wsgi_app):
        return lambda: b"".join(wsgi_app({**environ, "wsgi.input": io.BytesIO(body)}, lambda *a: None))

    calls = [
        lambda: protocol.read_invocation(policy, settings, headers, body),
        lambda: protocol.compute_jobs(policy, jobs),
        lambda: protocol.write_invocation(accept, decoded, jobs, answers),
        lambda: protocol.answer_invocation(policy, settings, headers, body),
        *(wsgi(a) for a in apps),
    ]
    cells = []
    for call in calls:
        for _ in range(20):
            call()
        cells.append(f"{np.percentile(sequential(call, n), 50) * 1e6:,.1f} us")
    return cells


def request_path(model: Path) -> None:
    """``--request-path``: where one request's time goes in this process (no HTTP), p50 of
    sequential calls, for 1 and 1,024 observations on the torch and the ONNX Runtime path:
    `protocol.read_invocation` (decode, validate, stack), `compute_jobs` (the forward pass),
    `write_invocation` (rows, encode), the whole `answer_invocation`, and the WSGI app as gunicorn
    calls it: the front (`flask_app.InvocationsFront`), flask's own route behind it, and the flask
    constant-answer app (`constant_server.py`)."""
    import torch

    torch.set_num_threads(1)
    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving.flask_app import create_app

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from constant_server import flask_app as constant_app

    settings = ServingSettings()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "| path | obs | read_invocation | compute_jobs | write_invocation | answer_invocation | WSGI: front | WSGI: flask route | WSGI: flask constant |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for backend in ("torch", "onnx"):
        policy = Policy.load(model, engine=backend)
        space = policy.pipeline(None).observation_space
        space.seed(0)
        obs = np.clip(np.asarray(space.sample(), dtype=np.float32), -1, 1).tolist()
        app = create_app(policy, settings)
        apps = (app, getattr(app.wsgi_app, "wsgi_app", app), constant_app())  # before the front: flask twice
        for count, n in ((1, 3000), (1024, 200)):
            body = json.dumps({"observation": obs} if count == 1 else {"instances": [obs] * count}).encode()
            cells = _step_times(policy, settings, apps, body, n)
            print(f"| {backend} | {count:,} | {' | '.join(cells)} |")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def bench_interleaved(args, servers, obs: list, in_process_1024=None) -> tuple[list[str], dict[str, dict[str, float]]]:
    """`servers` (label, extra environment, command) started one after the other (cold start
    each) and kept running, then each load run on each server in turn, ``args.rounds`` times (the
    order rotated every round), so that a load from other processes on the machine falls on all of
    them alike. Rows give the median over rounds of each run's p50, p99 and rate. `in_process_1024`
    (a call answering the 1,024-observation batch in this process) is timed in the same rounds as
    the 1,024-observation loads, under the label ``in-process``."""
    stops, ports, lines = [], {}, []
    try:
        for i, (label, env_extra, command) in enumerate(servers):
            port = args.port + i
            start = time.monotonic()
            stops.append(start_server(args, "gunicorn", port, env_extra, command))
            try:
                wait_for_ping(f"http://127.0.0.1:{port}", 180, interval=0.02)
            except TimeoutError as error:
                raise SystemExit(f"{label}: {error}") from None
            ports[label] = port
            lines.append(
                f"| {label}: cold start, started -> first 200 on `/ping` | {time.monotonic() - start:.2f} s | | |"
            )
        single = json.dumps({"observation": obs}).encode()
        batch = json.dumps({"instances": [obs] * 1024}).encode()
        client = load_wrk if args.client == "wrk" else load
        for port in ports.values():
            client(port, single, 8, 1)  # warm up
        npy = io.BytesIO()
        np.save(npy, np.repeat(np.asarray([obs], dtype=np.float32), 1024, axis=0), allow_pickle=False)
        loads = [(f"1 obs, concurrency {c}", f"c{c}", single, JSON, c) for c in (1, 8, 32)]
        loads.append(("1,024 obs, concurrency 1", "b1024", batch, JSON, 1))
        loads.append(("1,024 obs as `application/x-npy`, concurrency 1", "n1024", npy.getvalue(), NPY, 1))
        figures: dict[str, dict[str, float]] = {label: {} for label in ports}
        labels = list(ports)
        for name, key, body, content_type, concurrency in loads:
            here = key in ("b1024", "n1024") and in_process_1024 is not None
            names = [*labels, "in-process"] if here else labels
            runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in names}
            for r in range(args.rounds):
                for label in names[r % len(names) :] + names[: r % len(names)]:
                    if label == "in-process":
                        stop = time.monotonic() + args.seconds
                        seconds = []
                        while time.monotonic() < stop:
                            seconds.extend(sequential(in_process_1024, 5))
                        latencies, rate = np.array(seconds), len(seconds) / sum(seconds)
                    else:
                        latencies, rate = client(ports[label], body, concurrency, args.seconds, content_type)
                    p99 = float(latencies[1]) if len(latencies) == 2 else float(np.percentile(latencies, 99))
                    runs[label].append((p50(latencies), p99, rate))
            for label in names:
                med = np.median(np.array(runs[label]), axis=0)
                what = "`Policy.compute` on ONNX Runtime, same rounds" if label == "in-process" else "HTTP"
                lines.append(row(f"{label}: {what}, {name}", med[:2], float(med[2])))
                figures.setdefault(label, {})
                figures[label][f"{key}_p50"], figures[label][f"{key}_rate"] = float(med[0]), float(med[2])
        return lines, figures
    finally:
        for stop in stops:
            stop()


def acceptance(args) -> None:
    """The side-by-side run of ``--acceptance`` (module docstring) and its targets, printed."""
    if args.image:
        raise SystemExit("--acceptance runs from this venv; drop --image")
    load_at_start = os.getloadavg()
    rows, obs, _ = in_process(args.model, onnx=True)
    lines = [
        f"model: {args.model}, {rows[0]}, client {args.client}, {args.rounds} x {args.seconds} s per load and server, servers and in-process "
        f"calls in this venv ({sys.executable})"
        + (f", server environment {' '.join(args.server_env)}" if args.server_env else ""),
        f"load average at the start: {' '.join(f'{x:.2f}' for x in load_at_start)}",
        "| what | p50 | p99 | rate |",
        "| --- | --- | --- | --- |",
        *rows[1:],
    ]
    constant = [sys.executable, str(Path(__file__).resolve().parent / "constant_server.py")]
    servers = (
        ("gunicorn, torch", {"SAGEMAKER_RAY_RL_INFERENCE": "torch"}, None),
        ("gunicorn, ONNX Runtime", {"SAGEMAKER_RAY_RL_INFERENCE": "onnx"}, None),
        ("gunicorn + flask, constant answer", {}, constant),
        ("gunicorn, bare WSGI, constant answer", {}, [*constant, "--bare"]),
    )
    from sagemaker_ray_rl.inference.policy import Policy

    onnx_policy = Policy.load(args.model, engine="onnx")
    many = np.repeat(np.asarray([obs], dtype=np.float32), 1024, axis=0)
    server_lines, figures = bench_interleaved(args, servers, obs, lambda: onnx_policy.compute(many))
    lines.extend(server_lines)
    lines.append(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    onnx, const = figures["gunicorn, ONNX Runtime"], figures["gunicorn + flask, constant answer"]
    c1_ratio = onnx["c1_p50"] / const["c1_p50"]
    lines += [
        "",
        "| target (ONNX path) | figure | met |",
        "| --- | --- | --- |",
        f"| 1 obs p50 at concurrency 1 <= {C1_TARGET_S * 1e3:.2f} ms | {onnx['c1_p50'] * 1e3:.3f} ms "
        f"(flask constant {const['c1_p50'] * 1e3:.3f} ms) | {'yes' if onnx['c1_p50'] <= C1_TARGET_S else 'no'} |",
        f"| the same, as measured against: <= {C1_TARGET_S / C1_ANCHOR_CONSTANT_S:.2f} x the flask constant "
        f"server's p50 (the issue's {C1_TARGET_S * 1e3:.2f} ms at its {C1_ANCHOR_CONSTANT_S * 1e3:.2f} ms) | "
        f"{c1_ratio:.2f} x | {'yes' if c1_ratio <= C1_TARGET_S / C1_ANCHOR_CONSTANT_S else 'no'} |",
    ]
    for c in (8, 32):
        share = onnx[f"c{c}_rate"] / const[f"c{c}_rate"]
        lines.append(
            f"| requests/s at concurrency {c} >= 80% of the constant server's | {onnx[f'c{c}_rate']:,.0f} /s vs "
            f"{const[f'c{c}_rate']:,.0f} /s = {share:.0%} | {'yes' if share >= 0.8 else 'no'} |"
        )
    for key, body in (("b1024", "JSON"), ("n1024", "NPY")):
        inproc_1024 = figures["in-process"][f"{key}_p50"]  # timed in the same rounds as the HTTP loads
        budget = 1.2 * (inproc_1024 + const[f"{key}_p50"])
        lines.append(
            f"| 1,024 obs ({body}) <= 1.2 x (in-process ONNX Runtime + constant round trip) | "
            f"{onnx[f'{key}_p50'] * 1e3:.3f} ms vs 1.2 x ({inproc_1024 * 1e3:.3f} + {const[f'{key}_p50'] * 1e3:.3f}) "
            f"= {budget * 1e3:.3f} ms | {'yes' if onnx[f'{key}_p50'] <= budget else 'no'} |"
        )
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("build/demo/job/model"))
    parser.add_argument(
        "--image",
        help="run the image's serve (docker run --network host) and the in-process calls in the image, instead of this venv's",
    )
    parser.add_argument("--backend", choices=("gunicorn", "ray-serve", "both"), default="both")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--acceptance: runs of each load on each server, in turn (medians are reported)",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk where installed)",
    )
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the server, e.g. SAGEMAKER_RAY_RL_MAX_BATCH_SIZE=1 (repeatable)",
    )
    parser.add_argument(
        "--acceptance",
        action="store_true",
        help="in-process torch and ONNX Runtime, gunicorn on each, and the constant-answer servers, with the targets",
    )
    parser.add_argument(
        "--request-path",
        action="store_true",
        help="only the request path's steps timed in this process (no HTTP), torch and ONNX Runtime",
    )
    parser.add_argument("--in-process-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = args.model.resolve()
    if args.in_process_only:
        lines, obs, _ = in_process(args.model)
        print(json.dumps({"lines": lines, "obs": obs}))
        return

    if args.request_path:
        request_path(args.model)
        return
    if args.acceptance:
        acceptance(args)
        return
    load_at_start = os.getloadavg()
    rows, obs, _ = in_process_in_image(args.image, args.model) if args.image else in_process(args.model)
    where = f"image {args.image}" if args.image else f"this venv ({sys.executable})"
    lines = [
        f"model: {args.model}, {rows[0]}, client {args.client}, server and in-process calls in {where}"
        + (f", server environment {' '.join(args.server_env)}" if args.server_env else ""),
        f"load average at the start: {' '.join(f'{x:.2f}' for x in load_at_start)}",
        "| what | p50 | p99 | rate |",
        "| --- | --- | --- | --- |",
        *rows[1:],
    ]
    backends = ("gunicorn", "ray-serve") if args.backend == "both" else (args.backend,)
    for i, backend in enumerate(backends):
        lines.extend(bench_backend(args, backend, obs, args.port + i)[0])
    lines.append(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
