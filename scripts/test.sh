#!/usr/bin/env bash
# Sets up and runs every test: installs the wasm32-wasip2 target, builds the
# plugins and the hawser binary, then runs the workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is needed for the end-to-end tests; install a kubectl >= 1.30 on PATH" >&2
  exit 1
fi
rustup target add wasm32-wasip2 >/dev/null
scripts/build-plugins.sh
cargo build -p hawser --bin hawser
# Each test starts its own processes on port 0; two at a time suits a 2-core machine.
cargo test --workspace -- --test-threads "${HAWSER_TEST_THREADS:-2}"
# Each criterion benchmark once, unmeasured: a benchmark whose setup no longer loads
# (a chain the config check refuses, say) fails here, not on the next measurement.
cargo test -p hawser --benches
# The whole-path load harness is run by hand (scripts/load.sh); here it only has to build.
cargo test -p hawser-tests --benches --no-run
# The README's other first-screen command, end to end: hub, agent and the stand-in API
# server come up, and the demo fails unless alice lists pods, the API server forbids
# bob and the hub refuses a token it never issued.
# Its ports are picked free here, so a demo left running elsewhere does not clash.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    # A refused connection means nothing listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; return 1
}
demo_dir=$(mktemp -d)
trap 'rm -rf "$demo_dir"' EXIT
front=$(free_port)
tunnel=$(free_port)
while [ "$tunnel" = "$front" ]; do tunnel=$(free_port); done
DEMO_EXIT=1 DEMO_DIR="$demo_dir/demo" DEMO_FRONT_PORT=$front DEMO_TUNNEL_PORT=$tunnel scripts/demo.sh
