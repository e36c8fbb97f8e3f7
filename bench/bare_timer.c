/* The floor under any sampling profiler: cpu-clock sampling events at FREQ
 * Hz on every CPU, as profrec opens them, but with no BPF program and no
 * ring buffer, so each sample is the timer interrupt and the perf core's
 * overflow handling alone. Runs until killed.
 * Usage: bare_timer FREQ */
#include <linux/perf_event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long freq = argc > 1 ? atol(argv[1]) : 999;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	for (long cpu = 0; cpu < cpus; cpu++) {
		struct perf_event_attr a;
		memset(&a, 0, sizeof(a));
		a.size = sizeof(a);
		a.type = PERF_TYPE_SOFTWARE;
		a.config = PERF_COUNT_SW_CPU_CLOCK;
		a.freq = 1;
		a.sample_freq = (unsigned long)freq;
		if (syscall(SYS_perf_event_open, &a, -1, (int)cpu, -1, 0) < 0) {
			perror("perf_event_open");
			return 1;
		}
	}
	pause();
	return 0;
}
