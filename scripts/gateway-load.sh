#!/usr/bin/env bash
# The SDK gateway under concurrent load: one `algoagent` replica with the
# embedded limiter (SQLite, no Redis) in front of a standalone gemini-sim
# answering after 200 ms, a pool and fair use set high enough that nothing
# is refused, and `loadgen gateway` sending generateContent at 250, 500 and
# 1,000 requests per second for 30 s each: first straight to the simulator
# (the baseline), then through the gateway. Prints one table row per run
# with p50/p99, what the gateway added, errors, and the CPU and peak
# resident memory of the server, the simulator and the load generator.
#
#   scripts/gateway-load.sh                    # /v1beta (Gemini-native)
#   GATEWAY_SURFACE=openai scripts/gateway-load.sh   # /v1/chat/completions
#   GATEWAY_RATES="500" GATEWAY_SECONDS=10 scripts/gateway-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT_BASE="${GATEWAY_PORT_BASE:-18300}"
RATES="${GATEWAY_RATES:-250 500 1000}"
SECONDS_EACH="${GATEWAY_SECONDS:-30}"
SURFACE="${GATEWAY_SURFACE:-google}"
LATENCY_MS="${GATEWAY_SIM_LATENCY_MS:-200}"

cargo build --release -p loadgen -p server -p gemini-sim
bin=target/release

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
work=$(mktemp -d)
pids=()
trap 'stop_all; echo "logs in $work" >&2' EXIT

# Four keys of four projects, each far above what the load asks.
cat >"$work/sim.json" <<JSON
{
  "keys": [
    {"key": "load-key-1", "id": "k1", "project": "p1", "status": "valid"},
    {"key": "load-key-2", "id": "k2", "project": "p2", "status": "valid"},
    {"key": "load-key-3", "id": "k3", "project": "p3", "status": "valid"},
    {"key": "load-key-4", "id": "k4", "project": "p4", "status": "valid"}
  ],
  "default_limits": {"rpm": 1000000, "tpm": 1000000000},
  "latency_ms": [$LATENCY_MS, $LATENCY_MS]
}
JSON
cat >"$work/keys.json" <<JSON
{
  "rotation_strategy": "round_robin",
  "keys": [
    {"key_id": "k1", "model_name": "gemini-2.5-flash", "provider": "gemini", "project": "p1", "rpm": 1000000, "tpm": 1000000000},
    {"key_id": "k2", "model_name": "gemini-2.5-flash", "provider": "gemini", "project": "p2", "rpm": 1000000, "tpm": 1000000000},
    {"key_id": "k3", "model_name": "gemini-2.5-flash", "provider": "gemini", "project": "p3", "rpm": 1000000, "tpm": 1000000000},
    {"key_id": "k4", "model_name": "gemini-2.5-flash", "provider": "gemini", "project": "p4", "rpm": 1000000, "tpm": 1000000000}
  ]
}
JSON

"$bin/gemini-sim" --config "$work/sim.json" --bind "127.0.0.1:$PORT_BASE" 2>"$work/sim.log" &
sim_pid=$!
pids+=("$sim_pid")

start_algoagent "$((PORT_BASE + 1))" "$PORT_BASE" load

rate_args=()
for rate in $RATES; do rate_args+=(--rate "$rate"); done
"$bin/loadgen" gateway --sim "http://127.0.0.1:$PORT_BASE" --sim-key load-key-1 \
  --algoagent "http://127.0.0.1:$((PORT_BASE + 1))" --surface "$SURFACE" \
  "${rate_args[@]}" --seconds "$SECONDS_EACH" --clk-tck "$(getconf CLK_TCK)" \
  --watch "algoagent=$server_pid" --watch "gemini-sim=$sim_pid" --watch "loadgen=self"
