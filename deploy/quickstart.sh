#!/usr/bin/env bash
# jsacc quickstart: one command from a fresh Debian machine to a working local cluster.
#
#   bash deploy/quickstart.sh          install what is missing, build, start `jsacc dev` in the
#                                      background (a private Redis, a controller on HTTPS and one
#                                      agent, gid 1 nid 1), run a sample job, and leave it running
#   bash deploy/quickstart.sh --once   the same, then stop the cluster again
#   bash deploy/quickstart.sh stop     stop the cluster (SIGTERM to `jsacc dev`, which stops the rest)
#   bash deploy/quickstart.sh env      print `export` lines for using the cluster: eval "$(bash deploy/quickstart.sh env)"
#
# `jsacc dev` does the work (`jsacc dev --help`); in a terminal you can run it yourself instead,
# in the foreground, and stop it with Ctrl-C. A second run stops the cluster of the first one,
# rebuilds and starts it again; state (Redis data, TLS certificate, agent files, the log dev.log)
# is kept in ./jsacc-data/quickstart/. Delete that directory for a clean slate.
#
# Environment:
#   JSACC_PORT         controller port (default: 4000, or the next free port up to 4099)
#   QUICKSTART_DIR     state directory (default: <repo>/jsacc-data/quickstart)
#   QUICKSTART_RELEASE 1 = build with --release (slower to build, faster to run); default: debug build
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=quickstart
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

STATE=${QUICKSTART_DIR:-$ROOT/jsacc-data/quickstart}
LOG=$STATE/dev.log
PIDFILE=$STATE/dev.pid # written and removed by jsacc dev
GID=1
NID=1

# The quickstart decides these itself: settings from the caller's environment must not leak into
# the processes it starts (e.g. a JSACC_REDIS pointing at a production Redis).
PORT=${JSACC_PORT:-}
for v in $(compgen -e); do
    case $v in JSACC_* | JSAGENT_*) unset "$v" ;; esac
done

die() {
    printf 'quickstart: ERROR: %s\n' "$*" >&2
    exit 1
}

rel() { printf '%s\n' "${1#"$ROOT"/}"; }

# The pid of the running `jsacc dev` of $STATE, if any.
dev_pid() {
    local pid
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == jsacc ]] || return 1
    printf '%s\n' "$pid"
}

# jsacc dev stops the agent (30 s grace), the controller and the Redis itself; SIGKILL is the
# last resort and leaves those running.
cmd_stop() {
    local pid
    pid=$(dev_pid) || {
        log "no quickstart cluster is running"
        return 0
    }
    log "stopping jsacc dev (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || {
            log "stopped (state kept in $(rel "$STATE"))"
            return 0
        }
        sleep 0.1
    done
    warn "jsacc dev did not stop within 60 s: SIGKILL (its agent and Redis may be left running)"
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_env() {
    [[ -s $STATE/redis.url ]] || die "no cluster state in $(rel "$STATE"): run bash deploy/quickstart.sh"
    # shellcheck disable=SC2016 # the URL holds the password: read from its 0600 file when evaluated
    printf 'export JSACC_REDIS="$(cat %q)"\n' "$STATE/redis.url"
    # shellcheck disable=SC2016 # $PATH is for the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "$VENV/bin"
}

# Installs what is missing and builds; sets JSACC.
prepare() {
    ensure_pkgs redis-server=redis-server setsid=util-linux python3=python3 ||
        die "could not install the required packages"
    ensure_cargo || die "cargo not found"
    # debug by default: on a 2-core machine a release build takes several times longer
    local profile_dir=debug cargo_flags=()
    if [[ ${QUICKSTART_RELEASE:-0} == 1 ]]; then
        profile_dir=release
        cargo_flags=(--release)
    fi
    log "building jsacc and jsagent (cargo build ${cargo_flags[*]} --bins -p controller -p node-agent)"
    cargo build "${cargo_flags[@]}" --bins -p controller -p node-agent </dev/null || die "cargo build failed"
    JSACC=$(cargo_target_dir)/$profile_dir/jsacc
    [[ -x $JSACC ]] || die "built binary not found: $JSACC"
    mkdir -p "$STATE"
    ensure_venv "" >"$STATE/pip.log" 2>&1 || {
        tail -n 30 "$STATE/pip.log" >&2
        die "could not install the Python client (log: $(rel "$STATE/pip.log"))"
    }
}

# Starts `jsacc dev` in its own session, detached from this terminal, and waits for its ready line.
start_dev() {
    local pid
    log "starting jsacc dev (log: $(rel "$LOG"))"
    setsid "$JSACC" dev --data-dir "$STATE" ${PORT:+-p "$PORT"} >"$LOG" 2>&1 </dev/null &
    pid=$!
    STARTED=$pid
    for _ in $(seq 1 1200); do
        grep -qx 'jsacc dev: ready' "$LOG" && return 0
        # ($! is jsacc itself: setsid forks only when its caller leads a process group)
        kill -0 "$pid" 2>/dev/null || dev_pid >/dev/null || {
            tail -n 40 "$LOG" >&2
            die "jsacc dev exited during start-up (log: $(rel "$LOG"))"
        }
        sleep 0.1
    done
    tail -n 40 "$LOG" >&2
    die "jsacc dev was not ready within 120 s (log: $(rel "$LOG"))"
}

STARTED=""
ONCE=0
on_exit() {
    local rc=$?
    trap - EXIT
    if [[ -n $STARTED ]] && ((rc != 0 || ONCE)); then
        ((rc == 0)) || printf '\nquickstart: FAILED (exit %s); log: %s\n' "$rc" "$(rel "$LOG")" >&2
        cmd_stop || true
    fi
    exit "$rc"
}

cmd_start() {
    prepare
    if dev_pid >/dev/null; then
        log "stopping the cluster of the previous run"
        cmd_stop
    fi
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_dev

    # sample jobs through the Python client
    JSACC_REDIS=$(<"$STATE/redis.url")
    export JSACC_REDIS
    local jsctl=$VENV/bin/jsctl
    printf '\n$ jsctl ping --gid %s --nid %s\n' "$GID" "$NID"
    timeout 60 "$jsctl" ping --gid "$GID" --nid "$NID" || die "jsctl ping failed"
    printf '\n$ jsctl exec --gid %s --nid %s -- uname -a\n' "$GID" "$NID"
    timeout 60 "$jsctl" exec --gid "$GID" --nid "$NID" -- uname -a || die "jsctl exec failed"
    printf '\n'
    if ((ONCE)); then
        log "sample jobs OK; stopping (--once)"
        return 0
    fi
    # what jsacc dev printed about the cluster, from its log
    sed -n '/^jsacc dev: a local cluster runs/,/^  redis/p' "$LOG"
    cat <<EOF

Use it:
  eval "\$(bash deploy/quickstart.sh env)"     # sets JSACC_REDIS, puts jsctl on PATH
  jsctl agents
  jsctl exec --gid $GID --nid $NID -- ls -l /tmp

Stop it:
  bash deploy/quickstart.sh stop
EOF
}

main() {
    local action=start
    while (($#)); do
        case $1 in
        start | stop | env) action=$1 ;;
        --keep) ONCE=0 ;;
        --once | --no-keep) ONCE=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            return 0
            ;;
        *) die "unknown argument: $1 (try --help)" ;;
        esac
        shift
    done
    "cmd_$action"
}

main "$@"
