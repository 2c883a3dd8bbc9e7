#!/usr/bin/env bash
# Runs the whole-path load harness: hub + tunnel + agent against the same API
# server reached directly, in one run. Release build. Knobs: LOAD_SECS (per step,
# default 5), LOAD_BIG_MIB (large-body size, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p hawser --bin hawser
HAWSER_TEST_LOG=${HAWSER_TEST_LOG:-info} HAWSER_BIN="$PWD/target/release/hawser" cargo bench -p hawser-tests --bench load
