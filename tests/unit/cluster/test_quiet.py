"""The job log leaves out Ray's, Tune's and RLlib's known-harmless lines, and only those."""

from __future__ import annotations

import io
import logging

from sagemaker_ray_rl.cluster import quiet

BANNER = [
    "2026-12-01 15:36:13,561\tSUCC scripts.py:1085 -- Ray runtime started.\n",
    "2026-12-01 15:36:13,563\tINFO scripts.py:1095 --   ray start --address='192.0.2.2:6379'\n",
    "2026-12-01 15:35:58,657\tINFO usage_lib.py:448 -- Usage stats collection is disabled.\n",
]
NOISE = [
    "(PPO pid=1) 2026-12-01 15:36:26,412\tWARNING algorithm_config.py:5160 -- You are running PPO on the new API stack! "
    "This is the new default behavior for this algorithm.\n",
    "(PPO pid=1) Install gputil for GPU system monitoring.\n",
]
KEPT = [
    "2026-12-01 15:36:13,563\tWARNING scripts.py:900 -- Not enough memory for the object store\n",
    "[sagemaker-ray-rl] Ray cluster up: 1 of 1 host(s) alive after 22.5 s\n",
    "training_iteration: 1\n",
    "(PPO pid=1) WARNING -- DeprecationWarning: `config.framework('tf')` is deprecated\n",
]


def test_ray_start_output_loses_its_banner_and_the_harmless_lines_only(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_RAY_RL_LOG_LEVEL", raising=False)
    out = io.StringIO()
    forwarder = quiet.LineForwarder(io.StringIO("".join(BANNER + NOISE + KEPT)), out)
    forwarder.run()
    assert out.getvalue() == "".join(KEPT)
    assert "Ray runtime started." in forwarder.last_lines()  # the error message still has everything


def test_debug_keeps_every_line(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_RAY_RL_LOG_LEVEL", "DEBUG")
    out = io.StringIO()
    quiet.LineForwarder(io.StringIO("".join(BANNER + NOISE)), out).run()
    assert out.getvalue() == "".join(BANNER + NOISE)
    monkeypatch.delenv("SAGEMAKER_RAY_RL_LOG_LEVEL")
    assert quiet.verbose(hyperparameters={"sagemaker_container_log_level": 10})
    assert not quiet.verbose(hyperparameters={"sagemaker_container_log_level": 20})


def test_logging_filter_drops_harmless_records_and_keeps_the_rest(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_RAY_RL_LOG_LEVEL", raising=False)
    stream = io.StringIO()
    logger = logging.getLogger("ray.rllib.test_quiet")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        quiet.install()
        handler.addFilter(quiet.HarmlessFilter())
        logger.warning(
            "You are running %s on the new API stack! This is the new default behavior for this algorithm.", "PPO"
        )
        logger.warning("Your env's observation space is not a Box: flattening it")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "Your env's observation space is not a Box: flattening it\n"


def test_actor_lines_forwarded_to_the_driver_lose_the_harmless_ones(monkeypatch):
    # Ray's own dispatcher, as ray.init(log_to_driver=True) sets it up (handler "ray_print_logs").
    monkeypatch.delenv("SAGEMAKER_RAY_RL_LOG_LEVEL", raising=False)
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed: list[list[str]] = []
    dispatcher.add_handler("ray_print_logs", lambda data: printed.append(data["lines"]))
    try:
        assert quiet.filter_worker_logs()
        assert quiet.filter_worker_logs()  # idempotent: wrapped once
        dispatcher.emit({"lines": [NOISE[1].rstrip("\n"), "training_iteration: 1"], "pid": 1, "is_err": False})
        dispatcher.emit({"lines": [NOISE[0].rstrip("\n")], "pid": 1, "is_err": True})
    finally:
        dispatcher.remove_handler("ray_print_logs")
    assert printed == [["training_iteration: 1"]]


def test_the_onnx_exporters_info_lines_go_and_its_warnings_stay(monkeypatch):
    monkeypatch.delenv("SAGEMAKER_RAY_RL_LOG_LEVEL", raising=False)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(quiet.HarmlessFilter())
    loggers = [logging.getLogger("onnx_ir.passes.common.unused_removal"), logging.getLogger("onnxscript.rewriter")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        loggers[0].info("Removed 2 unused nodes")
        loggers[1].info("Applied 2 of general pattern rewrite rules.")
        loggers[1].warning("Rewrite rule failed: kept the original graph")
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert stream.getvalue() == "Rewrite rule failed: kept the original graph\n"


def test_torchs_pytree_future_warning_is_left_out_and_other_future_warnings_stay(monkeypatch):
    import warnings

    monkeypatch.delenv("SAGEMAKER_RAY_RL_LOG_LEVEL", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("`foo` will change its default", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["`foo` will change its default"]
