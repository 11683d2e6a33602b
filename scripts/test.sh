#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test of every crate.
# Installs what the tests need (PostgreSQL 15 server binaries) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/ensure-postgres.sh ]; then
    scripts/ensure-postgres.sh
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
