#!/usr/bin/env bash
# The main job on a bundled example: install what is needed, build, record a
# demo program with profrec, and render its flame graph with profanalyze.
# Run as root (BPF). Output: demo/cpu_split.cap and demo/cpu_split.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
echo "== building (release)"
cargo build --release --locked -p profcap-recorder -p profcap-analyze
fixtures/build.sh target/fixtures >/dev/null
echo "== installing the man pages and bash completions (under /usr/local)"
man1=/usr/local/share/man/man1 completions=/usr/local/share/bash-completion/completions
mkdir -p "$man1" "$completions"
target/release/profanalyze -q man "$man1"
target/release/profrec --man "$man1" 2>/dev/null
target/release/profanalyze completions bash > "$completions/profanalyze"
target/release/profrec --completions bash > "$completions/profrec"
mkdir -p demo
echo "== recording target/fixtures/cpu_split for 3 s at 999 Hz"
target/release/profrec -o demo/cpu_split.cap -F 999 -- target/fixtures/cpu_split 3 >/dev/null
echo "== analyzing"
target/release/profanalyze info demo/cpu_split.cap
target/release/profanalyze top demo/cpu_split.cap -n 10
target/release/profanalyze flame demo/cpu_split.cap -o demo/cpu_split.svg
echo "== done: open demo/cpu_split.svg in a browser"
