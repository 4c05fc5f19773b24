"""gunicorn under `serve`, on a model exported by `train` (ONNX Runtime imported in the master):
workers are recycled after SAGEMAKER_RAY_RL_MAX_REQUESTS requests without failing a request, a
recycled worker is gone once replaced, SIGTERM stops the server without waiting for gunicorn's
graceful timeout (not for workers hung in their exit, nor for idle keep-alive connections), and no
control socket is opened."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from pathlib import Path

import pytest
import requests
from integration.conftest import ServeProcess

from sagemaker_ray_rl.serving.gunicorn_app import GRACEFUL_TIMEOUT_S

pytestmark = pytest.mark.integration

OBSERVATION = [0.01, -0.02, 0.03, 0.04]


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of `pid`, from ``/proc``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.add(int(stat.parent.name))
    return found


def test_workers_are_recycled_without_a_failed_request_and_leave_at_once(trained_job, tmp_path_factory):
    # Before workers left without ONNX Runtime's teardown, a recycled worker hung in its exit
    # until its heartbeat timeout, and requests waited on it (read timeouts).
    policy = trained_job.base / "model"
    assert (policy / "onnx").is_dir()
    home = tmp_path_factory.mktemp("home")
    runtime = tmp_path_factory.mktemp("runtime")
    server = ServeProcess(
        policy,
        tmp_path_factory.mktemp("serve"),
        SAGEMAKER_RAY_RL_MAX_REQUESTS="20",
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        HOME=str(home),
        XDG_RUNTIME_DIR=str(runtime),
    )
    try:
        server.wait_until_healthy()
        url = f"{server.url}/invocations"
        statuses = []
        # Paced over ~8 s: a worker past its limit stops taking connections within about a second.
        with requests.Session() as session:  # keep-alive: the recycled worker's last answer closes it
            for _ in range(100):
                statuses.append(session.post(url, json={"observation": OBSERVATION}, timeout=30).status_code)
                time.sleep(0.05)
        for _ in range(50):  # a new connection each
            statuses.append(requests.post(url, json={"observation": OBSERVATION}, timeout=30).status_code)
            time.sleep(0.05)
        assert statuses == [200] * 150
        # Each recycled worker exits by itself once its last request is answered: the master is
        # left with its 2 current workers, not with workers hung in their exit.
        deadline = time.monotonic() + 10
        while len(children(server.proc.pid)) != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(children(server.proc.pid)) == 2, children(server.proc.pid)
    finally:
        start = time.monotonic()
        code = server.stop()
        stop_s = time.monotonic() - start
    log = server.log.read_text()
    assert "greedy answers from onnx" in log, log[-3000:]
    assert code == 0, log[-3000:]
    # The workers left on SIGTERM; gunicorn did not have to kill them at its graceful timeout.
    assert stop_s < GRACEFUL_TIMEOUT_S, (stop_s, log[-3000:])
    # 150 requests over 2 workers recycled every 20-22 requests.
    assert log.count("Autorestarting worker after current request") >= 4, log[-3000:]
    assert len(re.findall(r"Booting worker with pid", log)) >= 2 + 3, log[-3000:]
    assert "Control socket" not in log
    assert not list(home.rglob("*.ctl")) and not list(runtime.rglob("*.ctl"))


def test_sigterm_closes_idle_keep_alive_connections_instead_of_waiting_for_them(trained_job, tmp_path_factory):
    """A client that keeps its connection open between requests (as SageMaker's front end does)
    and one that connected and sent nothing yet do not hold the stop until the graceful timeout;
    the answer in flight on a third connection is still given."""
    server = ServeProcess(trained_job.base / "model", tmp_path_factory.mktemp("serve"))
    body = json.dumps({"observation": OBSERVATION})
    try:
        server.wait_until_healthy()
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        idle.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        first = idle.getresponse()
        assert first.status == 200 and first.getheader("Connection", "keep-alive").lower() != "close"
        first.read()  # the connection stays open, waiting for its next request
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=30)  # accepted, no request
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        slow.sendall(f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n{body[:5]}".encode())  # fmt: skip
        time.sleep(0.5)  # the worker has read the head: this request is in flight
    finally:
        start = time.monotonic()
        server.proc.terminate()
    slow.sendall(body[5:].encode())
    answer = b""
    while chunk := slow.recv(65536):  # until the server closes the connection after its answer
        answer += chunk
    answer = answer.decode()
    code = server.proc.wait(timeout=30)
    stop_s = time.monotonic() - start
    log = server.log.read_text()
    assert answer.startswith("HTTP/1.1 200"), (answer, log[-3000:])
    head, payload = answer.split("\r\n\r\n", 1)  # the whole answer, then the server closed the connection
    assert f"content-length: {len(payload)}" in head.lower(), answer
    assert json.loads(payload)["predictions"][0]["action"] in (0, 1), answer
    assert code == 0, log[-3000:]
    assert stop_s < GRACEFUL_TIMEOUT_S / 2, (stop_s, log[-3000:])
    assert "Worker graceful timeout" not in log
    assert silent.recv(1) == b"" and idle.sock.recv(1) == b""  # both were closed by the server
    for connection in (idle, silent, slow):
        connection.close()
