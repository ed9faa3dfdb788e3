#!/usr/bin/env bash
# Runs every check and test of wid, as CI does. Installs what the tests need first, so that it
# passes on a fresh machine: run it from anywhere. Each step says when it starts and how long it
# took; a summary of what ran and what passed closes the run, whether it passed or not.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
current=""
step_started=$SECONDS
summary=()
outputs="$(mktemp -d)"

# Ends the step in hand (if any), recording its time, and starts the next.
step() {
    finish_step
    current="$*"
    step_started=$SECONDS
    printf '\n==> %s\n' "$*"
}

finish_step() {
    if [ -n "$current" ]; then
        local took=$((SECONDS - step_started))
        summary+=("ok    ${took}s  $current")
        printf '    ok (%ss)\n' "$took"
        current=""
    fi
}

report() {
    local status=$?
    if [ -n "$current" ]; then
        summary+=("FAIL  $((SECONDS - step_started))s  $current")
    fi
    printf '\n==> summary\n'
    printf '    %s\n' "${summary[@]}"
    grep -h -E '^ *Summary \[' "$outputs/rust-tests" 2>/dev/null | sed 's/^ */    Rust tests: /' || true
    tail -n 1 "$outputs/client-tests" 2>/dev/null | sed 's/^=* */    Client tests: /; s/ =*$//' || true
    if [ "$status" = 0 ]; then
        printf '    all passed in %ss\n' "$((SECONDS - started))"
    else
        printf '    FAILED (exit %s) after %ss: %s\n' "$status" "$((SECONDS - started))" "${current:-?}"
    fi
    rm -rf "$outputs"
    stop_postgres
}
source scripts/postgres.sh
trap report EXIT

step "prerequisites"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
if ! command -v gcloud >/dev/null; then
    # The gcloud compatibility tests need the Google Cloud SDK; they fail in CI without it and
    # say they are skipped elsewhere.
    echo "warning: gcloud is not on PATH; the gcloud compatibility tests cannot run" >&2
fi

step "network tools for the multi-node tests (iproute2, iptables, dnsmasq as the pods' cluster DNS; from Debian)"
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
# dnsmasq-base: the daemon alone, with no service of its own started (test_dns.py runs it).
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: ${missing[*]} missing and cannot be installed; the network-namespace tests cannot run" >&2
    fi
fi

step "python venv for the client tests (.venv, from PyPI)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

step "node packages for the client tests (tests/node, from npm)"
if command -v npm >/dev/null; then
    (cd tests/node && npm install --no-package-lock --no-audit --no-fund --silent)
else
    echo "warning: npm is not on PATH; the Node client test cannot run" >&2
fi

step "format"
cargo fmt --all --check

step "lint (builds the workspace for clippy: a few minutes on a fresh machine)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "one crypto backend (aws-lc-rs): ring must not be in the tree"
ring_tree="$(cargo tree --workspace -e normal -i ring --locked 2>/dev/null || true)"
if grep -q '^ring v' <<<"$ring_tree"; then
    echo "ring is in the dependency tree:" >&2
    echo "$ring_tree" >&2
    exit 1
fi

step "fuzz targets compile"
# Running them needs nightly and cargo-fuzz (see fuzz/README.md); checking them needs neither.
cargo check --manifest-path fuzz/Cargo.toml --target-dir target/fuzz-check

step "PostgreSQL for the store's contract, replicas and chaos tests (Debian's server, a cluster of the run's own)"
start_postgres

step "tests (Rust: unit, property and end-to-end)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$outputs/rust-tests"
else
    cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$outputs/rust-tests"
fi

step "container images (scripts/build-images.sh; buildah, podman and runc from Debian)"
if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc >/dev/null
    else
        echo "warning: buildah, podman or runc is missing and cannot be installed; the image tests cannot run" >&2
    fi
fi
if command -v buildah >/dev/null && [ "$(id -u)" = 0 ]; then
    ./scripts/build-images.sh
fi

step "client compatibility (google-auth, gcloud, Node, Rust), images, and multi-node network-namespace tests"
cargo build --locked --bin wid --bin wid-kube-fake --bin wid-google-fake
# Google's Rust auth library, in a workspace of its own (tests/rust-clients).
cargo build --locked --manifest-path tests/rust-clients/Cargo.toml --target-dir target/rust-clients
WID_BIN="$PWD/target/debug/wid" WID_KUBE_FAKE="$PWD/target/debug/wid-kube-fake" \
    WID_GOOGLE_FAKE="$PWD/target/debug/wid-google-fake" \
    WID_RUST_CLIENT="$PWD/target/rust-clients/debug/wid-rust-clients" \
    .venv/bin/python -m pytest tests/python -q -p no:cacheprovider -o console_output_style=count \
    | tee "$outputs/client-tests"
finish_step
