#!/usr/bin/env bash
# The lints, run by scripts/test-all.sh (step `lint`) and so by CI:
#   cargo fmt --all --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   the fuzz targets compile: RUSTC_BOOTSTRAP=1 cargo check --bins of each */fuzz crate
#   (cargo-fuzz crates outside the workspace; quiet unless one fails)
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
# Checked, not built, so neither cargo-fuzz nor a nightly toolchain is needed; one target dir
# for all of them, so what they share is compiled once.
fuzz_targets() {
    local manifest out rc=0
    out=$(mktemp) || return 1
    for manifest in */fuzz/Cargo.toml; do
        if ! RUSTC_BOOTSTRAP=1 cargo check --quiet --manifest-path "$manifest" --bins \
            --target-dir target/fuzz-check >"$out" 2>&1; then
            printf 'the fuzz targets of %s do not compile:\n' "${manifest%/Cargo.toml}"
            cat "$out"
            rc=1
        fi
    done
    rm -f "$out"
    return "$rc"
}
check fuzz-targets fuzz_targets
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
