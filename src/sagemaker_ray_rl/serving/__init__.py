"""The model server: ``/ping``, ``/invocations`` and ``/execution-parameters`` answering from an
RLlib checkpoint.

`codecs` reads and writes the request and response bodies of each content type, `observations`
validates observations and RNN states against the policy's spaces, `app` holds the flask routes and
the framework-free invocation handler, `server` is the ``serve`` command (gunicorn), and
`ray_serve` the Ray Serve backend. The policy itself (modules and connector pipelines) lives in
`sagemaker_ray_rl.policy` and `sagemaker_ray_rl.connectors`.
"""
