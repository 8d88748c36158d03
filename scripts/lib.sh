# shellcheck shell=bash
# Helpers shared by deploy/quickstart.sh and scripts/test-all.sh. Source it; do not run it.
# Expects ROOT (the repository root) to be set.

: "${ROOT:?ROOT must be set before sourcing scripts/lib.sh}"

log() { printf '%s: %s\n' "${LOG_TAG:-jsacc}" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${LOG_TAG:-jsacc}" "$*" >&2; }

# Run a command as root: directly when we are root, else through sudo (non-interactive).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 1
    fi
}

_APT_UPDATED=0
# apt_install PKG...: install Debian packages; runs `apt-get update` once per script run.
apt_install() {
    (($# > 0)) || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "no apt-get on this machine; install these yourself: $*"
        return 1
    fi
    log "installing: $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ((_APT_UPDATED == 0)); then
        as_root apt-get update -q </dev/null || { warn "apt-get update failed (not root and no sudo?)"; return 1; }
        _APT_UPDATED=1
    fi
    as_root apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# ensure_pkgs CHECK=PKG ...: CHECK is a command name (installed when missing from PATH) or
# `dpkg:NAME` (installed when dpkg does not list the package as installed).
ensure_pkgs() {
    local spec check pkg missing=()
    for spec in "$@"; do
        check=${spec%%=*}
        pkg=${spec#*=}
        case $check in
        dpkg:*)
            dpkg-query -W -f='${Status}' "${check#dpkg:}" 2>/dev/null | grep -q 'install ok installed' ||
                missing+=("$pkg")
            ;;
        *) command -v "$check" >/dev/null 2>&1 || missing+=("$pkg") ;;
        esac
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    # de-duplicate, keep order
    local -A seen=()
    local uniq=()
    for pkg in "${missing[@]}"; do
        [[ -n ${seen[$pkg]:-} ]] || { seen[$pkg]=1; uniq+=("$pkg"); }
    done
    apt_install "${uniq[@]}"
}

# Make `cargo` reachable (rustup installs it under ~/.cargo/bin, which a plain root shell may not have on PATH).
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
        export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || {
        warn "cargo not found: install the Rust toolchain (rustup) first"
        return 1
    }
}

# Directory where cargo puts build output.
cargo_target_dir() { printf '%s\n' "${CARGO_TARGET_DIR:-$ROOT/target}"; }

VENV=${JSACC_VENV:-$ROOT/.venv}

# ensure_venv EXTRAS: create $VENV if needed and install client-py into it (editable).
# EXTRAS is "" or "[test]". Re-installs only when client-py's packaging files changed.
ensure_venv() {
    local extras=${1:-} stamp_file stamp
    [[ -f $ROOT/client-py/pyproject.toml || -f $ROOT/client-py/setup.py ]] || {
        warn "client-py/ has no pyproject.toml yet: cannot install the Python client"
        return 1
    }
    command -v python3 >/dev/null 2>&1 || apt_install python3 || return 1
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's python3 has no ensurepip without python3-venv (or python3.X-venv).
            rm -rf "$VENV"
            local pyver
            pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv || return 1
            python3 -m venv "$VENV" || return 1
        fi
    fi
    stamp_file="$VENV/.jsacc-client${extras:+-test}.stamp"
    stamp=$(cat "$ROOT"/client-py/pyproject.toml "$ROOT"/client-py/setup.* 2>/dev/null | cksum)
    if [[ -f $stamp_file && $(<"$stamp_file") == "$stamp" ]] && "$VENV/bin/python" -c 'import jsacc' >/dev/null 2>&1; then
        return 0
    fi
    log "installing the Python client into $VENV (pip install -e client-py$extras)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT/client-py$extras" </dev/null || return 1
    printf '%s' "$stamp" >"$stamp_file"
}
