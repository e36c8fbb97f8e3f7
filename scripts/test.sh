#!/usr/bin/env bash
# The whole test suite: installs what is needed, checks that generated code
# is current, builds the fuzz target, and runs every test. Run as root: the
# recorder's tests load real BPF programs against real processes (a non-root
# developer may set PROFCAP_SKIP_ROOT_TESTS=1 to skip those, never in CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
if [ "$(id -u)" != 0 ] && [ -z "${PROFCAP_SKIP_ROOT_TESTS:-}" ]; then
  echo "error: run as root (BPF tests), or set PROFCAP_SKIP_ROOT_TESTS=1 to skip them" >&2
  exit 1
fi
if [ -n "${CI:-}" ] && [ -n "${PROFCAP_SKIP_ROOT_TESTS:-}" ]; then
  echo "error: PROFCAP_SKIP_ROOT_TESTS must not be set in CI" >&2
  exit 1
fi
echo "== generated code"
scripts/gen-schema.sh --check
echo "== fuzz target builds"
cargo build --locked --manifest-path fuzz/Cargo.toml --quiet
echo "== tests"
cargo test --locked --workspace --exclude profcap-recorder
# The recorder's tests measure real programs' CPU profiles: one at a time, so
# they do not compete with each other for this machine's two cores.
cargo test --locked -p profcap-recorder -- --test-threads=1
