# Shared by the load and comparison scripts (sourced, not run).

# Waits up to a minute for a URL to answer.
wait_for() { # url
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done
  echo "not answering: $1" >&2
  exit 1
}

# Stops every process in `pids` and forgets them.
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

# One algoagent on SQLite and the embedded limiter, four keys load-key-1..4
# (ids k1..k4) in $work/keys.json, fair use out of the way; its pid in
# `server_pid` and `pids`.
start_algoagent() { # bind_port sim_port name
  env -i PATH="$PATH" HOME="$HOME" \
    DATABASE_URL="sqlite://$work/algoagent-$3.db?mode=rwc" DATA_DIR="$work/data-$3" \
    JWT_SECRET="$(head -c 32 /dev/urandom | base64)" KEYS_FILE="$work/keys.json" \
    GEMINI_KEY_K1=load-key-1 GEMINI_KEY_K2=load-key-2 GEMINI_KEY_K3=load-key-3 GEMINI_KEY_K4=load-key-4 \
    GEMINI_BASE_URL="http://127.0.0.1:$2" \
    USER_RPM_DEFAULT=10000000 USER_BURST_DEFAULT=10000000 USER_TPM_DEFAULT=1000000000 RUST_LOG=warn \
    "$bin/algoagent" --bind "127.0.0.1:$1" serve 2>"$work/algoagent-$3.log" &
  server_pid=$!
  pids+=("$server_pid")
  wait_for "http://127.0.0.1:$1/readyz"
}
