"""A server answering every ``POST /invocations`` with one fixed JSON body: the HTTP stack's own
ceiling for `bench_serving.py`.

    PYTHONPATH=src python scripts/bench/constant_server.py [--bare]

Started like ``serve`` (same environment: ``SAGEMAKER_BIND_TO_PORT``,
``SAGEMAKER_MODEL_SERVER_WORKERS``, ...): the standard library patched for gevent first, then
gunicorn with `gunicorn_app.gunicorn_options` (gevent workers, keep-alive, ``take_turns``,
preload) running a flask app with ``GET /ping`` and ``POST /invocations``. The request body is
read whole (as the real server reads it), the policy is never loaded and nothing is parsed. With
``--bare`` the same routes are a plain WSGI function instead of flask (gunicorn and gevent alone).
"""

from __future__ import annotations

import argparse
import sys

#: The answer to every ``POST /invocations`` (what the real server answers for one CartPole
#: observation).
ANSWER = b'{"predictions":[{"action":0}]}'
PING = b'{"status": "healthy"}'


def flask_app():
    """``/ping`` and ``/invocations`` as flask routes, the body read with ``request.get_data()``."""
    from flask import Flask, Response, request

    app = Flask("constant")

    @app.get("/ping")
    def ping() -> Response:
        return Response(PING, status=200, mimetype="application/json")

    @app.post("/invocations")
    def invocations() -> Response:
        request.get_data()
        return Response(ANSWER, status=200, mimetype="application/json")

    return app


def bare_app(environ: dict, start_response):
    """The same routes without a framework (the body read from ``wsgi.input`` to its end)."""
    if environ["PATH_INFO"] == "/invocations":
        stream = environ["wsgi.input"]
        while stream.read(65536):
            pass
        body = ANSWER
    else:
        body = PING
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bare", action="store_true", help="a plain WSGI function instead of flask")
    args = parser.parse_args()
    from sagemaker_ray_rl.serving.server import patch_for_gevent

    patch_for_gevent()  # as `serve` does, before gunicorn is imported
    from sagemaker_ray_rl.contract.environment import Environment
    from sagemaker_ray_rl.serving.gunicorn_app import GunicornServer, gunicorn_options

    options = gunicorn_options(Environment.from_environ())
    options["proc_name"] = "constant-server"
    sys.argv = sys.argv[:1]  # gunicorn's BaseApplication must not read our arguments
    GunicornServer(bare_app if args.bare else flask_app(), options).run()


if __name__ == "__main__":
    main()
