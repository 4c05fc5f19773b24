#!/bin/sh
# The image's entrypoint (exec form in the Dockerfile, so signals reach the command):
#   train  -> the SageMaker training toolkit's `train` (SAGEMAKER_TRAINING_MODULE points it at us)
#   serve  -> the model server (gunicorn + flask on SAGEMAKER_BIND_TO_PORT)
#   other  -> executed as given (`docker run IMAGE python my_script.py`)
#   none   -> `train` inside a SageMaker training job layout (resourceconfig.json present: the SDK
#             v3 ModelTrainer's local container gives no command), else the usage
set -e

config_dir="${SAGEMAKER_BASE_DIR:-/opt/ml}/input/config"
if [ $# -eq 0 ] && [ -f "$config_dir/resourceconfig.json" ]; then
    set -- train
fi

usage() {
    cat <<USAGE
sagemaker-ray-rl ${SAGEMAKER_RAY_RL_VERSION:-} (Ray RLlib for Amazon SageMaker)

usage: docker run [options] IMAGE train    train from /opt/ml (hyperparameters.json, optional user entry point)
       docker run [options] IMAGE serve    serve the model in /opt/ml/model on port \${SAGEMAKER_BIND_TO_PORT:-8080}
       docker run [options] IMAGE CMD...   run any other command in the image

Mount a job directory on /opt/ml, e.g. -v "\$PWD/job:/opt/ml". See the README for hyperparameters.
USAGE
}

case "${1:-}" in
    train)
        shift
        python -m sagemaker_ray_rl.contract.standalone
        exec train "$@"
        ;;
    serve)
        shift
        exec serve "$@"
        ;;
    "" | -h | --help | help)
        usage
        ;;
    *)
        exec "$@"
        ;;
esac
