#!/usr/bin/env bash
# Failed requests across a daemon upgrade, three ways: a plain restart (`cantila serve`
# stopped with SIGTERM and started again, binding its ports itself), a restart under
# socket activation (a small supervisor holds the listening sockets and passes them as
# LISTEN_FDS to each run, as systemd's cantila.socket does), and the hand-off (SIGHUP: the
# running daemon starts the binary on disk with its sockets and exits once it serves).
# One daemon data dir and one deployed busybox app (a 100-byte index.html); for each
# scenario, a constant request rate through the edge (open loop, spread over keep-alive
# connections; a request that fails on a reused connection is retried once on a new one,
# as a client does with an idle keep-alive connection the server closed, and counts as
# failed only if the retry fails too), the event after WARMUP seconds, COOLDOWN seconds of
# traffic after the new process serves. Scenarios are interleaved, ROUNDS times. Reports
# per run: requests, failed (after the retry), retried, p50/p99/max latency; exits 1 when
# a hand-off or an activated restart failed a request.
#
#   scripts/bench/upgrade.sh [--rounds 2] [--rate 400] [--connections 4]
#
# CANTILA_BIN=target/debug/cantila skips the release build (the counts do not depend on
# the profile much; start-up time does).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=2
RATE=400
CONNECTIONS=4
WARMUP=2
COOLDOWN=3
DEPLOY_TIMEOUT=180
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--rate REQ_PER_S] [--connections N]" >&2; exit 2 ;;
    esac
done

. scripts/bench/lib.sh
bench_need curl curl
bench_need git git
bench_need python3 python3
bench_need_engine
bench_build
bench_workdir
API_PORT=$(free_port)
EDGE_PORT=$(free_port)
TLS_PORT=$(free_port)
BASE_DOMAIN=bench.test
HOST=app.admin.$BASE_DOMAIN
LOG=$WORK/cantila.log

mkdir -p "$WORK/app/www"
python3 -c 'import sys; sys.stdout.write("v0 ".ljust(99, "x") + "\n")' >"$WORK/app/www/index.html"
bench_busybox_app "$WORK/app"
cat >"$WORK/cantila.toml" <<EOF
data_dir = "$WORK/data"
base_domain = "$BASE_DOMAIN"
api_listen = "127.0.0.1:$API_PORT"
http_listen = "127.0.0.1:$EDGE_PORT"
https_listen = "127.0.0.1:$TLS_PORT"
[tls]
mode = "off"
EOF

# The daemon's pid is the last "cantila is listening" line's (a hand-off's new process
# logs one too).
serving_pid() { grep 'cantila is listening' "$LOG" | tail -n 1 | sed -n 's/.* pid=\([0-9]*\).*/\1/p'; }
listening_count() { grep -c 'cantila is listening' "$LOG" || true; }
wait_listening() { # n: until the log has n listening lines
    for _ in $(seq 1 600); do
        [ "$(listening_count)" -ge "$1" ] && return 0
        sleep 0.05
    done
    echo "no daemon started serving; the log:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
}
wait_gone() { # pid
    for _ in $(seq 1 600); do
        kill -0 "$1" 2>/dev/null || return 0
        [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ] && return 0
        sleep 0.05
    done
    echo "process $1 did not exit" >&2
    exit 1
}
start_plain() { # the daemon binding its own ports
    "$BIN" serve --config "$WORK/cantila.toml" >>"$LOG" 2>&1 &
    PIDS+=("$!")
}

# The supervisor: holds the three sockets (api, http, https, in cantila.socket's order)
# and runs the daemon on them; SIGUSR1 restarts it (SIGTERM, wait, start), SIGTERM ends it.
cat >"$WORK/supervisor.py" <<'PY'
import os, signal, socket, subprocess, sys

config, log, binary, *ports = sys.argv[1:]
sockets = []
for port in ports:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port)))
    s.listen(4096)
    sockets.append(s)

def place():
    for i, s in enumerate(sockets):
        os.dup2(s.fileno(), 3 + i)

def start():
    script = 'export LISTEN_PID=$$ LISTEN_FDS=%d; exec "$0" "$@"' % len(sockets)
    return subprocess.Popen(["bash", "-c", script, binary, "serve", "--config", config],
                            stdout=subprocess.DEVNULL, stderr=open(log, "a"),
                            preexec_fn=place, pass_fds=tuple(range(3, 3 + len(sockets))))

child = start()
restart = [False]
signal.signal(signal.SIGUSR1, lambda *_: restart.__setitem__(0, True))
signal.signal(signal.SIGTERM, lambda *_: (child.terminate(), child.wait(), sys.exit(0)))
while True:
    signal.pause()
    if restart[0]:
        restart[0] = False
        child.terminate()
        child.wait()
        child = start()
PY

# The load: as scripts/bench/redeploy.sh's, plus the one retry on a reused connection.
cat >"$WORK/load.py" <<'PY'
import http.client, json, os, sys, threading, time

port, host, rate, conns, stop_file, out = sys.argv[1:7]
port, rate, conns = int(port), float(rate), int(conns)
t0 = time.time() + 0.1
results = [[] for _ in range(conns)]

def once(conn):
    fresh = conn is None
    if fresh:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        response.read()
        if response.will_close:
            conn.close()
            conn = None
        return conn, response.status, None, fresh
    except Exception as exc:
        conn.close()
        return None, None, type(exc).__name__ + (": " + str(exc) if str(exc) else ""), fresh

def worker(k):
    conn, i = None, k
    while not os.path.exists(stop_file):
        due = t0 + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        start = time.time()
        conn, status, error, fresh = once(conn)
        retried = False
        if error is not None and not fresh:
            retried = True
            conn, status, error, _ = once(None)
        results[k].append((start - t0, time.time() - start, status, error, retried))
        i += conns
    if conn is not None:
        conn.close()

threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
json.dump([row for per in results for row in per], open(out, "w"))
PY

# One scenario: load, the event, until the new process serves, COOLDOWN, the figures.
: >"$WORK/results.txt"
measure() { # name event-function
    local name=$1 event=$2
    rm -f "$WORK/stop"
    python3 "$WORK/load.py" "$EDGE_PORT" "$HOST" "$RATE" "$CONNECTIONS" "$WORK/stop" "$WORK/load.json" &
    local load=$!
    sleep "$WARMUP"
    local before
    before=$(listening_count)
    "$event"
    wait_listening $((before + 1))
    sleep "$COOLDOWN"
    touch "$WORK/stop"
    wait "$load"
    python3 - "$WORK/load.json" "$name" "$WORK/failed.tsv" >>"$WORK/results.txt" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
failed = [r for r in rows if r[3] is not None or not (r[2] and 200 <= r[2] < 300)]
retried = sum(1 for r in rows if r[4])
lat = sorted(r[1] * 1000 for r in rows)
pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
span = (max(r[0] for r in failed) - min(r[0] for r in failed)) if failed else 0.0
kinds = sorted({(r[3] or str(r[2])).split(":")[0] for r in failed})
open(sys.argv[3], "a").write(f"{sys.argv[2]}\t{len(failed)}\n")
print(f"{sys.argv[2]:<20} {len(rows):>8} {len(failed):>7} {retried:>8} {pct(50):>8.1f} {pct(99):>8.1f} {lat[-1]:>9.1f} {span:>8.2f}  {','.join(kinds)}")
PY
}
plain_restart() {
    local pid
    pid=$(serving_pid)
    kill -TERM "$pid"
    wait_gone "$pid"
    start_plain
}
hand_off() {
    local pid
    pid=$(serving_pid)
    kill -HUP "$pid"
}
activated_restart() { kill -USR1 "$SUPERVISOR"; }

start_plain
wait_listening 1
bench_wait_api "http://127.0.0.1:$API_PORT" "$WORK/data"
PROJECT_ID=$("$BIN" projects create app --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$BIN" git connect app "$WORK/app" --branch main >/dev/null
timeout "$DEPLOY_TIMEOUT" "$BIN" deploy app --follow >"$WORK/deploy.log" 2>&1 || { tail -n 20 "$WORK/deploy.log" >&2; exit 1; }
for _ in $(seq 1 100); do
    [ "$(curl -s -H "Host: $HOST" "http://127.0.0.1:$EDGE_PORT/" | cut -c1-3)" = "v0 " ] && break
    sleep 0.1
done

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round/$ROUNDS" >&2
    measure "plain restart" plain_restart
    measure "hand-off (SIGHUP)" hand_off
    # The hand-off's new process is no child of this shell: stop it by its pid.
    pid=$(serving_pid)
    kill -TERM "$pid"
    wait_gone "$pid"
    before=$(listening_count)
    python3 "$WORK/supervisor.py" "$WORK/cantila.toml" "$LOG" "$BIN" "$API_PORT" "$EDGE_PORT" "$TLS_PORT" &
    SUPERVISOR=$!
    PIDS+=("$SUPERVISOR")
    wait_listening $((before + 1))
    measure "activated restart" activated_restart
    kill -TERM "$SUPERVISOR"
    wait "$SUPERVISOR" 2>/dev/null || true
    start_plain
    wait_listening $((before + 3))
done
# The last plain daemon stops with the work dir's cleanup.
PIDS+=("$(serving_pid)")

echo
echo "machine: $(nproc) cores; $RATE req/s over $CONNECTIONS keep-alive connections; binary $BIN"
printf '%-20s %8s %7s %8s %8s %8s %9s %8s  %s\n' scenario requests failed retried p50_ms p99_ms max_ms fail_s kinds
cat "$WORK/results.txt"
if awk -F '\t' '$1 != "plain restart" && $2 != 0 { bad = 1 } END { exit bad ? 0 : 1 }' "$WORK/failed.tsv"; then
    echo "RESULT: FAIL (a hand-off or an activated restart failed requests)"
    exit 1
fi
echo "RESULT: PASS (zero failed requests across hand-offs and activated restarts)"
