# Helpers shared by the bench scripts (sourced, not run).

# The median of the numbers on standard input, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Installs the Debian packages of these commands if they are missing.
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  done
}

# Turns the kernel's BPF run-time statistics on until bpf_stats_off.
bpf_stats_on() {
  need bpftool
  BPF_STATS_WAS=$(cat /proc/sys/kernel/bpf_stats_enabled)
  echo 1 > /proc/sys/kernel/bpf_stats_enabled
}

bpf_stats_off() { echo "${BPF_STATS_WAS:-0}" > /proc/sys/kernel/bpf_stats_enabled; }

# Prints runs and mean run time of the loaded BPF programs with these names.
bpf_prog_costs() {
  bpftool prog show -j 2>/dev/null | python3 -c '
import json, sys
names = sys.argv[1:]
for p in json.load(sys.stdin):
    if p.get("name") in names and p.get("run_cnt"):
        print("  %-14s %10d runs, %6.0f ns per run" % (p["name"], p["run_cnt"], p["run_time_ns"] / p["run_cnt"]))' "$@"
}

# "cpu-seconds peak-MiB" from the summary profrec prints on standard error
# (in FILE): "... using 0.243s CPU and 57.1 MiB of memory at most ...".
profrec_usage() {
  sed -n 's/.*using \([0-9.]*\)s CPU and \([0-9.]*\) MiB of memory at most.*/\1 \2/p' "$1" | tail -1 | grep . || echo "nan nan"
}
