#!/usr/bin/env bash
# Overhead of `profrec --requests` on a request-heavy load (root): wrk sends
# many small HTTP requests over loopback keep-alive connections to
# fixtures/programs/httpd.c, and the server's
# throughput is measured alone, under profrec with on-CPU sampling only,
# and under profrec --requests (default 1 KiB payloads, and --payload-bytes 0).
# Configurations alternate, REPS times each; medians are printed, then the
# BPF programs' own cost per run from the kernel's BPF statistics, and
# profrec's own CPU time and peak memory in each configuration. Done for
# requests that do no work (the worst case: ~25 us each, mostly syscalls) and
# for requests that burn 1 ms of CPU each.
# Usage: bench/requests_overhead.sh [SECONDS] [REPS] [CONNECTIONS]  (defaults 5, 5, 4)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
REPS=${2:-5}
CONNS=${3:-4}
source bench/common.sh
need wrk
fixtures/build.sh target/fixtures >/dev/null
cargo build --release --quiet -p profcap-recorder -p profcap-analyze
tmp=$(mktemp -d)
target/fixtures/httpd 0 > "$tmp/port" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$tmp"' EXIT
until grep -q listening "$tmp/port" 2>/dev/null; do sleep 0.05; done
port=$(awk '{print $3}' "$tmp/port")
header="traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
load() { local url="http://127.0.0.1:$port/work?parse=$WORK"; wrk -t1 -c"$CONNS" -d"${SECS}s" -H "$header" "$url" | awk '/^Requests\/sec/ {print $2}'; }
# The floor: the syscall tracepoints enabled with the cheapest consumer
# there is (perf counting them), no BPF at all. Enabling them moves every
# task's syscalls onto the kernel's slow path, whatever the consumer does.
tracepoints() {
  perf stat -a -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -o /dev/null -- sleep 600 & local p=$!
  sleep 1
  load >> "$tmp/tp"
  # perf stat ends when its command does.
  pkill -P "$p" sleep || true; wait "$p" 2>/dev/null || true
}
# Runs the load while profrec records the server with the given options;
# profrec's CPU seconds and peak MiB (its summary) go to $tmp/NAME.usage.
under() {
  local name=$1; shift
  target/release/profrec -o "$tmp/$name.cap" -p "$server" "$@" 2> "$tmp/err" & local rec=$!
  sleep 1
  load >> "$tmp/$name"
  kill -INT "$rec"; wait "$rec" || true
  profrec_usage "$tmp/err" >> "$tmp/$name.usage"
}
for WORK in 0 1; do
  rm -f "$tmp"/{alone,tp,cpu,req,req0} "$tmp"/*.usage
  for _ in $(seq "$REPS"); do
    load >> "$tmp/alone"
    tracepoints
    under cpu
    under req --requests
    under req0 --requests --payload-bytes 0
  done
  printf 'httpd on loopback, %s ms of CPU per request, wrk -c%s for %ss, %s alternating runs, median requests/s\n' \
    "$WORK" "$CONNS" "$SECS" "$REPS"
  base=$(median < "$tmp/alone")
  printf '%-40s %10s %9s %17s %14s\n' config "req/s" "vs alone" "[range]" "profrec CPU s/MiB"
  for cfg in alone:"alone" tp:"syscall tracepoints alone (perf stat)" cpu:"profrec (on-CPU 99 Hz)" req:"profrec --requests" req0:"profrec --requests --payload-bytes 0"; do
    name=${cfg%%:*}; label=${cfg#*:}
    r=$(median < "$tmp/$name")
    usage=-
    if [ -s "$tmp/$name.usage" ]; then
      usage="$(awk '{print $1}' "$tmp/$name.usage" | median)/$(awk '{print $2}' "$tmp/$name.usage" | median)"
    fi
    printf '%-40s %10.0f %+8.2f%% %17s %14s\n' "$label" "$r" "$(echo "($r / $base - 1) * 100" | bc -l)" \
      "[$(sort -g "$tmp/$name" | sed -n '1p' | xargs printf '%.0f')-$(sort -g "$tmp/$name" | tail -1 | xargs printf '%.0f')]" "$usage"
  done
  target/release/profanalyze info "$tmp/req.cap" | grep -E '^(duration|requests|lost)'
  echo
done
WORK=0
bpf_stats_on
target/release/profrec -q -o "$tmp/s.cap" -p "$server" --requests & rec=$!
sleep 1
load > /dev/null
echo "BPF cost under profrec --requests:"
bpf_prog_costs on_sys_enter on_sys_exit on_cpu_sample
kill -INT "$rec"; wait "$rec" || true
bpf_stats_off
