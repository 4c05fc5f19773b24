#!/usr/bin/env bash
# The main job end to end, inside the image:
#   1. build sagemaker-ray-rl:<VERSION>-cpu-py311 (scripts/build.sh)
#   2. train PPO on CartPole-v1 from hyperparameters only (`docker run ... train` over build/demo/job,
#      a local /opt/ml) until the greedy policy (as it will be served) averages 500 (every episode perfect) over 20 evaluation
#      episodes, or 40 iterations; then the exported policy is evaluated on 100 greedy episodes
#   3. serve the exported model (`docker run ... serve`)
#   4. play 10 episodes of CartPole-v1 through POST /invocations and print the mean return
#   5. stop the server
# Needs a Docker engine: without one it starts Debian's (scripts/ensure-docker.sh, as root) or says
# how to get one. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-docker.sh
source scripts/lib.sh

image=$(scripts/build.sh | tail -n 1)

job=$PWD/build/demo/job
rm -rf "$job"
mkdir -p "$job/input/config"
# SageMaker passes every hyperparameter as a string; so does this file.
cat > "$job/input/config/hyperparameters.json" <<'JSON'
{
  "algorithm": "PPO",
  "env": "CartPole-v1",
  "rl.training.config.lr": "0.0003",
  "rl.training.config.num_epochs": "6",
  "stop.evaluation_return_mean": "500",
  "evaluation.evaluation_duration": "20",
  "evaluation_episodes": "100",
  "stop.training_iteration": "40"
}
JSON
log "training: docker run --rm -v $job:/opt/ml $image train"
"$DOCKER" run --rm -v "$job:/opt/ml" "$image" train
log "exported model: $(ls "$job/model" | tr '\n' ' ')"
greedy=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["metrics"]["evaluation_return_mean"])' "$job/model/metadata.json")
log "the exported policy's mean return over 100 greedy episodes: $greedy"

port=${DEMO_PORT:-8080}
server=$(start_server "$job/model" "$port" "$image")
trap '"$DOCKER" stop -t 30 "$server" >/dev/null 2>&1 || true' EXIT
log "serving on http://127.0.0.1:$port (container ${server:0:12})"
wait_for_ping "$server" "$port"

log "playing 10 episodes of CartPole-v1 through POST /invocations"
"$DOCKER" run --rm --network host -v "$PWD/scripts:/scripts:ro" "$image" \
    python /scripts/play_http.py --url "http://127.0.0.1:$port" --env CartPole-v1 --episodes 10 --min-return 450
