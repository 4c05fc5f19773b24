"""The model server: ``/ping`` and ``/invocations`` answering from an exported checkpoint.

`codecs` turns request bodies into observation batches and actions into response bodies, `app`
holds the flask routes, `server` runs them under gunicorn (the ``serve`` command).
"""
