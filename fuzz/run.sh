#!/usr/bin/env bash
# Runs every fuzz target (or those named) one after another, each for SECONDS seconds (75 by
# default), with its dictionary and seeds. Needs a nightly toolchain and cargo-fuzz.
#   fuzz/run.sh                   # all targets, 75 s each
#   SECONDS_EACH=600 fuzz/run.sh iam_expr
set -euo pipefail
cd "$(dirname "$0")"
seconds="${SECONDS_EACH:-75}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    args=(-max_total_time="$seconds")
    [ -f "dicts/$t.dict" ] && args+=(-dict="dicts/$t.dict")
    seeds=()
    [ -d "seeds/$t" ] && seeds+=("seeds/$t")
    echo "== $t (${seconds}s)"
    cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- "${args[@]}"
done
