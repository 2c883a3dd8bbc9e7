#!/usr/bin/env bash
# Builds every stage plugin of the workspace for wasm32-wasip2 (release, without debug
# info) and prints where the .wasm components are. Tests load these fresh builds from
# target/wasm32-wasip2/release/; nothing prebuilt is checked in.
#
#   scripts/build-plugins.sh            # build all plugins
#   scripts/build-plugins.sh -q         # quieter cargo output
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "build-plugins: installing the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi

# Every workspace member under plugins/ except the SDK (a library, not a plugin).
mapfile -t crates < <(
  find plugins -name Cargo.toml -not -path '*/target/*' -print0 |
    xargs -0 grep -h '^name = ' | sed -E 's/name = "(.*)"/\1/' | grep -v '^hawser-plugin-sdk$' | sort
)
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done

# A 64 KiB guest stack (Rust's default is 1 MiB) keeps a plugin's memory small, so
# fresh instances touch and reset fewer pages.
cargo build "$@" --release --target wasm32-wasip2 \
  --config 'profile.release.debug=false' \
  --config 'target.wasm32-wasip2.rustflags=["-C", "link-arg=-zstack-size=65536"]' \
  "${args[@]}"

dir="${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release"
echo "plugins built in $dir:"
for c in "${crates[@]}"; do
  f="$dir/${c//-/_}.wasm"
  [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
  printf '  %s (%s bytes)\n' "$f" "$(stat -c %s "$f")"
done
