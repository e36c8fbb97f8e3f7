#!/usr/bin/env bash
# Installs what building and testing profcap needs on Debian 12, as root.
# Idempotent: packages already present are left alone.
set -euo pipefail
packages=(clang llvm libelf-dev zlib1g-dev pkg-config gcc make binutils libc6-dbg linux-perf golang-go openjdk-17-jdk-headless python3-pip bc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# By what they provide: node's own packages may have brought npm, pip jsonschema.
command -v npm >/dev/null 2>&1 || missing+=(npm)
python3 -c 'import jsonschema' 2>/dev/null || missing+=(python3-jsonschema)
# The browser test of the speedscope export.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "note: add \$HOME/.cargo/bin to PATH" >&2
  else
    echo "error: no Rust toolchain: install one with rustup (https://rustup.rs), Rust >= 1.88" >&2
    exit 1
  fi
fi
