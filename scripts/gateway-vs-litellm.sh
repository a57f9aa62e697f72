#!/usr/bin/env bash
# algoagent's SDK gateway and LiteLLM's proxy side by side, on the same
# gemini-sim, on the same machine, in the same run. Not part of CI: it
# installs litellm[proxy]==1.108.7 (a vetted version) into its own venv.
#
# 1. Overhead: one request in flight, 1,000 rounds of the same chat
#    completion straight to the simulator, through our /v1 and through
#    LiteLLM's /v1 (taking turns), the simulator answering at once. Reports
#    p50/p99 and what each adds, and each server's CPU and peak memory.
# 2. Over quota: four keys of four projects at 30 requests per minute each
#    (120 a minute), enforced by the simulator; each gateway told the same
#    limits; 3 requests a second (150% of the pool) for 60 s, each gateway
#    on a fresh simulator. Reports upstream 429s provoked, and the user 429s
#    with and without Retry-After.
#
# LiteLLM runs as its docs set a rate-limited pool up: one deployment per
# key with its `rpm`, `routing_strategy: usage-based-routing-v2`, one
# worker, no database, LITELLM_LOCAL_MODEL_COST_MAP=True (no download).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT_BASE="${COMPARE_PORT_BASE:-18500}"
VENV="${LITELLM_VENV:-.venv-litellm}"
SIM_PORT=$PORT_BASE OURS_PORT=$((PORT_BASE + 1)) LITELLM_PORT=$((PORT_BASE + 2))

if [ ! -x "$VENV/bin/litellm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'litellm[proxy]==1.108.7'
fi
cargo build --release -p loadgen -p server -p gemini-sim
bin=target/release

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
work=$(mktemp -d)
pids=()
trap 'stop_all; echo "logs in $work" >&2' EXIT

write_configs() { # rpm latency_low latency_high
  local rpm=$1 low=$2 high=$3 sim_keys="" our_keys="" litellm_models=""
  for n in 1 2 3 4; do
    sim_keys+="{\"key\": \"load-key-$n\", \"id\": \"k$n\", \"project\": \"p$n\", \"status\": \"valid\"},"
    our_keys+="{\"key_id\": \"k$n\", \"model_name\": \"gemini-2.5-flash\", \"provider\": \"gemini\", \"project\": \"p$n\", \"rpm\": $rpm, \"tpm\": 1000000000},"
    litellm_models+="
  - model_name: gemini-2.5-flash
    litellm_params:
      model: gemini/gemini-2.5-flash
      api_base: http://127.0.0.1:$SIM_PORT/v1beta
      api_key: load-key-$n
      rpm: $rpm"
  done
  cat >"$work/sim.json" <<JSON
{"keys": [${sim_keys%,}], "default_limits": {"rpm": $rpm, "tpm": 1000000000}, "window_seconds": 60, "latency_ms": [$low, $high]}
JSON
  cat >"$work/keys.json" <<JSON
{"rotation_strategy": "round_robin", "keys": [${our_keys%,}]}
JSON
  cat >"$work/litellm.yaml" <<YAML
model_list:$litellm_models
router_settings:
  routing_strategy: usage-based-routing-v2
general_settings:
  master_key: sk-load
YAML
}

start_all() { # part
  "$bin/gemini-sim" --config "$work/sim.json" --bind "127.0.0.1:$SIM_PORT" 2>"$work/sim-$1.log" &
  sim_pid=$!
  pids+=("$sim_pid")
  start_algoagent "$OURS_PORT" "$SIM_PORT" "$1"
  ours_pid=$server_pid
  LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/litellm" --config "$work/litellm.yaml" \
    --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1 >"$work/litellm-$1.log" 2>&1 &
  litellm_pid=$!
  pids+=("$litellm_pid")
  wait_for "http://127.0.0.1:$LITELLM_PORT/health/liveliness"
}

common=(--sim "http://127.0.0.1:$SIM_PORT" --sim-key load-key-1
  --algoagent "http://127.0.0.1:$OURS_PORT" --surface openai
  --litellm "http://127.0.0.1:$LITELLM_PORT" --litellm-key sk-load --clk-tck "$(getconf CLK_TCK)")

echo "## Overhead, one request in flight"
write_configs 1000000 0 0
start_all overhead
"$bin/loadgen" gateway "${common[@]}" --requests "${COMPARE_REQUESTS:-1000}" \
  --watch "algoagent=$ours_pid" --watch "litellm=$litellm_pid"
stop_all

echo
echo "## 150% of the pool's quota (4 keys x 30 RPM; 3 requests a second for 60 s)"
write_configs 30 50 150
start_all quota
"$bin/loadgen" gateway "${common[@]}" --no-direct --warmup 0 --rate 3 --seconds 60 --timeout-seconds 120 \
  --watch "algoagent=$ours_pid" --watch "litellm=$litellm_pid"
