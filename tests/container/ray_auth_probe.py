"""What an outsider on a job's network gets from its master's Ray ports: run in a container of the
image on the job's docker network, without the job's /opt/ml (tests/container/test_ray_auth_image.py).

Usage: python ray_auth_probe.py MASTER_HOST GCS_PORT. Prints one JSON object: probe name ->
``{"ok": bool, "detail": str}``, where ``ok`` means the probe got in (what the test expects not to
happen). Each Ray connection runs in a child process with a time limit: a hang counts as refused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

CONNECT = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="error", log_to_driver=False)
print("CONNECTED", ray.cluster_resources())
"""


def ray_connect(address: str, env: dict[str, str], timeout: float = 45) -> dict:
    """``ray.init(address)`` in a child process with `env`; ok when it printed the cluster's resources."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", CONNECT, address], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "detail": f"no connection within {timeout:g} s"}
    text = (out.stdout + out.stderr).strip()
    return {"ok": "CONNECTED" in out.stdout, "detail": f"exit {out.returncode}: {text[-600:]}"}


def http(url: str, method: str = "GET", body: dict | None = None) -> dict:
    """One HTTP request; ok when the answer is 2xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {"ok": True, "detail": f"HTTP {response.status}: {response.read()[:300]!r}"}
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
    job = {"entrypoint": "python -c 'open(\"/tmp/pwned\", \"w\").write(\"x\")'"}
    results = {
        "ray_init_no_auth": ray_connect(f"{ip}:{gcs_port}", {**base, "RAY_AUTH_MODE": "disabled"}),
        "ray_init_wrong_token": ray_connect(
            f"{ip}:{gcs_port}", {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
        ),
        "ray_client": ray_connect(f"ray://{ip}:10001", {**base, "RAY_AUTH_MODE": "disabled"}, timeout=60),
        "job_submit_dashboard": http(f"http://{ip}:8265/api/jobs/", "POST", job),
        "job_submit_agent": http(f"http://{ip}:52365/api/job_agent/jobs/", "POST", job),
        "agent_version": http(f"http://{ip}:52365/api/version"),
    }
    results["open_ports"] = {"ok": False, "detail": [p for p in (6379, 8265, 10001, 52365) if port_open(ip, p)]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
