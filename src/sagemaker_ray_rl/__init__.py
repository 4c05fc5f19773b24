"""Train and serve Ray RLlib policies in one Amazon SageMaker container image.

The public API for user entry points (imported lazily, so ``import sagemaker_ray_rl`` stays cheap):

- `register_env` (Ray Tune's): make a custom env creator known by name;
- `build_experiment`: the job's experiment (RLlib config, stop criteria) from the script's defaults
  and the job's hyperparameters; `build_config`: its RLlib `AlgorithmConfig` only;
- `train_and_export`: train it and export the checkpoint for serving, in one call (what the examples
  end with); or the two steps it takes:
- `run_experiment`: train it with Tune until the stop criteria, checkpoint at the end;
- `build_metadata` and `export_model`: put the checkpoint in the model dir with ``metadata.json``;
- `export_onnx`: ONNX graphs of the checkpoint's modules (`train` runs it after every job that leaves a
  checkpoint in the model dir; call it yourself to export elsewhere);
- `Environment`: the read-only snapshot of the SageMaker contract (paths, hosts, channels);
- `ray_cluster`: the job's Ray cluster over all hosts, for scripts that bring their own driver.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sagemaker-ray-rl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

_LAZY = {
    "register_env": "ray.tune.registry",
    "build_config": "sagemaker_ray_rl.training.api",
    "build_experiment": "sagemaker_ray_rl.training.api",
    "run_experiment": "sagemaker_ray_rl.training.experiment",
    "train_and_export": "sagemaker_ray_rl.training.api",
    "build_metadata": "sagemaker_ray_rl.checkpoint",
    "export_model": "sagemaker_ray_rl.checkpoint",
    "export_onnx": "sagemaker_ray_rl.inference.onnx_export",
    "Environment": "sagemaker_ray_rl.contract.environment",
    "ray_cluster": "sagemaker_ray_rl.cluster",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
