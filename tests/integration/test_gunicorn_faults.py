"""gunicorn under `serve` with slow clients and killed workers, over real HTTP.

- Requests whose 6 MB bodies arrive slowly (64 KB every 0.2 s) do not hold up ``/ping``, on a new
  connection or a keep-alive one, and are answered in full.
- A request whose body stops arriving is answered 408 after ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` and
  its connection closed (gunicorn's own ``timeout`` does not bound it on gevent workers).
- ``kill -9`` of a worker under load fails only requests on that worker's own connections: which
  worker holds a client's connection is read from ``/proc`` (the server-side socket of the
  client's port, and the worker whose file descriptors include it), never guessed. The master
  forks a replacement that serves within 5 s.
- Workers carry a higher ``oom_score_adj`` than the master, so the OOM killer picks a worker.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from integration.conftest import ServeProcess

pytestmark = pytest.mark.integration

OBSERVATION = [0.01, -0.02, 0.03, 0.04]
INVOCATION = json.dumps({"observation": OBSERVATION}).encode()
JSON = {"Content-Type": "application/json"}
SLOW_BODY_BYTES = 6 * 2**20  # SAGEMAKER_MAX_PAYLOAD_IN_MB's default, to the byte
SLOW_CHUNK_BYTES = 64 * 1024
SLOW_PAUSE_S = 0.2


@pytest.fixture(scope="module")
def cartpole(policy_dirs) -> Path:
    return policy_dirs["cartpole"]


@pytest.fixture(scope="module")
def server(cartpole, tmp_path_factory) -> Iterator[ServeProcess]:
    """`serve` with 2 gevent workers and the default 60 s request timeout."""
    process = ServeProcess(cartpole, tmp_path_factory.mktemp("serve"), SAGEMAKER_MODEL_SERVER_WORKERS="2")
    try:
        process.wait_until_healthy(timeout=180)
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.log.read_text()[-3000:]


def padded_body(size: int) -> bytes:
    """A JSON invocation of 100 observations, padded with spaces to exactly `size` bytes."""
    head = b'{"instances": [' + b",".join([json.dumps(OBSERVATION).encode()] * 100)
    return head + b" " * (size - len(head) - 2) + b"]}"


def slow_post(port: int, body: bytes, results: list, *, stop_after: int | None = None) -> None:
    """POST `body` to /invocations in `SLOW_CHUNK_BYTES` pieces, `SLOW_PAUSE_S` apart (only the
    first `stop_after` bytes, then wait for the answer), and append (status, headers, body,
    seconds from the first byte to the answer) to `results`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.monotonic()
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        end = len(body) if stop_after is None else stop_after
        for start in range(0, end, SLOW_CHUNK_BYTES):
            connection.send(body[start : min(start + SLOW_CHUNK_BYTES, end)])
            time.sleep(SLOW_PAUSE_S)
        response = connection.getresponse()
        results.append((response.status, dict(response.getheaders()), response.read(), time.monotonic() - started))
    finally:
        connection.close()


def timed_ping(connection: http.client.HTTPConnection) -> tuple[int, float]:
    started = time.monotonic()
    connection.request("GET", "/ping")
    response = connection.getresponse()
    response.read()
    return response.status, time.monotonic() - started


def workers(server: ServeProcess) -> list[psutil.Process]:
    """gunicorn's workers: the children of the master (the `serve` process)."""
    return psutil.Process(server.proc.pid).children()


def connection_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The pid among `pids` that holds the server side of the loopback TCP connection from
    `client_port` to `server_port` (``/proc/net/tcp``: its socket inode; ``/proc/<pid>/fd``: who
    has it open), or None."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local_port, remote_port) == (server_port, client_port):
            inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def open_owned(server: ServeProcess, within_s: float = 3.0) -> tuple[http.client.HTTPConnection, int | None]:
    """A new keep-alive connection and the worker pid that accepted it (None if none did within
    `within_s`)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.connect()
    client_port = connection.sock.getsockname()[1]
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        owner = connection_owner(server.port, client_port, [p.pid for p in workers(server)])
        if owner is not None:
            return connection, owner
        time.sleep(0.01)
    return connection, None


def test_slow_requests_do_not_hold_up_ping_on_new_or_keep_alive_connections(server):
    body = padded_body(SLOW_BODY_BYTES)
    results: list = []
    senders = [threading.Thread(target=slow_post, args=(server.port, body, results)) for _ in range(2)]
    for sender in senders:
        sender.start()
    keep_alive = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    pings: list[tuple[str, int, float]] = []
    try:
        while any(sender.is_alive() for sender in senders):
            pings.append(("keep-alive", *timed_ping(keep_alive)))
            fresh = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                pings.append(("new", *timed_ping(fresh)))
            finally:
                fresh.close()
            time.sleep(0.1)
    finally:
        keep_alive.close()
        for sender in senders:
            sender.join(timeout=120)
    assert len(results) == 2
    for status, _, answer, seconds in results:
        assert status == 200, answer[:300]
        assert len(json.loads(answer)["predictions"]) == 100
        assert seconds > SLOW_BODY_BYTES / SLOW_CHUNK_BYTES * SLOW_PAUSE_S * 0.9  # truly slow
    assert len(pings) > 100  # pinged all along (~19 s)
    assert all(status == 200 for _, status, _ in pings)
    slowest = {kind: max(s for k, _, s in pings if k == kind) for kind in ("new", "keep-alive")}
    print(f"pings during two slow 6 MB requests: {len(pings)}, slowest: {slowest}")
    assert max(slowest.values()) < 2.0, slowest


def test_workers_have_a_higher_oom_score_adj_than_the_master(server):
    master = int(Path(f"/proc/{server.proc.pid}/oom_score_adj").read_text())
    assert master == int(Path("/proc/self/oom_score_adj").read_text())  # the master's is left as it was
    scores = [int(Path(f"/proc/{p.pid}/oom_score_adj").read_text()) for p in workers(server)]
    assert len(scores) == 2
    assert all(score > master for score in scores), (master, scores)


def test_kill_9_of_a_worker_under_load_fails_only_its_own_connections(server):
    stop = threading.Event()
    lock = threading.Lock()
    failures: list[tuple[int | None, str]] = []  # (owner pid of the connection, error)
    answered: dict[int | None, int] = {}  # owner pid -> 200 answers
    owners: list[int | None] = [None] * 32
    last_answer = [0.0] * 32  # monotonic time of each client's latest 200
    ready = threading.Barrier(33, timeout=120)

    def client(index: int) -> None:
        connection, owner = open_owned(server)
        owners[index] = owner
        ready.wait()
        while not stop.is_set():
            try:
                connection.request("POST", "/invocations", body=INVOCATION, headers=JSON)
                response = connection.getresponse()
                response.read()
                with lock:
                    if response.status == 200:
                        answered[owner] = answered.get(owner, 0) + 1
                        last_answer[index] = time.monotonic()
                    else:
                        failures.append((owner, f"status {response.status}"))
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    failures.append((owner, repr(exc)))
                connection.close()
                connection, owner = open_owned(server)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    killed_at = time.monotonic()
    try:
        ready.wait()
        before = {p.pid for p in workers(server)}
        assert None not in owners, owners
        counts = {pid: owners.count(pid) for pid in before}
        victim = max(counts, key=counts.get)  # the worker with the most connections
        assert counts[victim] > 0, counts
        time.sleep(2)
        os.kill(victim, 9)
        killed_at = time.monotonic()
        # A new worker: forked by the master, and it answers on a connection it accepted.
        new_pid, served_after = None, None
        while time.monotonic() - killed_at < 5 and served_after is None:
            fresh = {p.pid for p in workers(server)} - before
            if fresh:
                new_pid = fresh.pop()
                connection, owner = open_owned(server, within_s=0.5)
                try:
                    if owner == new_pid:
                        connection.request("POST", "/invocations", body=INVOCATION, headers=JSON)
                        if connection.getresponse().status == 200:
                            served_after = time.monotonic() - killed_at
                finally:
                    connection.close()
            else:
                time.sleep(0.02)
        time.sleep(max(0.0, 5 - (time.monotonic() - killed_at)))  # load goes on around the new worker
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert server.proc.poll() is None, "the master died"
    print(
        f"kill -9 of worker {victim} ({counts[victim]} of 32 connections): failures {len(failures)}, "
        f"answers per worker {answered}, new worker {new_pid} served {served_after} s after the kill"
    )
    assert served_after is not None and served_after < 5, (new_pid, served_after)
    assert [f for f in failures if f[0] != victim] == []
    assert 0 < len(failures) <= counts[victim]  # each of its connections fails once, then reconnects
    assert all(t > killed_at for t in last_answer)  # every client is answered after the kill


def test_a_body_that_stops_arriving_is_a_408_after_the_model_server_timeout(cartpole, tmp_path_factory):
    process = ServeProcess(
        cartpole,
        tmp_path_factory.mktemp("serve-timeout"),
        SAGEMAKER_MODEL_SERVER_TIMEOUT="3",
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
    )
    try:
        process.wait_until_healthy(timeout=180)
        results: list = []
        sender = threading.Thread(
            target=slow_post, args=(process.port, padded_body(SLOW_BODY_BYTES), results), kwargs={"stop_after": 10}
        )
        sender.start()
        time.sleep(1)
        ping = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
        status, seconds = timed_ping(ping)  # the worker serves meanwhile
        ping.close()
        assert status == 200 and seconds < 2
        sender.join(timeout=60)
        (status, headers, answer, seconds) = results[0]
        assert status == 408, answer[:300]
        assert json.loads(answer)["error"] == "RequestTimeout"
        assert "SAGEMAKER_MODEL_SERVER_TIMEOUT=3" in json.loads(answer)["message"]
        assert headers.get("Connection") == "close"
        assert 3 <= seconds < 8, seconds
        after = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
        after.request("POST", "/invocations", body=INVOCATION, headers=JSON)
        assert after.getresponse().status == 200  # the same worker goes on serving
        after.close()
    finally:
        code = process.stop()
        assert code == 0, process.log.read_text()[-3000:]
