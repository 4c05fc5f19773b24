"""Names of the environment variables, files and hyperparameter families of the SageMaker
container contract.

Only names live here, no values and no reading: `environment.py` reads them once.
Sources: the SageMaker developer guide ("Use your own training algorithms", "Use your own
inference code") and aws/sagemaker-training-toolkit (`params.py`, `environment.py`).
"""

# Where /opt/ml is (the training toolkit's own override, useful outside a container).
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"

# Files under <base>/input/config/.
HYPERPARAMETERS_FILE = "hyperparameters.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"

# Set by the training toolkit for user entry points; honoured when present.
MODEL_DIR_ENV = "SM_MODEL_DIR"
OUTPUT_DATA_DIR_ENV = "SM_OUTPUT_DATA_DIR"
CHANNEL_ENV_PREFIX = "SM_CHANNEL_"
NUM_CPUS_ENV = "SM_NUM_CPUS"
NUM_GPUS_ENV = "SM_NUM_GPUS"
CURRENT_HOST_ENV = "SM_CURRENT_HOST"

#: Makes the toolkit's `entry_point.run` skip its wait (up to 15 minutes, silent) for every host name
#: of resourceconfig.json to resolve (its Studio local mode switch; sagemaker_training 5.1 entry_point.py).
TOOLKIT_SKIP_DNS_WAIT_ENV = "SM_STUDIO_LOCAL_MODE"

# The user entry point (the toolkit reads both; the hyperparameter wins).
USER_PROGRAM_ENV = "SAGEMAKER_PROGRAM"
USER_PROGRAM_HYPERPARAMETER = "sagemaker_program"
# Hyperparameters with this prefix belong to the toolkit and the SDK, never to RLlib.
SAGEMAKER_HYPERPARAMETER_PREFIX = "sagemaker_"
#: Hyperparameters with a leading underscore are reserved by SageMaker itself: automatic model
#: tuning adds ``_tuning_objective_metric`` (the tuner's objective metric name) to every training
#: job it starts (the SDK's ``sagemaker/tuner.py`` deletes it again in ``attach``; the toolkit lists
#: it in ``params.SAGEMAKER_HYPERPARAMETERS``). Never RLlib's, never a user script's argument.
RESERVED_HYPERPARAMETER_PREFIX = "_"
TUNING_OBJECTIVE_METRIC_HYPERPARAMETER = "_tuning_objective_metric"
#: Hyperparameters of the Ray cluster over the job's hosts (`sagemaker_ray_rl.cluster.settings`).
CLUSTER_HYPERPARAMETER_PREFIX = "ray."
#: The job kind: ``train`` (default), ``collect`` or ``offline`` (`sagemaker_ray_rl.offline.settings`).
MODE_HYPERPARAMETER = "mode"
#: Hyperparameters of collect and offline jobs (`sagemaker_ray_rl.offline.settings`).
OFFLINE_HYPERPARAMETER_PREFIX = "offline."
#: Prefixes of the hyperparameters the image (the SDK, SageMaker, the toolkit) reads itself: the
#: built-in experiment leaves them to their owners, and a user entry point never gets them as
#: command-line arguments (they stay in ``SM_HPS``). `environment.is_image_hyperparameter` applies it.
IMAGE_HYPERPARAMETER_PREFIXES = (
    SAGEMAKER_HYPERPARAMETER_PREFIX,
    RESERVED_HYPERPARAMETER_PREFIX,
    CLUSTER_HYPERPARAMETER_PREFIX,
    OFFLINE_HYPERPARAMETER_PREFIX,
)
#: Whole names of the image's own hyperparameters (besides `IMAGE_HYPERPARAMETER_PREFIXES`).
IMAGE_HYPERPARAMETERS = (MODE_HYPERPARAMETER,)
#: The dotless spelling of a hyperparameter name: ``rl__training__config__lr`` is
#: ``rl.training.config.lr``. Drivers that export every hyperparameter as a shell variable
#: (``SM_HP_<NAME>``: the SDK v3 ``ModelTrainer``'s ``sm_train.sh`` with ``source_code``) accept only
#: letters, digits and underscores. `environment.dotted_names` applies it.
DOTLESS_SEPARATOR = "__"

# Hosting and batch transform.
BIND_TO_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
MAX_PAYLOAD_IN_MB_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
DEFAULT_INVOCATIONS_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
#: Ours: ``debug`` keeps Ray's, Tune's and RLlib's known-harmless lines in the job log.
LOG_LEVEL_ENV = "SAGEMAKER_RAY_RL_LOG_LEVEL"
#: Ours: which model server `serve` runs (``gunicorn``, the default, or ``ray-serve``).
SERVER_ENV = "SAGEMAKER_RAY_RL_SERVER"
#: Ours: what computes greedy answers: ``torch``, ``onnx`` (the exported graphs, required) or ``auto``.
INFERENCE_ENV = "SAGEMAKER_RAY_RL_INFERENCE"
#: Ours: requests a gunicorn worker answers with one forward pass at most (1: no batching).
MAX_BATCH_SIZE_ENV = "SAGEMAKER_RAY_RL_MAX_BATCH_SIZE"
#: Ours: requests after which a gunicorn worker is replaced by a fresh fork (0: never).
MAX_REQUESTS_ENV = "SAGEMAKER_RAY_RL_MAX_REQUESTS"
#: Ours: most records (observations) one ``/invocations`` request may carry (413 above it).
MAX_RECORDS_ENV = "SAGEMAKER_RAY_RL_MAX_RECORDS"
#: Ours: replicas of the Ray Serve deployment.
RAY_SERVE_REPLICAS_ENV = "SAGEMAKER_RAY_SERVE_REPLICAS"
#: Ours: requests one ``@serve.batch`` forward pass takes at most (Ray Serve transport).
RAY_SERVE_MAX_BATCH_SIZE_ENV = "SAGEMAKER_RAY_SERVE_MAX_BATCH_SIZE"
#: Ours: seconds a batch waits for more requests after its first (Ray Serve transport).
RAY_SERVE_BATCH_WAIT_TIMEOUT_ENV = "SAGEMAKER_RAY_SERVE_BATCH_WAIT_TIMEOUT_S"
#: SageMaker's: ``true`` on a multi-model endpoint (the container then implements ``/models``).
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
#: Ours: memory budget (MB) of a multi-model endpoint's loaded models; over it a load is 507.
MME_MEMORY_ENV = "SAGEMAKER_RAY_RL_MME_MEMORY_MB"

# Stopping a training job (StopTrainingJob, a spot interruption, max_run): SIGTERM to the container's
# PID 1, SIGKILL this many seconds later.
SIGKILL_AFTER_SIGTERM_S = 120
#: Ours: seconds training gets after SIGTERM to checkpoint and stop, the built-in experiment and a user
#: entry point (or a command under ``launch``) alike; the rest of the 120 s stops Ray and the workers.
STOP_BUDGET_S = 90.0
