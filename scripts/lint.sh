#!/usr/bin/env bash
# The lints, run by scripts/test-all.sh (step `lint`) and so by CI:
#   cargo fmt --all --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   flake8 --max-line-length 100 over client-py (flake8 is installed into .venv when missing)
#   and, when installed (apt-get install shellcheck), ShellCheck over the shell scripts
# Exits non-zero if any check fails; runs all of them either way.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
LOG_TAG=lint
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
ensure_cargo || exit 1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

FAILED=()
check() {
    local name=$1
    shift
    printf '\n=== lint: %s ===\n' "$name"
    if "$@" </dev/null; then
        printf 'lint: OK     %s\n' "$name"
    else
        printf 'lint: FAILED %s\n' "$name"
        FAILED+=("$name")
    fi
}

check rustfmt cargo fmt --all --check
check clippy cargo clippy --workspace --all-targets -- -D warnings
flake8() {
    ensure_venv "" || return 1
    if ! "$VENV/bin/python" -m flake8 --version >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check flake8 </dev/null || return 1
    fi
    "$VENV/bin/python" -m flake8 --max-line-length 100 client-py/jsacc client-py/tests
}
check flake8 flake8
if command -v shellcheck >/dev/null 2>&1; then
    check shellcheck shellcheck -x scripts/*.sh deploy/*.sh .ci/run
else
    printf '\nlint: shellcheck not installed: skipped\n'
fi

if ((${#FAILED[@]})); then
    printf '\nlint: FAILED: %s\n' "${FAILED[*]}"
    exit 1
fi
printf '\nlint: all checks OK\n'
