#!/usr/bin/env bash
# Run a local loopchain network on loopback: a RadioStation and N peers with their REST proxies.
#   ./localnet.sh [--peers N] [--data DIR] [--score ORG/PACKAGE] [--score-settings JSON]
#                 [--channels A,B] [--tls] [--debug]
#   ./localnet.sh [--data DIR] --restart PORT   (from another terminal: restart a dead peer in place)
# Peers listen on 7100, 7200, ... (REST 9000, 9100, ...); the RadioStation on 7102 (REST 9002).
# State lives in DIR (default ./localnet-data) and survives a restart. A process that dies is
# reported and the others keep running (kill -9 the leader to watch the failover). Ctrl-C stops all.
# Every channel's genesis_data is $GENESIS (JSON, from the environment): by default 1,000,000 ICX to
# hxe7af5fcfd8dfc67530a01a0e403882687528dfcb, whose private key 592eb276d534e2c41a2d9356c0ab262dc233d87e4dd71ce705ec130a8d27ff0c
# is public (ICON SDK tests): development only. GENESIS='{"accounts": []}' funds no one.
set -euo pipefail
cd "$(dirname "$0")"
PEERS=4
DATA=localnet-data
DEBUG=()
SCORE=""
SETTINGS="{}"
# genesis_data of every channel (balances in loop, 10^-18 ICX); overridable from the environment
DEFAULT_GENESIS='{"accounts":[{"name":"god","address":"hxe7af5fcfd8dfc67530a01a0e403882687528dfcb","balance":"0xd3c21bcecceda1000000"},{"name":"treasury","address":"hx1000000000000000000000000000000000000000","balance":"0x0"}],"message":"loopchain local network: development genesis"}'
GENESIS=${GENESIS:-$DEFAULT_GENESIS}
CHANNELS=""
TLS=0
RESTART=""
while [ $# -gt 0 ]; do
  case "$1" in
    --peers) PEERS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --score) SCORE=$2; shift 2 ;;
    --score-settings) SETTINGS=$2; shift 2 ;;
    --channels) CHANNELS=$2; shift 2 ;;
    --tls) TLS=2; shift ;;
    --debug|-d) DEBUG=(-d); shift ;;
    --restart) RESTART=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "localnet.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PEERS" in ''|*[!0-9]*) echo "localnet.sh: --peers needs a number" >&2; exit 2 ;; esac
[ "$PEERS" -ge 1 ] && [ "$PEERS" -le 9 ] || { echo "localnet.sh: --peers must be 1..9" >&2; exit 2; }

[ -x .venv/bin/python ] && [ -f loopchain/protos/loopchain_pb2.py ] || ./setup.sh
# current bytecode for every process (setup.sh makes it; sources edited since are compiled again)
.venv/bin/python -m compileall -q -j 0 loopchain score >/dev/null 2>&1 || true
# the venv's interpreter directly: `./peer.py` would start python3 (through pyenv's shims, when
# there are any: ~20 shell processes) only to re-execute itself in .venv, once per process
PY=.venv/bin/python
if [ -n "$RESTART" ] && [ ! -f "$DATA/localnet.json" ]; then  # (before anything is made there)
  echo "localnet.sh: no peer $RESTART in the local network at $DATA (none ran there)" >&2; exit 2
fi
mkdir -p "$DATA/logs" "$DATA/pids"
DATA=$(cd "$DATA" && pwd)
CONF="$DATA/localnet.json"

# Each node's records go to $DATA/logs/NAME.log, rotated as LOG_FILE_PATH is (64 MiB, 10 old files
# by default: LOG_FILE_ROTATE_* in the environment change it), and whatever else it writes (a
# crash before its log is set up, records its log file refuses) to NAME.out: a network left
# running does not fill its disk with its logs.
declare -A started_at=()  # log file -> its size when its node was last started
start_logged() {  # name, command...: in the background, $! its pid
  local name=$1 file
  shift
  for file in "$DATA/logs/$name.log" "$DATA/logs/$name.out"; do
    started_at[$file]=$(stat -c %s "$file" 2>/dev/null || echo 0)
  done
  LOG_FILE_PATH="$DATA/logs/$name.log" LOG_OUTPUT_TYPE=file \
    "$@" >>"$DATA/logs/$name.out" 2>&1 </dev/null &
}

show_log() {  # name: the end of what its last start wrote to its log and other output, on stderr
  local file size from
  for file in "$DATA/logs/$1.out" "$DATA/logs/$1.log"; do
    size=$(stat -c %s "$file" 2>/dev/null || echo 0)
    from=${started_at[$file]:-0}
    [ "$size" -ge "$from" ] || from=0  # rotated since
    [ "$size" -gt "$from" ] || continue
    echo "--- $file" >&2
    tail -c +$((from + 1)) "$file" | tail -n 20 >&2
  done
  return 0
}

wait_http() {  # url, name, pid
  for _ in $(seq 1 600); do  # polled often: the next step (the peers) waits on this one
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || { echo "$2 exited; see its log:" >&2; show_log "$2"; exit 1; }
    sleep 0.05
  done
  echo "$2 did not answer at $1 in 30 s; see $DATA/logs/$2.log" >&2; exit 1
}

alive() {  # the pid in pid file $1 runs (a process killed but not yet reaped, a zombie, has ended)
  local pid stat
  pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

if [ -n "$RESTART" ]; then  # restart one dead peer of a running local network, in place
  case "$RESTART" in ''|*[!0-9]*) echo "localnet.sh: --restart needs a peer port" >&2; exit 2 ;; esac
  [ -f "$CONF" ] && [ -f "$DATA/pids/peer_$RESTART.pid" ] \
    || { echo "localnet.sh: no peer $RESTART in the local network at $DATA" >&2; exit 2; }
  alive "$DATA/pids/localnet.pid" \
    || { echo "localnet.sh: the local network at $DATA is not running; start it" >&2; exit 2; }
  if alive "$DATA/pids/peer_$RESTART.pid"; then
    echo "localnet.sh: peer $RESTART is running (pid $(cat "$DATA/pids/peer_$RESTART.pid"))" >&2; exit 2
  fi
  start_logged "peer_$RESTART" setsid "$PY" peer.py -p "$RESTART" -r 127.0.0.1:7102 -o "$CONF" "${DEBUG[@]}"
  pid=$!
  echo "$pid" > "$DATA/pids/peer_$RESTART.pid"
  # ready when it serves one of the network's channels (one it was unlisted from it no longer
  # opens, the default one included)
  channels=$("$PY" -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))))' \
    "$DATA/channel_manage_data.json")
  serving() {
    for channel in $channels; do
      curl -sf -o /dev/null "http://127.0.0.1:$((RESTART + 1900))/api/v1/status/peer?channel=$channel" \
        && return 0
    done
    return 1
  }
  for _ in $(seq 1 600); do
    serving && break
    kill -0 "$pid" 2>/dev/null \
      || { echo "peer_$RESTART exited; see its log:" >&2; show_log "peer_$RESTART"; exit 1; }
    sleep 0.05
  done
  serving || { echo "peer_$RESTART serves none of $channels; see $DATA/logs/peer_$RESTART.log" >&2; exit 1; }
  echo "peer $RESTART restarted (pid $pid); REST http://127.0.0.1:$((RESTART + 1900))"
  exit 0
fi
if alive "$DATA/pids/localnet.pid"; then
  echo "localnet.sh: a local network already runs from $DATA (pid $(cat "$DATA/pids/localnet.pid"))" >&2
  exit 2
fi
rm -f "$DATA"/pids/*.pid
echo $$ > "$DATA/pids/localnet.pid"
DEFAULT_CHANNEL=${CHANNELS%%,*}
cat > "$CONF" <<JSON
{"DEFAULT_STORAGE_PATH": "$DATA/storage", "CHANNEL_MANAGE_DATA_PATH": "$DATA/channel_manage_data.json",
 "LOOPCHAIN_DEFAULT_CHANNEL": "${DEFAULT_CHANNEL:-loopchain_default}", "GRPC_SSL_TYPE": $TLS,
 "ENABLE_CHANNEL_AUTH": true}
JSON
PEER_PORTS=$(seq -s, 7100 100 $((7000 + 100 * PEERS)))
if [ "$TLS" = 2 ]; then  # one CA; each node's key and certificate where it looks for them
  .venv/bin/python tools/tls_network.py --storage "$DATA/storage" --peers "$PEER_PORTS" >/dev/null
fi

# Listed mode: each peer's key is made (or kept) now, and the channels list the peers by their ids
# (a target alone is not an identity). Keys are encrypted when LOOPCHAIN_KEY_PASSWORD is set.
listed=()
for port in ${PEER_PORTS//,/ }; do listed+=(--peer "127.0.0.1:$port=$DATA/storage/peer_$port/peer_key"); done
.venv/bin/python tools/listed_channels.py --out "$DATA/channel_manage_data.json" \
  --channels "${CHANNELS:-loopchain_default}" --score "${SCORE:-loopchain/default}" \
  --score-settings "$SETTINGS" --genesis "$GENESIS" "${listed[@]}" >/dev/null

stop() {
  trap - INT TERM EXIT
  echo; echo "stopping the local network..."
  for file in "$DATA"/pids/*.pid; do
    [ "$(basename "$file")" = localnet.pid ] || kill -TERM "$(cat "$file")" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do  # every process, restarted ones included, within 20 s
    left=0
    for file in "$DATA"/pids/*.pid; do
      [ "$(basename "$file")" = localnet.pid ] || ! alive "$file" || left=1
    done
    [ "$left" = 0 ] && break
    sleep 0.2
  done
  rm -f "$DATA"/pids/*.pid
  echo "stopped; state kept in $DATA"
  exit "${1:-0}"
}
# stopped on request: 0; ended otherwise (a node that never came up): the status it ended with
trap 'stop 0' INT TERM
trap 'stop $?' EXIT

start_logged radiostation "$PY" radiostation.py -o "$CONF" "${DEBUG[@]}"
echo $! > "$DATA/pids/radiostation.pid"
wait_http http://127.0.0.1:9002/api/v1/peer/list radiostation $!
peer_pids=()
for i in $(seq 1 "$PEERS"); do  # all peers start at once, then each is waited for
  port=$((7000 + 100 * i))
  start_logged "peer_$port" "$PY" peer.py -p "$port" -r 127.0.0.1:7102 -o "$CONF" "${DEBUG[@]}"
  echo $! > "$DATA/pids/peer_$port.pid"
  peer_pids+=($!)
done
for i in $(seq 1 "$PEERS"); do
  port=$((7000 + 100 * i))
  wait_http "http://127.0.0.1:$((port + 1900))/api/v1/status/peer" "peer_$port" "${peer_pids[$((i - 1))]}"
done

cat <<TEXT

loopchain local network is up ($PEERS peers). Logs: $DATA/logs
  RadioStation   gRPC 127.0.0.1:7102   REST http://127.0.0.1:9002
TEXT
for i in $(seq 1 "$PEERS"); do
  port=$((7000 + 100 * i))
  echo "  peer $i         gRPC 127.0.0.1:$port   REST http://127.0.0.1:$((port + 1900))"
done
cat <<'TEXT'

Try:
  curl localhost:9002/api/v1/peer/list
  curl localhost:9000/api/v1/status/peer
  curl -H "Content-Type: application/json" -d '{"data":"hello"}' localhost:9000/api/v1/transactions
  curl localhost:9000/api/v1/blocks
  curl "localhost:9100/api/v1/transactions?hash=<tx_hash from above>"
  (with --channels: add ?channel=NAME to GET calls, "channel": "NAME" to POST bodies)

A process that dies is reported here and the rest keeps running (kill -9 the leader to watch
the failover); restart a dead peer from another terminal with ./localnet.sh --restart PORT.
Press Ctrl-C to stop.
TEXT
declare -A reported=()
while :; do  # report each death once; a restarted process is watched again
  for file in "$DATA"/pids/*.pid; do
    name=$(basename "$file" .pid)
    [ "$name" = localnet ] && continue
    pid=$(cat "$file" 2>/dev/null) || continue
    if ! kill -0 "$pid" 2>/dev/null && [ "${reported[$name]:-}" != "$pid" ]; then
      reported[$name]=$pid
      echo "$name (pid $pid) exited; the rest keeps running. Log: $DATA/logs/$name.log" >&2
      if [ -s "$DATA/logs/$name.out" ]; then
        echo "  its other output (a crash before it logged): $DATA/logs/$name.out" >&2
      fi
      case "$name" in peer_*) echo "  restart it: ./localnet.sh --data $DATA --restart ${name#peer_}" >&2 ;; esac
    fi
  done
  sleep 1 & wait $! || true  # (a wait Ctrl-C interrupts at once)
done
