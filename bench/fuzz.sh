#!/usr/bin/env bash
# Runs the stable structure-aware fuzzer (fuzz/stable/mutate.rs) over the
# fixture captures: RUNS runs in all (default 10 million), split over one
# process per CPU with different seeds. Prints each process's runs, runs/s,
# panics, hangs (a run over 2 s), slowest run and peak RSS; exits non-zero on
# any panic or hang (inputs are saved in fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
runs=${1:-10000000}
jobs=$(nproc)
cargo build --locked --release --quiet --manifest-path fuzz/Cargo.toml --bin mutate
per=$(( (runs + jobs - 1) / jobs ))
echo "fuzzing: $runs runs over $jobs processes"
status=0
pids=()
for j in $(seq "$jobs"); do
  fuzz/target/release/mutate "$per" "$((j * 7919))" > "fuzz/target/mutate-$j.out" 2>&1 & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
for j in $(seq "$jobs"); do tail -n 1 "fuzz/target/mutate-$j.out"; done
exit $status
