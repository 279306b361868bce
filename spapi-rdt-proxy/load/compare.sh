#!/usr/bin/env bash
# Load comparison on loopback: spapi-rdt-proxy against nginx as a reverse proxy, both in front of
# the same canned upstream (nginx answering LWA, the Tokens API and two SP-API operations from
# memory). See README.md in this directory; the figures go in docs/SIDECAR.md.
#
#   spapi-rdt-proxy/load/compare.sh                     # 5 rounds of 10 s, then a 60 s soak
#   ROUNDS=1 DURATION=3s SOAK=10s spapi-rdt-proxy/load/compare.sh   # a quick check
#
# The Markdown summary goes to stdout, progress to stderr. Installs nginx, wrk, curl, procps and
# python3 with apt-get when they are missing, and builds the sidecar in release mode
# (CARGO_TARGET_DIR is respected; SIDECAR_BIN=path skips the build, SIDECAR_COMMIT=... names the
# commit it was built from).
set -euo pipefail

ROUNDS=${ROUNDS:-5}                 # interleaved rounds
DURATION=${DURATION:-10s}           # each wrk run
CONNECTIONS=${CONNECTIONS:-50}      # wrk -c
THREADS=${THREADS:-2}               # wrk -t
WARMUP=${WARMUP:-2s}                # one wrk run per target before the first round
PAUSE=${PAUSE:-1}                   # seconds between runs
SOAK=${SOAK:-60s}                   # wrk load on the sidecar with idle and slow clients mixed in
IDLE_CLIENTS=${IDLE_CLIENTS:-200}   # connections opened and left idle during the soak
SLOW_CLIENTS=${SLOW_CLIENTS:-5}     # connections trickling a request head one byte a second
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
SIDECAR_PORT=${SIDECAR_PORT:-18083}
KEEP=${KEEP:-0}                     # 1: keep the temporary directory (configs, logs)

UNRESTRICTED_PATH='/catalog/2022-04-01/items/B07N4M94KL?marketplaceIds=ATVPDKIKX0DER'
RESTRICTED_PATH=/orders/v0/orders/902-3159896-1390916/address

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

log() { printf '[compare] %s\n' "$*" >&2; }
die() {
    printf '[compare] FAILED: %s\n' "$*" >&2
    exit 1
}

load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v pgrep >/dev/null || missing+=(procps)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing ${missing[*]}, and not root to install them"
        sudo=(sudo)
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y "${missing[@]}" >&2 ||
        { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y "${missing[@]}" >&2; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

built=
if [[ -z ${SIDECAR_BIN:-} ]]; then
    built=1
    log "building spapi-rdt-proxy (release)"
    (cd "$repo" && cargo build --release -p spapi-rdt-proxy >&2)
    target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    SIDECAR_BIN=$target_dir/release/spapi-rdt-proxy
fi
[[ -x $SIDECAR_BIN ]] || die "no sidecar binary at $SIDECAR_BIN"

# --- processes ---------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/spapi-rdt-load.XXXXXX")
chmod 755 "$work" # nginx workers may run as another user
sidecar_pid=
clients_pid=
cleanup() {
    set +e
    [[ -n $clients_pid ]] && kill "$clients_pid" 2>/dev/null && wait "$clients_pid" 2>/dev/null
    [[ -n $sidecar_pid ]] && kill "$sidecar_pid" 2>/dev/null && wait "$sidecar_pid" 2>/dev/null
    for name in proxy upstream; do
        if [[ -s $work/$name.pid ]]; then
            local pid
            pid=$(<"$work/$name.pid")
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    if [[ $KEEP == 1 ]]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$UPSTREAM_PORT" "$NGINX_PORT" "$SIDECAR_PORT"; do
    port_free "$port" || die "port $port is in use (set UPSTREAM_PORT, NGINX_PORT, SIDECAR_PORT)"
done

wait_http() { # [curl options] URL: waits until it answers 2xx
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$@" 2>/dev/null && return 0
        sleep 0.1
    done
    die "${*: -1} did not answer"
}

fill() { # template output: fills in the placeholders
    sed -e "s|@DIR@|$work|g" -e "s|@PORT@|$2|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
        -e "s|@WORKERS@|$UPSTREAM_WORKERS|g" "$here/$1" >"$work/$3"
}
fill upstream.nginx.conf "$UPSTREAM_PORT" upstream.conf
fill proxy.nginx.conf "$NGINX_PORT" proxy.conf
"$NGINX" -p "$work" -e "$work/upstream.error.log" -c "$work/upstream.conf" ||
    die "the upstream nginx did not start: $(cat "$work/upstream.error.log")"
"$NGINX" -p "$work" -e "$work/proxy.error.log" -c "$work/proxy.conf" ||
    die "the proxy nginx did not start: $(cat "$work/proxy.error.log")"
wait_http -X POST "http://127.0.0.1:$UPSTREAM_PORT/auth/o2/token"
upstream_master=$(<"$work/upstream.pid")
proxy_master=$(<"$work/proxy.pid")

# Every feature at its default (metrics, the log at `info` (a line per request) to a file, no
# fleet, no client authentication on loopback) but usage plans: wrk sends thousands of calls a
# second, far above Amazon's plans, which pacing would hold (nginx paces nothing either). Only the
# variables set here reach it.
env -i PATH="$PATH" \
    SPAPI_CLIENT_ID=amzn1.application-oa2-client.load-test \
    SPAPI_CLIENT_SECRET=load-test-client-secret \
    SPAPI_REFRESH_TOKEN='Atzr|load-test-refresh-token' \
    "$SIDECAR_BIN" \
    --listen "127.0.0.1:$SIDECAR_PORT" \
    --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
    --lwa-url "http://127.0.0.1:$UPSTREAM_PORT/auth/o2/token" \
    --no-usage-plans \
    2>"$work/sidecar.log" &
sidecar_pid=$!
wait_http "http://127.0.0.1:$SIDECAR_PORT/readyz"
kill -0 "$sidecar_pid" || die "the sidecar stopped: $(cat "$work/sidecar.log")"

# --- measurements ------------------------------------------------------------------------------
family() { echo "$1" "$(pgrep -P "$1" | tr "\n" " ")"; } # an nginx master and its workers
cpu_ticks() { # utime + stime of the given processes (all threads), in clock ticks
    local total=0 pid stat fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}
hz=$(getconf CLK_TCK)
per_req() { # ticks_before ticks_after requests: CPU microseconds a request
    python3 -c "print(f'{($2 - $1) * 1e6 / $hz / $3:.2f}')"
}
fds() { find "/proc/$sidecar_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$sidecar_pid/status"; }
gauge() { # the sidecar's connections_open (counting the probe's own connection)
    curl -fsS "http://127.0.0.1:$SIDECAR_PORT/metrics" |
        awk '$1 == "spapi_proxy_connections_open" { print $2 }'
}
snapshot() { # label: one row of the descriptor/RSS table
    local f r
    f=$(fds)
    r=$(rss_kb)
    printf '%s\t%s\t%s\t%s\n' "$1" "$f" "$r" "$(gauge)" >>"$work/snapshots.tsv"
    log "snapshot '$1': $f descriptors, RSS $((r / 1024)) MiB"
}

# Runs wrk; fails on any error or non-2xx answer. Sets R[...] from the lua hook's RESULT line.
declare -A R
run_wrk() { # url duration connections threads
    local out=$work/wrk.$RANDOM.out line kv
    wrk -t"$4" -c"$3" -d"$2" --latency -s "$here/report.lua" "$1" >"$out" 2>&1 ||
        die "wrk $1: $(cat "$out")"
    line=$(grep '^RESULT ' "$out") || die "wrk $1 printed no result: $(cat "$out")"
    R=()
    for kv in ${line#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    if grep -q 'Non-2xx or 3xx' "$out" || ((R[err_status] + R[err_connect] + R[err_read] + \
        R[err_write] + R[err_timeout] > 0)); then
        die "wrk $1: answers that were not 2xx, or socket errors: $(cat "$out")"
    fi
    ((R[requests] > 0)) || die "wrk $1: no request answered"
    rm -f "$out"
}

url_of() { # target kind
    local port path
    [[ $1 == nginx ]] && port=$NGINX_PORT || port=$SIDECAR_PORT
    [[ $2 == restricted ]] && path=$RESTRICTED_PATH || path=$UNRESTRICTED_PATH
    echo "http://127.0.0.1:$port$path"
}

snapshot "start (LWA token fetched, no load yet)"

log "warm-up: one request, then $WARMUP of load, per target"
for kind in unrestricted restricted; do
    for target in nginx sidecar; do
        url=$(url_of "$target" "$kind")
        curl -fsS -o /dev/null "$url" || die "$target answered $url with an error"
        run_wrk "$url" "$WARMUP" "$CONNECTIONS" "$THREADS"
    done
done

: >"$work/runs.tsv"
for round in $(seq "$ROUNDS"); do
    for kind in unrestricted restricted; do
        for target in nginx sidecar; do
            sleep "$PAUSE"
            url=$(url_of "$target" "$kind")
            if [[ $target == nginx ]]; then
                read -r -a procs <<<"$(family "$proxy_master")"
            else
                procs=("$sidecar_pid")
            fi
            read -r -a upstream_procs <<<"$(family "$upstream_master")"
            cpu0=$(cpu_ticks "${procs[@]}")
            up0=$(cpu_ticks "${upstream_procs[@]}")
            run_wrk "$url" "$DURATION" "$CONNECTIONS" "$THREADS"
            cpu1=$(cpu_ticks "${procs[@]}")
            up1=$(cpu_ticks "${upstream_procs[@]}")
            cpu=$(per_req "$cpu0" "$cpu1" "${R[requests]}")
            up=$(per_req "$up0" "$up1" "${R[requests]}")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$target" "$round" \
                "${R[rps]}" "${R[p50_us]}" "${R[p99_us]}" "${R[requests]}" "$cpu" "$up" \
                >>"$work/runs.tsv"
            log "round $round $kind $target: ${R[rps]} req/s, p50 ${R[p50_us]} µs," \
                "p99 ${R[p99_us]} µs, $cpu CPU µs/req"
        done
    done
done
sleep "$PAUSE"
snapshot "after the rounds"

# --- soak --------------------------------------------------------------------------------------
log "soak: $SOAK of load with $IDLE_CLIENTS idle and $SLOW_CLIENTS slow clients"
python3 "$here/clients.py" 127.0.0.1 "$SIDECAR_PORT" "$IDLE_CLIENTS" "$SLOW_CLIENTS" \
    "$work/clients.ready" >"$work/clients.out" 2>&1 &
clients_pid=$!
for _ in $(seq 300); do [[ -e $work/clients.ready ]] && break; sleep 0.1; done
[[ -e $work/clients.ready ]] || die "the idle and slow clients did not connect: $(cat "$work/clients.out")"
snapshot "soak: idle and slow clients connected, before load"
soak_cpu0=$(cpu_ticks "$sidecar_pid")
half=$(((CONNECTIONS + 1) / 2))
(run_wrk "$(url_of sidecar unrestricted)" "$SOAK" "$half" 1 && echo "${R[requests]}" >"$work/soak.u") &
soak_u=$!
(run_wrk "$(url_of sidecar restricted)" "$SOAK" "$half" 1 && echo "${R[requests]}" >"$work/soak.r") &
soak_r=$!
peak_fds=0
peak_rss=0
while kill -0 "$soak_u" 2>/dev/null || kill -0 "$soak_r" 2>/dev/null; do
    f=$(fds)
    r=$(rss_kb)
    ((f > peak_fds)) && peak_fds=$f
    ((r > peak_rss)) && peak_rss=$r
    sleep 1
done
wait "$soak_u" || die "the soak's unrestricted load failed"
wait "$soak_r" || die "the soak's restricted load failed"
soak_cpu1=$(cpu_ticks "$sidecar_pid")
soak_requests=$(($(<"$work/soak.u") + $(<"$work/soak.r")))
printf '%s\t%s\t%s\t%s\n' "soak: peak (sampled every second)" "$peak_fds" "$peak_rss" "" \
    >>"$work/snapshots.tsv"
snapshot "soak: load over, idle and slow clients still connected"
kill "$clients_pid"
wait "$clients_pid" || true
clients_pid=
sleep 2
snapshot "after the soak, clients gone"

# --- summary -----------------------------------------------------------------------------------
metrics=$(curl -fsS "http://127.0.0.1:$SIDECAR_PORT/metrics")
if [[ -n ${SIDECAR_COMMIT:-} ]]; then
    commit=$SIDECAR_COMMIT
elif [[ -n $built ]]; then
    commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ $commit != unknown ]] && [[ -n $(git -C "$repo" status --porcelain 2>/dev/null) ]]; then
        commit="$commit (with uncommitted changes)"
    fi
else
    commit="unknown (SIDECAR_BIN=$SIDECAR_BIN; set SIDECAR_COMMIT)"
fi
cat <<EOF
### spapi-rdt-proxy vs nginx on loopback

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r); load average (1, 5, 15 min) at start: $load_at_start, at the end: $(cut -d' ' -f1-3 /proc/loadavg)
- $("$NGINX" -v 2>&1), $({ wrk -v 2>&1 || true; } | head -n1 | cut -d' ' -f1-2), $("$SIDECAR_BIN" --version) at commit $commit
- load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\`, $ROUNDS interleaved rounds (nginx, sidecar; unrestricted, then restricted); a $WARMUP warm-up per target first
- unrestricted: \`GET ${UNRESTRICTED_PATH%%\?*}\` (getCatalogItem); restricted: \`GET /orders/v0/orders/{orderId}/address\` (getOrderAddress, with a cached Restricted Data Token)
- upstream: nginx ($UPSTREAM_WORKERS worker) answering from memory; the baseline: nginx, 2 workers, kept-alive upstream pool, a static token header, access log on; the sidecar: release build, default settings, log at \`info\` to a file
- CPU µs/req: user + system CPU time of the proxy's processes during the run, divided by the requests answered

EOF
python3 "$here/summary.py" "$work/runs.tsv" "$work/snapshots.tsv"
cat <<EOF
Soak: $SOAK, \`wrk -t1 -c$half\` on each path at once ($soak_requests requests, all 2xx, $(per_req "$soak_cpu0" "$soak_cpu1" "$soak_requests") CPU µs/req), with $IDLE_CLIENTS idle connections and $SLOW_CLIENTS trickling a head one byte a second, each reopened when the sidecar closed it: $(cat "$work/clients.out").

Sidecar at the end: log $(du -h "$work/sidecar.log" | cut -f1) ($(grep -c . "$work/sidecar.log") lines, $(grep -cE ' (WARN|ERROR) ' "$work/sidecar.log" || true) warnings or errors); nginx access log $(du -h "$work/proxy.access.log" | cut -f1).

\`\`\`
$(grep -E '^spapi_proxy_(connections|clients_refused)' <<<"$metrics" || true)
$(grep -E '^spapi_[a-z_]*(token|fetch|miss|hit)[a-z_]*' <<<"$metrics" | head -n 20 || true)
\`\`\`
EOF
