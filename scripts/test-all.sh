#!/usr/bin/env bash
# Run every test of jsacc, installing what a fresh Debian machine lacks.
#
#   bash scripts/test-all.sh
#
# Steps (each prints a summary line at the end; the script exits non-zero if any step failed):
#   deps        redis-server, lua5.4, python3 + venv, a C compiler (apt-get, only when missing)
#   python-env  .venv with the client installed: pip install -e 'client-py[test]'
#   cargo-build cargo build --bins                     (workspace, debug)
#   cargo-test  cargo test --workspace --no-fail-fast
#   pytest      .venv/bin/python -m pytest client-py/tests -q
#   lint        scripts/lint.sh: cargo fmt --check, cargo clippy -D warnings, flake8
#   wine        jsagent.exe built by scripts/windows-agent.sh, run under Wine by the e2e test `wine`
# Works non-interactively (CI=true, no stdin) and from any working directory.
#
# Environment:
#   TEST_ALL_STEP_TIMEOUT  seconds one step may take before it is stopped and fails (default 1800)
#   TEST_ALL_ONLY          space-separated step names to run (others are reported as skipped)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
LOG_TAG=test-all
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export PYTHONDONTWRITEBYTECODE=1
STEP_TIMEOUT=${TEST_ALL_STEP_TIMEOUT:-1800}

declare -a SUMMARY=()
FAILED=0

# step NAME CMD...: run one step, record OK / FAILED with its duration.
step() {
    local name=$1 t0 rc
    shift
    if [[ -n ${TEST_ALL_ONLY:-} && " $TEST_ALL_ONLY " != *" $name "* ]]; then
        SUMMARY+=("$(printf '%-8s %-12s' SKIPPED "$name") (not in TEST_ALL_ONLY)")
        return 0
    fi
    printf '\n=== test-all: %s ===\n' "$name"
    t0=$SECONDS
    "$@" </dev/null
    rc=$?
    if ((rc == 0)); then
        SUMMARY+=("$(printf '%-8s %-12s %5ss' OK "$name" $((SECONDS - t0)))")
    else
        SUMMARY+=("$(printf '%-8s %-12s %5ss  (exit %s)' FAILED "$name" $((SECONDS - t0)) "$rc")")
        FAILED=1
    fi
    return "$rc"
}

skip() {
    SUMMARY+=("$(printf '%-8s %-12s' SKIPPED "$1") ($2)")
    FAILED=1
}

# Stop a step that hangs (e.g. a stuck end-to-end test) instead of eating the whole CI budget.
with_timeout() { timeout --kill-after=30 "$STEP_TIMEOUT" "$@"; }

deps() {
    ensure_cargo || return 1
    # redis-server (tests start their own), lua5.4 (execute_js_lua), curl; a C compiler for bundled SQLite
    ensure_pkgs redis-server=redis-server redis-cli=redis-tools lua5.4=lua5.4 python3=python3 \
        curl=curl cc=gcc dpkg:libc6-dev=libc6-dev || return 1
    # headless Chromium and its driver for the dashboard test (client-py/tests/test_dashboard.py)
    ensure_pkgs chromium=chromium chromedriver=chromium-driver || return 1
    # Debian's own python3 makes no venv without python3-venv (ensure_venv also retries with it)
    if [[ $(command -v python3) == /usr/bin/python3 ]]; then
        ensure_pkgs dpkg:python3-venv=python3-venv || return 1
    fi
    printf 'cargo %s | %s | %s | %s\n' "$(cargo --version | cut -d' ' -f2)" \
        "$(redis-server --version | cut -d' ' -f1-3)" "$(lua5.4 -v 2>&1 | cut -d' ' -f1-2)" "$(python3 --version)"
}

python_env() { ensure_venv "[test]" && "$VENV/bin/python" -m pytest --version; }

cargo_build() { with_timeout cargo build --bins; }

cargo_test() { with_timeout cargo test --workspace --no-fail-fast; }

pytest_run() {
    local rc
    with_timeout "$VENV/bin/python" -m pytest client-py/tests -q
    rc=$?
    if ((rc == 5)); then
        # pytest's "no tests collected": say so loudly, but do not fail the run for it
        warn "pytest collected no tests in client-py/tests"
        return 0
    fi
    return "$rc"
}

# The Windows agent under Wine: installs the cross toolchain and Wine (scripts/windows-agent.sh
# setup), builds jsagent.exe, and runs the e2e test `wine` against it (ignored in plain runs).
wine_test() {
    local exe
    bash scripts/windows-agent.sh setup || return 1
    exe=$(with_timeout bash scripts/windows-agent.sh build) || return 1
    export WINEPREFIX=${WINEPREFIX:-/tmp/jsacc-wineprefix} WINEDEBUG=-all
    # A new prefix is finished and its registry (the services' PATH) saved before the tests
    # start: they end by killing the wineserver, which would lose what it had not written yet.
    with_timeout wineboot -u >/dev/null 2>&1
    with_timeout wineserver -w
    JSACC_WINDOWS_AGENT="$ROOT/$exe" with_timeout cargo test -p tests --test e2e wine -- --ignored --nocapture
}

main() {
    # where tests that start real jsacc/jsagent processes find the freshly built binaries
    # (client-py/tests/conftest.py reads JSACC_BIN_DIR; they are on PATH too)
    local target
    target=$(cargo_target_dir)/debug
    export PATH="$target:$PATH"
    export JSACC_BIN_DIR="$target"

    local venv_ok=1 build_ok=1
    # a failed deps step is reported, and the steps that need what it could not install fail on their own
    step deps deps
    step python-env python_env || venv_ok=0
    step cargo-build cargo_build || build_ok=0
    if ((build_ok)); then
        step cargo-test cargo_test
    else
        skip cargo-test "cargo build failed"
    fi
    if ((venv_ok)); then
        step pytest pytest_run
    else
        skip pytest "no Python environment"
    fi
    step lint bash scripts/lint.sh
    if ((build_ok)); then
        step wine wine_test
    else
        skip wine "cargo build failed"
    fi

    printf '\n=== test-all: summary ===\n'
    printf 'test-all: %s\n' "${SUMMARY[@]}"
    if ((FAILED)); then
        printf 'test-all: FAILED\n'
        return 1
    fi
    printf 'test-all: every step OK\n'
}

main "$@"
