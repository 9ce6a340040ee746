#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain (no cargo-fuzz, no
# nightly): libFuzzer from libfuzzer-sys, SanitizerCoverage from rustc's
# stable -C flags (no AddressSanitizer; Rust's own checks catch what the
# decoders could get wrong: panics, overflows in debug-assertions builds).
#
#   fuzz/run.sh TARGET [SECONDS]     TARGET: esl_decoder | esl_commands | wire_decoder | args
#
# The corpus grows in fuzz/corpus/TARGET (seeded from ../shared/fixtures
# for the ESL targets); a crash is written to fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")"
T=${1:?target: esl_decoder, esl_commands, wire_decoder or args}
SECS=${2:-60}
HOST=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target "$HOST" --target-dir target/stable --bin "$T"
mkdir -p "corpus/$T" "artifacts/$T"
if [ "$T" = esl_decoder ] || [ "$T" = esl_commands ]; then :; else SEED=no; fi
if [ "${SEED:-yes}" = yes ] && [ -d ../../shared/fixtures ] && [ -z "$(ls -A "corpus/$T")" ]; then
  find ../../shared/fixtures -type f -name '*.bin' -exec cp {} "corpus/$T/" \; || true
fi
exec "target/stable/$HOST/release/$T" -max_total_time="$SECS" -artifact_prefix="artifacts/$T/" "corpus/$T"
