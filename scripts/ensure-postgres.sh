#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) that the PostgreSQL
# store tests start a throw-away cluster with are installed; installs Debian's
# postgresql-15 (or, failing that, the distribution's default `postgresql`) when they are
# not. Idempotent: does nothing when they are there. Prints the binaries' directory.
#
# The tests find the binaries the same way: $PG_BIN, /usr/lib/postgresql/15/bin,
# `pg_config --bindir`, the newest /usr/lib/postgresql/*/bin. When they run as root they
# run the server as the `postgres` user, which the package creates.
set -euo pipefail

find_server() {
    local dirs=() dir
    [[ -n "${PG_BIN:-}" ]] && dirs+=("$PG_BIN")
    dirs+=(/usr/lib/postgresql/15/bin)
    if command -v pg_config >/dev/null 2>&1; then
        dirs+=("$(pg_config --bindir 2>/dev/null || true)")
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
        dirs+=("$dir")
    done
    for dir in "${dirs[@]}"; do
        if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if ! dir=$(find_server); then
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "ensure-postgres: not root and no sudo" >&2; exit 1; }
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "ensure-postgres: installing the PostgreSQL server" >&2
    "${sudo[@]}" apt-get update -qq
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql-15 >&2; then
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql >&2
    fi
    dir=$(find_server) || { echo "ensure-postgres: installed, yet initdb/pg_ctl/postgres are not found" >&2; exit 1; }
fi

if [[ "$(id -u)" -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    echo "ensure-postgres: running as root, but there is no postgres user to run the server as" >&2
    exit 1
fi
echo "$dir"
