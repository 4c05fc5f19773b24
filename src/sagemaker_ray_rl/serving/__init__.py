"""The model server: ``/ping``, ``/invocations`` and ``/execution-parameters`` answering from an
RLlib checkpoint.

`protocol` is the whole request path without a web framework (decode, validate, plan, compute,
encode), with `codecs` (bodies of each content type) and `observations` (observations and RNN states
against the policy's spaces) under it. The transports are thin: `flask_app` (routes) run by
`gunicorn_app` with `batching` (concurrent requests share a forward pass), and `ray_serve` (a Ray
Serve deployment). `server` is the ``serve`` command that picks one. The policy itself lives in
`sagemaker_ray_rl.inference`.
"""
