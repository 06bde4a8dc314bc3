#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo fuzz
# (libFuzzer), on the stable toolchain through RUSTC_BOOTSTRAP=1, starting
# from fuzz/seeds/<target>/ and the corpus kept in fuzz/corpus/<target>/
# (not committed). Prints, per target, the executions, the time and what
# libFuzzer found; a crash leaves its input in fuzz/artifacts/<target>/:
# fix it, then keep the input in fuzz/regressions/<target>/ (replayed by
# `cargo test -p tidings-fuzz`).
#
#   bash fuzz/run.sh 300            # five minutes each
#   bash fuzz/run.sh 60 emit decode # only these
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(emit decode stored sqlite_rows nats_message http_bodies pg_rows)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/logs
status=0
for t in "${targets[@]}"; do
    if [ "$t" = pg_rows ] && [ -z "${TIDINGS_TEST_POSTGRES_URL:-}" ]; then
        echo "pg_rows: skipped (set TIDINGS_TEST_POSTGRES_URL to a PostgreSQL it may write to)"
        continue
    fi
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    # -rss_limit_mb: the oracles keep one runtime and one demo for the run.
    # The targets that open a store run a few dozen inputs a second: they
    # start from long inputs (-len_control=0) instead of growing from 4 bytes.
    extra=()
    case "$t" in sqlite_rows|pg_rows) extra=(-len_control=0 -max_len=1024) ;; esac
    cargo fuzz run --features libfuzzer -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 "${extra[@]}" \
        > "fuzz/logs/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/logs/$t.log" | grep -o '[0-9]*$')
    crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
    echo "$t: ${execs:-?} executions in ${secs} s, exit $rc, inputs in fuzz/artifacts/$t: $crashes"
    [ "$rc" -ne 0 ] && status=1
done
exit $status
