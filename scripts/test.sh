#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test of every crate.
# Installs what the tests need (PostgreSQL 15 server binaries, headless Chromium) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL store and cluster tests start a throw-away cluster from these binaries.
PG_BIN="$(scripts/ensure-postgres.sh)"
export PG_BIN
# The dashboard's browser tests drive headless Chromium (they fail without it).
CHROMIUM_BIN="$(scripts/ensure-chromium.sh)"
export CHROMIUM_BIN

# A one-off build in CI gains nothing from incremental compilation, whose caches would
# double the disk the build takes.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
