#!/usr/bin/env bash
# Seed 004's batch-RL loop end to end, inside the image (each step a separate SageMaker-style job):
#   1. collect: 500 uniform-random CartPole-v1 episodes (200-step limit)   -> job1/output/data/dataset
#   2. offline: DiscreteCQL from that dataset as channel `train`, no env stepping while learning; 5
#      training runs, every 500 updates a checkpoint, its OPE estimates (IS/WIS/PDIS/DM/DR/MB) and 20
#      real episodes; the checkpoint with the best MB (model-based) estimate is exported, and the
#      promotion verdict (its MB lower bound vs the logged return)  -> job2/model, job2/output/data/{ope.csv,promotion.json}
#   3. serve the exported model (`docker run ... serve`)
#   4. batch transform stand-in: 100 episodes through POST /invocations (20 envs per request,
#      epsilon-greedy 0.1 on the served greedy actions, with their probabilities) -> job3 (the next dataset)
# Needs a Docker engine (scripts/ensure-docker.sh). Takes about 10-15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-docker.sh
source scripts/lib.sh

image=$(scripts/build.sh | tail -n 1)
root=$PWD/build/batch-rl
rm -rf "$root"
mkdir -p "$root/job1/input/config" "$root/job2/input/config" "$root/job3"

cat > "$root/job1/input/config/hyperparameters.json" <<'JSON'
{"mode": "collect", "env": "CartPole-v1", "env_config": "{\"max_episode_steps\": 200}",
 "offline.num_episodes": "500", "offline.num_envs": "100", "offline.seed": "0"}
JSON
log "1. collect: docker run --rm -v $root/job1:/opt/ml $image train"
"$DOCKER" run --rm -v "$root/job1:/opt/ml" "$image" train

cat > "$root/job2/input/config/hyperparameters.json" <<'JSON'
{"mode": "offline", "env": "CartPole-v1", "env_config": "{\"max_episode_steps\": 200}",
 "offline.num_updates": "6000", "offline.evaluate_every": "500",
 "offline.eval_episodes": "20", "offline.seed": "0"}
JSON
echo '{"train": {}}' > "$root/job2/input/config/inputdataconfig.json"
mkdir -p "$root/job2/input/data"
cp -r "$root/job1/output/data/dataset" "$root/job2/input/data/train"
log "2. offline training: docker run --rm -v $root/job2:/opt/ml $image train"
"$DOCKER" run --rm -v "$root/job2:/opt/ml" "$image" train
log "OPE per checkpoint ($root/job2/output/data/ope.csv):"
cut -d, -f2- "$root/job2/output/data/ope.csv"
log "Promotion verdict ($root/job2/output/data/promotion.json): exported policy vs the random logged policy"
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["verdict"] + ": " + r["reason"])' \
    "$root/job2/output/data/promotion.json"

port=${DEMO_PORT:-8080}
server=$(start_server "$root/job2/model" "$port" "$image")
trap '"$DOCKER" stop -t 30 "$server" >/dev/null 2>&1 || true' EXIT
log "3. serving the exported model on http://127.0.0.1:$port (container ${server:0:12})"
wait_for_ping "$server" "$port"

log "4. the next dataset through POST /invocations -> $root/job3/dataset"
"$DOCKER" run --rm --network host -v "$PWD/scripts:/scripts:ro" -v "$root/job3:/out" "$image" \
    python /scripts/collect_http.py --url "http://127.0.0.1:$port" --out /out/dataset --episodes 100 --num-envs 20
