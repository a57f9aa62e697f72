#!/usr/bin/env bash
# The 8-key scenario over HTTP: three `algoagent` replicas sharing Redis and
# Postgres, one standalone gemini-sim with the same quotas as the pool
# (3 x 15 + 5 x 60 = 345 requests per window), and the load generator on
# POST /api/auth/chat/ at 90% and 150% of capacity with 64 users. The window
# is scaled from 60 s to 6 s so each run takes 30 s of arrivals. Prints one
# table row per run.
#
# Needs Postgres (psql) and Redis on localhost, as the test suite does:
#   LOAD_PG=postgres://postgres@127.0.0.1:5432  LOAD_REDIS=redis://127.0.0.1:6379
# Pass `pool` to drive the executor in process instead (no HTTP, no database).
set -euo pipefail
cd "$(dirname "$0")/.."

PG="${LOAD_PG:-postgres://postgres@127.0.0.1:5432}"
REDIS="${LOAD_REDIS:-redis://127.0.0.1:6379}"
PORT_BASE="${LOAD_PORT_BASE:-18100}"
WINDOW=6
PERCENTS="${LOAD_PERCENTS:-90 150}"

cargo build --release -p loadgen -p server -p gemini-sim
bin=target/release

if [ "${1:-}" = "pool" ]; then
  for percent in $PERCENTS; do
    "$bin/loadgen" pool --percent "$percent" --seconds 30 --window-seconds "$WINDOW" --users 64 --deadline-seconds 25
  done
  exit 0
fi

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
work=$(mktemp -d)
pids=()
trap 'status=$?; stop_all; if [ $status -ne 0 ]; then echo "failed; logs kept in $work" >&2; elif [ -z "${LOAD_KEEP_LOGS:-}" ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi' EXIT


"$bin/loadgen" scenario --dir "$work" --window-seconds "$WINDOW"
# shellcheck disable=SC1091
source "$work/keys.env"

for percent in $PERCENTS; do
  # A fresh database, Redis namespace and simulator per run: every run
  # starts with empty windows.
  run="algoagent_load_$$_$percent"
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $run WITH (FORCE)" -c "CREATE DATABASE $run" >/dev/null
  export DATABASE_URL="$PG/$run" REDIS_URL="$REDIS" REDIS_KEY_PREFIX="$run"
  export JWT_SECRET="$(head -c 32 /dev/urandom | base64)" KEYS_FILE="$work/keys.json" DATA_DIR="$work/data"
  export GEMINI_BASE_URL="http://127.0.0.1:$PORT_BASE"
  # Fair use is not what this measures: per-user limits stay out of the way.
  export USER_RPM_DEFAULT=100000 USER_BURST_DEFAULT=100000 USER_TPM_DEFAULT=100000000
  export TRUSTED_PROXIES=127.0.0.1 DB_MAX_CONNECTIONS=20 RUST_LOG=warn

  "$bin/gemini-sim" --config "$work/sim.json" --bind "127.0.0.1:$PORT_BASE" 2>"$work/sim.log" &
  pids+=($!)
  "$bin/algoagent" migrate >/dev/null 2>"$work/migrate.log"
  targets=()
  for replica in 1 2 3; do
    port=$((PORT_BASE + replica))
    "$bin/algoagent" --no-migrate --bind "127.0.0.1:$port" serve 2>"$work/replica-$replica-$percent.log" &
    pids+=($!)
    targets+=(--target "http://127.0.0.1:$port")
  done
  for replica in 1 2 3; do wait_for "http://127.0.0.1:$((PORT_BASE + replica))/readyz"; done

  "$bin/loadgen" chat "${targets[@]}" --sim "http://127.0.0.1:$PORT_BASE" \
    --percent "$percent" --seconds 30 --window-seconds "$WINDOW" --users 64 --deadline-seconds 25

  stop_all
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $run WITH (FORCE)" >/dev/null
done
