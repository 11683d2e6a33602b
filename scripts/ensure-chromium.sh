#!/usr/bin/env bash
# Makes sure headless Chromium is installed for the dashboard's browser tests
# (crates/hooklane/tests/dashboard.rs, which drive it over the DevTools protocol: no WebDriver),
# installing Debian's `chromium` package when it is not. Idempotent: does nothing when it is
# there. Prints the browser's path. Nothing downloads a browser of its own.
set -euo pipefail

find_chromium() {
    local candidate
    for candidate in "${CHROMIUM_BIN:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! browser=$(find_chromium); then
    sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "ensure-chromium: not root and no sudo" >&2; exit 1; }
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "ensure-chromium: installing chromium" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >&2
    browser=$(find_chromium) || { echo "ensure-chromium: installed, yet no chromium binary is found" >&2; exit 1; }
fi
echo "$browser"
