#!/usr/bin/env bash
# Originator load benchmark: mock-relay (4 simulated nodes) in its own
# process, `switchy-controller run` with one embedded agent per node over
# real TCP (ESL) and QUIC/mTLS, CDRs to a fresh SQLite file.
#
#   benches/originator.sh RATE [SECONDS] [NODES] [LIMIT]   e.g. benches/originator.sh 2000 60 4 22000
#
# The concurrency limit is LIMIT (default RATE × 10); the holding time is
# the default 95 % of LIMIT / RATE, so the run holds about 0.95 × LIMIT
# calls up once warm.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:?calls per second}
SECS=${2:-60}
NODES=${3:-4}
LIMIT=${4:-$((RATE * 10))}
cargo build --release -q -p mock-relay -p switchy-cli -p switchy-agent
PORT=18021
./target/release/mock-relay --nodes "$NODES" --esl-port $PORT --http-port 19021 >/tmp/switchy-bench-mock.log 2>&1 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT
sleep 1
ESL=()
for i in $(seq 0 $((NODES - 1))); do ESL+=(--esl 127.0.0.1:$((PORT + i))); done
DB=/tmp/switchy-bench-$$.db
rm -f "$DB"*
RUST_LOG=warn ./target/release/switchy-controller run "${ESL[@]}" --rate "$RATE" \
  --limit "$LIMIT" --max-offered $((RATE * SECS)) --http 127.0.0.1:0 \
  --db "sqlite://$DB" --metrics-file /tmp/switchy-bench-$$.json
# Every offered call must have exactly one CDR.
python3 - "$DB" /tmp/switchy-bench-$$.json <<'PY'
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
rows, calls, ok = con.execute("SELECT COUNT(*), COUNT(DISTINCT call_id), SUM(failed = 0) FROM cdr").fetchone()
o = json.load(open(sys.argv[2]))["originator"]
print("CDR check: %d rows, %d distinct calls, %d answered; originator offered %d, answered %d, failed %d: %s"
      % (rows, calls, ok or 0, o["offered"], o["answered"], o["failed"],
         "one CDR per call" if rows == calls == o["offered"] and ok == o["answered"] else "MISMATCH"))
PY
rm -f "$DB"* /tmp/switchy-bench-$$.json
