#!/usr/bin/env bash
# The token path on PostgreSQL with one and with two replicas, beside SQLite with one, in one run
# (wid-bench replicas): a PostgreSQL of the run's own (scripts/postgres.sh), loopback only.
#
#   scripts/bench-replicas.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
trap stop_postgres EXIT
cargo build --release --locked -p wid -p wid-bench
start_postgres
WID_BENCH_DATABASE_URL="$WID_TEST_DATABASE_URL" target/release/wid-bench replicas "${1:-10}" "${2:-32}"
