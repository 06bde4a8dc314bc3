#!/usr/bin/env bash
# The demo under twice its capacity, open loop, for SECONDS (default 60),
# built in release: prints its capacity, the statuses, the latencies, and
# how many answers given with a 200 were saved (docs/RELIABILITY.md). CI runs
# the same test for 10 s in debug (`cargo test --workspace`).
#
#   bash scripts/overload.sh        # 60 s
#   bash scripts/overload.sh 120
set -euo pipefail
cd "$(dirname "$0")/.."
TIDINGS_OVERLOAD_SECS="${1:-60}" cargo test --release -p tidings-cli --test overload -- --nocapture
