#!/usr/bin/env bash
# The 8-key scenario (3 x 15 + 5 x 60 = 345 requests per window) at 90% and
# 150% of capacity, 64 users, the default 25 s deadline, the window scaled
# to 6 s so each run takes about 30 s. Prints one table row per run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p loadgen
for percent in 90 150; do
  ./target/release/loadgen --percent "$percent" --seconds 30 --window-seconds 6 --users 64 --deadline-seconds 25
done
