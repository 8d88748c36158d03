#!/usr/bin/env bash
# jsacc quickstart: one command from a fresh Debian machine to a working local cluster.
#
#   bash deploy/quickstart.sh          install what is missing, build, start a controller (with its
#                                      private Redis, HTTPS on a self-signed certificate) and one agent
#                                      (gid 1, nid 1), run a sample job, and leave the cluster running
#   bash deploy/quickstart.sh --once   the same, then stop the cluster again
#   bash deploy/quickstart.sh stop     stop the cluster (agent, its jobs, controller, private Redis)
#   bash deploy/quickstart.sh status   show what runs and where
#   bash deploy/quickstart.sh env      print `export` lines for using the cluster: eval "$(bash deploy/quickstart.sh env)"
#
# (--keep is accepted too: keeping the cluster running is the default.)
# A second run stops the cluster of the first one, rebuilds and starts it again; state (Redis data,
# TLS certificate) is kept in ./jsacc-data/quickstart/. Delete that directory for a clean slate.
#
# Environment:
#   JSACC_PORT         controller port (default: 4000, or the next free port when 4000 is taken)
#   QUICKSTART_DIR     state directory (default: <repo>/jsacc-data/quickstart)
#   QUICKSTART_RELEASE 1 = build with --release (slower to build, faster to run); default: debug build
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=quickstart
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

STATE=${QUICKSTART_DIR:-$ROOT/jsacc-data/quickstart}
DATA=$STATE/controller # jsacc --data-dir: redis.url, redis/, tls/
AGENT_DIR=$STATE/agent-1-1 # jsagent --data-dir
LOGS=$STATE/logs
RUN=$STATE/run
CERT=$DATA/tls/cert.pem
TOKEN_FILE=$STATE/agent-1-1.token
GID=1
NID=1

# The quickstart decides these itself: settings from the caller's environment must not leak into
# the processes it starts (e.g. a JSACC_REDIS pointing at a production Redis).
for v in $(compgen -e); do
    case $v in
    JSACC_PORT) ;;
    JSACC_* | JSAGENT_*) unset "$v" ;;
    esac
done
PORT_FROM_ENV=${JSACC_PORT:-}
unset JSACC_PORT
# plain log files, without terminal colour codes
export NO_COLOR=1

die() {
    printf 'quickstart: ERROR: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- process bookkeeping

pidfile() { printf '%s/%s.pid\n' "$RUN" "$1"; }

# pid_of NAME: the recorded pid of NAME, if that process is alive and runs NAME (its argv[0]).
pid_of() {
    local f pid argv0
    f=$(pidfile "$1")
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    argv0=$(head -z -n 1 "/proc/$pid/cmdline" 2>/dev/null | tr -d '\0') || return 1
    [[ ${argv0##*/} == "$1" ]] || return 1
    printf '%s\n' "$pid"
}

alive() { pid_of "$1" >/dev/null; }

# session_pids SID: every process of session SID (each process we start leads its own session,
# so this finds its children too: the private redis-server of jsacc, the jobs of jsagent).
session_pids() {
    local sid=$1 f stat rest fields
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a fields <<<"$rest"
        # after the command name: state ppid pgrp session ...
        [[ ${fields[3]:-} == "$sid" ]] && printf '%s\n' "${f//[^0-9]/}"
    done
    return 0
}

# start_bg NAME LOG CMD...: start CMD in its own session, detached from this terminal; records its pid.
start_bg() {
    local name=$1 log=$2 f
    shift 2
    f=$(pidfile "$name")
    rm -f "$f"
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$f" "$@" >>"$log" 2>&1 </dev/null &
    # wait until the wrapper has written its pid and exec'd the program
    for _ in $(seq 1 100); do
        alive "$name" && return 0
        sleep 0.05
    done
    die "could not start $name (log: $(rel "$log"))"
}

# stop_one NAME SECS: SIGTERM the process and the rest of its session, SIGKILL after SECS.
stop_one() {
    local name=$1 secs=$2 pid f left
    f=$(pidfile "$name")
    [[ -s $f ]] || return 0
    pid=$(<"$f")
    if pid=$(pid_of "$name"); then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((secs * 10))); do
            alive "$name" || break
            sleep 0.1
        done
        if alive "$name"; then
            warn "$name did not stop within ${secs}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        pid=$(<"$f")
    fi
    # leftovers of its session: jobs of the agent, the private Redis of the controller
    if [[ $pid =~ ^[0-9]+$ ]]; then
        left=$(session_pids "$pid")
        if [[ -n $left ]]; then
            # shellcheck disable=SC2086 # a list of pids
            kill -TERM $left 2>/dev/null || true
            for _ in $(seq 1 50); do
                [[ -z $(session_pids "$pid") ]] && break
                sleep 0.1
            done
            left=$(session_pids "$pid")
            # shellcheck disable=SC2086
            [[ -z $left ]] || kill -KILL $left 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

stop_cluster() {
    stop_one jsagent 30 # it finishes its outbox first
    stop_one jsacc 20   # it stops its private redis-server
    rm -f "$RUN/port" "$RUN/controller_url"
}

show_logs() {
    local f
    for f in "$LOGS"/*.log; do
        [[ -s $f ]] || continue
        printf '\n----- last 30 lines of %s -----\n' "${f#"$ROOT"/}" >&2
        tail -n 30 "$f" >&2
    done
    printf '\n' >&2
}

# ---------------------------------------------------------------- helpers

redis_url() { [[ -s $DATA/redis.url ]] && tr -d '[:space:]' <"$DATA/redis.url"; }

# shown URL: the URL with its password masked (the private Redis's URL holds one)
shown() { sed -E 's#^([a-z+]+://[^:@/]*):[^@]*@#\1:***@#' <<<"$1"; }

# rcli URL ARGS...: redis-cli against a redis:// or unix:// URL. A password in the URL reaches
# redis-cli through REDISCLI_AUTH, not its command line (/proc/<pid>/cmdline is world-readable).
rcli() {
    local url=$1 re='^([a-z]+://)([^:@/]*):([^@]*)@(.*)$' user=()
    shift
    case $url in
    unix://*) redis-cli -s "${url#unix://}" "$@" ;;
    *)
        if [[ $url =~ $re ]]; then
            [[ -n ${BASH_REMATCH[2]} ]] && user=(--user "${BASH_REMATCH[2]}")
            REDISCLI_AUTH=${BASH_REMATCH[3]} redis-cli "${user[@]}" -u "${BASH_REMATCH[1]}${BASH_REMATCH[4]}" "$@"
        else
            redis-cli -u "$url" "$@"
        fi
        ;;
    esac
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
    local p
    if [[ -n $PORT_FROM_ENV ]]; then
        port_busy "$PORT_FROM_ENV" && die "port $PORT_FROM_ENV (JSACC_PORT) is in use"
        printf '%s\n' "$PORT_FROM_ENV"
        return
    fi
    for p in $(seq 4000 4099); do
        port_busy "$p" || {
            printf '%s\n' "$p"
            return
        }
    done
    die "no free port in 4000-4099: set JSACC_PORT"
}

fingerprint() {
    command -v openssl >/dev/null 2>&1 || return 0
    openssl x509 -noout -fingerprint -sha256 -in "$1" 2>/dev/null | sed 's/^.*=//'
}

now_ms() { date +%s%3N; }

rel() { printf '%s\n' "${1#"$ROOT"/}"; }

# ---------------------------------------------------------------- commands

cmd_stop() {
    if [[ ! -s $(pidfile jsacc) && ! -s $(pidfile jsagent) ]]; then
        log "no quickstart cluster is running"
        return 0
    fi
    stop_cluster
    log "stopped (state kept in $(rel "$STATE"))"
}

cmd_env() {
    local url
    url=$(redis_url) || die "no cluster state in $(rel "$STATE"): run bash deploy/quickstart.sh"
    printf 'export JSACC_REDIS=%q\n' "$url"
    # shellcheck disable=SC2016 # $PATH is for the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "$VENV/bin"
}

cmd_status() {
    local name pid
    for name in jsacc jsagent; do
        if pid=$(pid_of "$name"); then
            printf '%-8s running, pid %s, log %s\n' "$name" "$pid" "$(rel "$LOGS/$name.log")"
        else
            printf '%-8s not running\n' "$name"
        fi
    done
    [[ -s $RUN/controller_url ]] && printf 'controller %s (CA cert %s)\n' "$(<"$RUN/controller_url")" "$(rel "$CERT")"
    local url
    if url=$(redis_url); then
        if rcli "$url" PING 2>/dev/null | grep -q PONG; then
            printf 'redis      %s (answers)\n' "$(shown "$url")"
        else
            printf 'redis      %s (recorded, not answering)\n' "$(shown "$url")"
        fi
    fi
    return 0
}

STARTED=0
ONCE=0
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc != 0 && STARTED)); then
        printf '\nquickstart: FAILED (exit %s). Logs are in %s.\n' "$rc" "$(rel "$LOGS")" >&2
        show_logs
        log "stopping what this run started"
        stop_cluster || true
    elif ((STARTED && ONCE)); then
        stop_cluster || true
        log "cluster stopped (--once)"
    fi
    exit "$rc"
}

cmd_start() {
    mkdir -p "$DATA" "$AGENT_DIR" "$LOGS" "$RUN"

    # 1. what a fresh Debian machine lacks
    ensure_pkgs redis-server=redis-server redis-cli=redis-tools curl=curl setsid=util-linux python3=python3 ||
        die "could not install the required packages"
    ensure_cargo || die "cargo not found"

    # 2. build (debug by default: on a 2-core machine a release build of the workspace takes several
    #    times longer, and a debug build is plenty for a local cluster; QUICKSTART_RELEASE=1 for release)
    local profile_dir=debug cargo_flags=()
    if [[ ${QUICKSTART_RELEASE:-0} == 1 ]]; then
        profile_dir=release
        cargo_flags=(--release)
    fi
    log "building jsacc and jsagent (cargo build ${cargo_flags[*]} --bins -p controller -p node-agent)"
    cargo build "${cargo_flags[@]}" --bins -p controller -p node-agent </dev/null || die "cargo build failed"
    local target
    target=$(cargo_target_dir)/$profile_dir
    JSACC=$target/jsacc
    JSAGENT=$target/jsagent
    [[ -x $JSACC && -x $JSAGENT ]] || die "built binaries not found in $target"

    # 3. the Python client (jsctl), in a venv at the repository root
    ensure_venv "" >"$LOGS/pip.log" 2>&1 || {
        tail -n 30 "$LOGS/pip.log" >&2
        die "could not install the Python client (log: $(rel "$LOGS/pip.log"))"
    }

    # 4. a cluster from an earlier run goes first (same state dir, same port)
    if alive jsacc || alive jsagent; then
        log "stopping the cluster of the previous run"
        stop_cluster
    fi

    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    STARTED=1

    # 5. the controller: private Redis (no -r), HTTPS with a self-signed certificate made on first start
    PORT=$(pick_port)
    : >"$LOGS/jsacc.log"
    : >"$LOGS/jsagent.log"
    log "starting jsacc on port $PORT (log: $(rel "$LOGS/jsacc.log"))"
    start_bg jsacc "$LOGS/jsacc.log" "$JSACC" -p "$PORT" --data-dir "$DATA"
    printf '%s\n' "$PORT" >"$RUN/port"

    local deadline=$((SECONDS + 90)) host="" h insecure_ok=0
    while ((SECONDS < deadline)); do
        alive jsacc || die "jsacc exited during start-up"
        if [[ -s $CERT ]]; then
            for h in 127.0.0.1 localhost; do
                if curl -fsS --max-time 3 --cacert "$CERT" "https://$h:$PORT/readyz" >/dev/null 2>&1; then
                    host=$h
                    break 2
                fi
            done
            curl -kfsS --max-time 3 "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && insecure_ok=1
        fi
        sleep 0.3
    done
    if [[ -z $host ]]; then
        ((insecure_ok)) && die "jsacc answers /readyz, but its certificate $(rel "$CERT") verifies neither for 127.0.0.1 nor for localhost"
        die "jsacc not ready within 90 s (no 200 from https://127.0.0.1:$PORT/readyz)"
    fi
    CONTROLLER=https://$host:$PORT
    printf '%s\n' "$CONTROLLER" >"$RUN/controller_url"
    local url
    url=$(redis_url) || die "jsacc is ready but wrote no $(rel "$DATA/redis.url")"
    log "jsacc ready at $CONTROLLER, private Redis at $(shown "$url") (full URL in $(rel "$DATA/redis.url"))"

    # 6. a token for agent 1:1 (the last stdout line of `jsacc token add`)
    local out token
    out=$("$JSACC" token add --gid "$GID" --nid "$NID" --data-dir "$DATA" 2>"$LOGS/token.log") ||
        die "jsacc token add failed (log: $(rel "$LOGS/token.log"))"
    token=$(printf '%s\n' "$out" | tail -n 1 | tr -d '[:space:]')
    [[ -n $token ]] || die "jsacc token add printed no token"
    (
        umask 077
        printf '%s\n' "$token" >"$TOKEN_FILE"
    )

    # 7. the agent
    local t0
    t0=$(now_ms)
    log "starting jsagent gid $GID nid $NID (log: $(rel "$LOGS/jsagent.log"))"
    start_bg jsagent "$LOGS/jsagent.log" "$JSAGENT" --controller "$CONTROLLER" --gid "$GID" --nid "$NID" \
        --token-file "$TOKEN_FILE" --ca-cert "$CERT" --data-dir "$AGENT_DIR"
    local score=""
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        alive jsagent || die "jsagent exited during start-up"
        score=$(rcli "$url" --no-raw ZSCORE agents "$GID:$NID" 2>/dev/null | tr -dc '0-9.' || true)
        if [[ -n $score ]] && ((${score%.*} >= t0)); then break; fi
        score=""
        sleep 0.3
    done
    [[ -n $score ]] || die "jsagent did not register with the controller within 60 s"
    log "agent $GID:$NID is online"

    # 8. sample jobs through the Python client
    export JSACC_REDIS=$url
    local jsctl=$VENV/bin/jsctl
    printf '\n$ jsctl ping --gid %s --nid %s\n' "$GID" "$NID"
    timeout 60 "$jsctl" ping --gid "$GID" --nid "$NID" || die "jsctl ping failed"
    printf '\n$ jsctl exec --gid %s --nid %s -- uname -a\n' "$GID" "$NID"
    timeout 60 "$jsctl" exec --gid "$GID" --nid "$NID" -- uname -a || die "jsctl exec failed"
    printf '\n'

    if ((ONCE)); then
        log "sample jobs OK"
        return 0
    fi

    local fp
    fp=$(fingerprint "$CERT")
    cat <<EOF
The quickstart cluster is running.
  controller  $CONTROLLER  pid $(pid_of jsacc)  log $(rel "$LOGS/jsacc.log")
  Redis       $(shown "$url")  (private, started and stopped by jsacc; full URL in $(rel "$DATA/redis.url"))
  agent       gid $GID nid $NID  pid $(pid_of jsagent)  log $(rel "$LOGS/jsagent.log")
  CA cert     $(rel "$CERT")${fp:+  SHA-256 $fp}
  agent token $(rel "$TOKEN_FILE")

Use it:
  eval "\$(bash deploy/quickstart.sh env)"     # sets JSACC_REDIS, puts jsctl on PATH
  jsctl agents
  jsctl exec --gid $GID --nid $NID -- ls -l /tmp
  redis-cli -u \$JSACC_REDIS LPUSH cmds_queue '{"id":"j1","gid":$GID,"nid":$NID,"cmd":"execute","args":{"cmd":"/bin/echo","args":["hi"]}}'
  redis-cli -u \$JSACC_REDIS BLPOP cmds_queue_j1 10
  curl --cacert $(rel "$CERT") $CONTROLLER/metrics

Stop it:
  bash deploy/quickstart.sh stop
EOF
}

main() {
    local action=start
    while (($#)); do
        case $1 in
        start) action=start ;;
        stop) action=stop ;;
        status) action=status ;;
        env) action="env" ;;
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
    case $action in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    esac
}

main "$@"
