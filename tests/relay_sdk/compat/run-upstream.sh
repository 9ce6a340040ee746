#!/usr/bin/env bash
# Runs SignalWire's own RELAY mock test suite (signalwire-python's
# tests/unit/relay) unchanged against switchy's mock-relay --relay.
#
#   tests/relay_sdk/compat/run-upstream.sh /path/to/signalwire-python [PYTHON]
#
# The checkout must be beside nothing in particular: this script builds a
# throwaway tree with the layout that suite looks for
# (../porting-sdk/test_harness/mock_relay/) holding our drop-in package.
# PYTHON needs the checkout's requirements plus pytest, pytest-asyncio,
# pytest-cov, pytest-timeout and requests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
src=${1:?usage: run-upstream.sh /path/to/signalwire-python [PYTHON]}
py=${2:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q --manifest-path "$repo/Cargo.toml" -p mock-relay
mkdir -p "$work/porting-sdk/test_harness/mock_relay"
cp -r "$here/mock_relay" "$work/porting-sdk/test_harness/mock_relay/"
cp -r "$src" "$work/signalwire-python"
cd "$work/signalwire-python"
MOCK_RELAY_BIN="$repo/target/debug/mock-relay" PYTHONPATH=. \
  "$py" -m pytest -q -p no:cacheprovider -o addopts="" tests/unit/relay/
