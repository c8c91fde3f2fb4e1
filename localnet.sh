#!/usr/bin/env bash
# Run a local loopchain network on loopback: a RadioStation and N peers with their REST proxies.
#   ./localnet.sh [--peers N] [--data DIR] [--score ORG/PACKAGE] [--score-settings JSON]
#                 [--channels A,B] [--tls] [--debug]
# Peers listen on 7100, 7200, ... (REST 9000, 9100, ...); the RadioStation on 7102 (REST 9002).
# State lives in DIR (default ./localnet-data) and survives a restart. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"
PEERS=4
DATA=localnet-data
DEBUG=()
SCORE=""
SETTINGS="{}"
CHANNELS=""
TLS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --peers) PEERS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --score) SCORE=$2; shift 2 ;;
    --score-settings) SETTINGS=$2; shift 2 ;;
    --channels) CHANNELS=$2; shift 2 ;;
    --tls) TLS=2; shift ;;
    --debug|-d) DEBUG=(-d); shift ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "localnet.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$PEERS" in ''|*[!0-9]*) echo "localnet.sh: --peers needs a number" >&2; exit 2 ;; esac
[ "$PEERS" -ge 1 ] && [ "$PEERS" -le 9 ] || { echo "localnet.sh: --peers must be 1..9" >&2; exit 2; }

[ -x .venv/bin/python ] && [ -f loopchain/protos/loopchain_pb2.py ] || ./setup.sh
mkdir -p "$DATA/logs"
DATA=$(cd "$DATA" && pwd)
CONF="$DATA/localnet.json"
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
  --score-settings "$SETTINGS" "${listed[@]}" >/dev/null

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping the local network..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; state kept in $DATA"
  exit 0
}
trap stop INT TERM EXIT

wait_http() {  # url, name, pid
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || { echo "$2 exited; see its log:" >&2; tail -n 20 "$DATA/logs/$2.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "$2 did not answer at $1 in 30 s; see $DATA/logs/$2.log" >&2; exit 1
}

./radiostation.py -o "$CONF" "${DEBUG[@]}" >"$DATA/logs/radiostation.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:9002/api/v1/peer/list radiostation $!
peer_pids=()
for i in $(seq 1 "$PEERS"); do  # all peers start at once, then each is waited for
  port=$((7000 + 100 * i))
  ./peer.py -p "$port" -r 127.0.0.1:7102 -o "$CONF" "${DEBUG[@]}" >"$DATA/logs/peer_$port.log" 2>&1 &
  pids+=($!)
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

Press Ctrl-C to stop.
TEXT
wait -n "${pids[@]}" || true
echo "a process of the local network exited; see $DATA/logs" >&2
