"""What an outsider on a job's network gets from its master's Ray ports: run in a container of the
image on the job's docker network, without the job's /opt/ml (tests/container/test_ray_auth_image.py).

Usage: python ray_auth_probe.py MASTER_HOST GCS_PORT [TOKEN]. Prints one JSON object: probe name ->
``{"ok": bool, "detail": str}`` (and ``status`` for HTTP), where ``ok`` means the probe got in (for
HTTP: a 2xx answer). With the job's TOKEN it also
runs the same connections with it (``*_with_token``: they must get in, or the probes prove nothing).
Each Ray connection runs in a child process with a time limit: a hang counts as refused. The probes
run a few at a time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

CONNECT = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="error", log_to_driver=False)
print("CONNECTED", ray.cluster_resources())
"""


def ray_connect(address: str, env: dict[str, str], timeout: float = 90) -> dict:
    """``ray.init(address)`` in a child process with `env`; ok when it printed the cluster's resources."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", CONNECT, address], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "detail": f"no connection within {timeout:g} s"}
    text = (out.stdout + out.stderr).strip()
    return {"ok": "CONNECTED" in out.stdout, "detail": f"exit {out.returncode}: {text[-600:]}"}


GCS_CALL = """
import sys, ray
gcs = ray._raylet.GcsClient(address=sys.argv[1])
print("CONNECTED", len(gcs.internal_kv_keys(b"", None)), "keys")
"""


def gcs_call(address: str, env: dict[str, str], timeout: float = 120) -> dict:
    """One call to the GCS (``ray status``'s client, from a machine outside the cluster); ok when
    it answered."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", GCS_CALL, address], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "detail": f"no answer within {timeout:g} s"}
    text = (out.stdout + out.stderr).strip()
    return {"ok": "CONNECTED" in out.stdout, "detail": f"exit {out.returncode}: {text[-600:]}"}


def http(url: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> dict:
    """One HTTP request (with ``Authorization: Bearer TOKEN`` when given); ok when the answer is 2xx."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {
                "ok": True,
                "detail": f"HTTP {response.status}: {response.read()[:300]!r}",
                "status": response.status,
            }
    except urllib.error.HTTPError as exc:
        return {"ok": False, "detail": f"HTTP {exc.code}", "status": exc.code}
    except OSError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def main() -> None:
    host, gcs_port = sys.argv[1], int(sys.argv[2])
    ip = socket.gethostbyname(host)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base["RAY_USAGE_STATS_ENABLED"] = "0"
    token = sys.argv[3] if len(sys.argv) > 3 else None
    job = {"entrypoint": 'python -c \'open("/tmp/pwned", "w").write("x")\''}
    gcs = f"{ip}:{gcs_port}"
    no_auth = {**base, "RAY_AUTH_MODE": "disabled"}
    wrong = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    probes = {
        "ray_init_no_auth": lambda: ray_connect(gcs, no_auth),
        "gcs_wrong_token": lambda: gcs_call(gcs, wrong),
        "ray_client": lambda: ray_connect(f"ray://{ip}:10001", no_auth),
        "job_submit_dashboard": lambda: http(f"http://{ip}:8265/api/jobs/", "POST", job),
        "job_submit_agent": lambda: http(f"http://{ip}:52365/api/job_agent/jobs/", "POST", job),
        "agent_version": lambda: http(f"http://{ip}:52365/api/version"),
    }
    if token:
        right = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        probes["gcs_with_token"] = lambda: gcs_call(gcs, right)
        probes["agent_version_with_token"] = lambda: http(f"http://{ip}:52365/api/version", token=token)
    results = {}
    with ThreadPoolExecutor(3) as pool:  # a few at a time: each starts a Python with Ray
        futures = {name: pool.submit(probe) for name, probe in probes.items()}
        results.update({name: future.result() for name, future in futures.items()})
    results["open_ports"] = {"ok": False, "detail": [p for p in (6379, 8265, 10001, 52365) if port_open(ip, p)]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
