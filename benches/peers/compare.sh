#!/usr/bin/env bash
# Decode throughput of switchy's ESL codec and of the Python greenswitch
# parser on the same capture bytes, measured in one run, with the ratio.
#
#   benches/peers/compare.sh [SECONDS]
#
# Needs Python 3 with pip (installs benches/peers/requirements.txt into a
# virtualenv under target/peer-venv on first use).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-5}"
fixtures="${SWITCHY_FIXTURES:-../shared/fixtures/esl}"
venv=target/peer-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r benches/peers/requirements.txt
fi
# genesis pins other versions of shared packages: its own venv.
gvenv=target/peer-venv-genesis
if [ ! -x "$gvenv/bin/python" ]; then
  python3 -m venv "$gvenv"
  "$gvenv/bin/pip" install -q -r benches/peers/requirements-genesis.txt
fi

cargo bench -p switchy-protocol --bench esl_decode -- \
  --warm-up-time 2 --measurement-time "$secs" 'decode-bytes/.*/whole' >/dev/null

"$venv/bin/python" benches/peers/python_esl_peer.py --seconds "$secs" \
  "$fixtures/esl-session-plain.bin" "$fixtures/esl-session-json.bin" > target/peer.jsonl || true
"$gvenv/bin/python" benches/peers/python_esl_peer_genesis.py --seconds "$secs" \
  "$fixtures/esl-session-plain.bin" "$fixtures/esl-session-json.bin" >> target/peer.jsonl || true

python3 - "$fixtures" <<'PY'
import json, sys, pathlib
fixtures = pathlib.Path(sys.argv[1])
peers = {}
for line in open("target/peer.jsonl"):
    r = json.loads(line)
    peers.setdefault(r["file"].removesuffix(".bin"), []).append(r)
print(f"{'capture':<20} {'switchy MB/s':>12} {'switchy ev/s':>13} {'peer':<20} {'peer MB/s':>10} {'peer ev/s':>10} {'ratio':>7}")
for name in ["esl-session-plain", "esl-session-json"]:
    est = json.load(open(f"target/criterion/decode-bytes_{name}/whole/new/estimates.json"))
    ns = est["mean"]["point_estimate"]
    size = (fixtures / f"{name}.bin").stat().st_size
    transcript = (fixtures / f"{name}.transcript.txt").read_text()
    events = sum(1 for l in transcript.splitlines() if l.startswith("RECV") and " text/event-" in l)
    mbs = size / ns * 1e3
    evs = events / ns * 1e9
    for p in peers.get(name, []):
        who = p.get("parser", "?")
        if "mb_per_s" in p:
            note = "  (framing only: " + p["note"][:40] + "...)" if "note" in p else ""
            print(f"{name:<20} {mbs:>12.1f} {evs:>13.0f} {who:<20} {p['mb_per_s']:>10.1f} {p['events_per_s']:>10.0f} {mbs / p['mb_per_s']:>6.1f}x{note}")
        else:
            print(f"{name:<20} {mbs:>12.1f} {evs:>13.0f} {who:<20} {'n/a':>10} {'n/a':>10} {'n/a':>7}  ({p.get('error', 'no peer result')})")
PY
