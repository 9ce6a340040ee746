#!/usr/bin/env bash
# switchy against a real FreeSWITCH, side by side with the raw baseline
# script, in one invocation (see benches/freeswitch.py for what is measured).
#
#   benches/freeswitch.sh RATE SECS HOLD [--only switchy|baseline] [--switchy-first] [--restart-fs] [--out results.jsonl]
#   e.g. benches/freeswitch.sh 100 30 2
#
# Needs a FreeSWITCH on this host built and started with
# ../shared/tools/freeswitch/build.sh (ESL 127.0.0.1:8021, self-calls to
# doggy@127.0.0.1:5080). Env: FS_ESL, FS_DEST, BASELINE_EVENTS, SWITCHY_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p switchy-cli
exec python3 benches/freeswitch.py "$@"
