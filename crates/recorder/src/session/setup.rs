//! Setting a recording up: the sampler's shared memory, the targets (a
//! command held before exec, or running processes), and what to probe.

use crate::mem::{SamplerFile, SamplerRing};
use crate::probes::{MemProbes, OffCpuOptions, ProbeOptions, Targets};
use crate::spawn::{spawn_held, HeldChild, RunningChild};
use crate::{Error, MemMode, RecordOptions, Result, Target};

/// The preloaded sampler (`--mem --preload`): its library and its ring.
#[derive(Debug, Default)]
pub(super) struct Sampling {
    pub(super) library: Option<SamplerFile>,
    pub(super) ring: Option<SamplerRing>,
}

impl Sampling {
    pub(super) fn prepare(opts: &RecordOptions) -> Result<Sampling> {
        if opts.mem != MemMode::Sampled || go_program(opts).is_some() {
            // (A Go program is sampled in the kernel: see `mem_probes`.)
            return Ok(Sampling::default());
        }
        if let Target::Spawn(argv) = &opts.target {
            crate::mem::check_preloadable(argv.first().map_or("", String::as_str))?;
        }
        let library = SamplerFile::create()?;
        // Picked allocations come through this ring, not the kernel (8 MiB:
        // about 60 k records, far more than profrec's 100 ms polls let pile
        // up; 32 MiB when each pick carries up to --stack-bytes of stack, of
        // which the sampler fills at most a quarter before it sends picks
        // without: a profrec starved of CPU for a second still gets them all).
        let size = if opts.stack_bytes > 0 { 32 << 20 } else { 8 << 20 };
        let ring = if opts.mem_test_no_ring { None } else { Some(SamplerRing::create(size)?) };
        Ok(Sampling { library: Some(library), ring })
    }

    /// The environment that loads the sampler into a started command.
    fn env(&self, opts: &RecordOptions) -> Vec<(String, String)> {
        let Some(library) = &self.library else { return Vec::new() };
        let mut env = vec![
            ("LD_PRELOAD".to_owned(), library.path().display().to_string()),
            ("PROFCAP_SAMPLE_BYTES".to_owned(), opts.sample_bytes.to_string()),
            // The sampler copies the stack of each picked allocation for DWARF unwinding.
            ("PROFCAP_STACK_BYTES".to_owned(), opts.stack_bytes.to_string()),
        ];
        if let Some(r) = &self.ring {
            env.push(("PROFCAP_RING".to_owned(), r.path().display().to_string()));
        }
        env
    }
}

/// A command held before exec, killed unless it is released: whatever
/// fails between spawning it and starting the recording, it never runs
/// unrecorded.
#[derive(Debug, Default)]
pub(super) struct Held(Option<HeldChild>);

impl Held {
    pub(super) fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(HeldChild::pid)
    }

    /// Lets the command exec (if there is one).
    pub(super) fn release(mut self) -> Result<Option<RunningChild>> {
        self.0.take().map(HeldChild::release).transpose()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// What the programs follow, spawning (and holding) the command if one is given.
pub(super) fn targets(opts: &RecordOptions, sampling: &Sampling) -> Result<(Targets, Held)> {
    Ok(match &opts.target {
        Target::All => (Targets::All, Held::default()),
        Target::Pids(pids) => {
            (Targets::Pids { pids: pids.clone(), follow: opts.follow_children }, Held::default())
        }
        Target::Spawn(argv) => {
            let held = spawn_held(argv, &sampling.env(opts))?;
            (Targets::Pids { pids: vec![held.pid()], follow: opts.follow_children }, Held(Some(held)))
        }
    })
}

/// What to probe, as the options ask.
pub(super) fn probe_options(opts: &RecordOptions, held: &Held, sampling: &Sampling) -> Result<ProbeOptions> {
    Ok(ProbeOptions {
        cpu_freq: opts.cpu.then_some(opts.freq),
        offcpu: opts.offcpu.then(|| OffCpuOptions {
            min_block_ns: u64::try_from(opts.min_block.as_nanos()).unwrap_or(u64::MAX),
            wakers: opts.wakers,
            kernel_stacks: opts.offcpu_kernel_stacks,
            test_miss_switch_ins: opts.offcpu_test_miss_switch_ins,
        }),
        request_payload: opts.requests.then_some(opts.payload_bytes),
        mem: mem_probes(opts, held, sampling)?,
        stack_bytes: opts.stack_bytes,
    })
}

/// Where the allocation probes go, or why `--mem` (or `--hbm`) cannot work here.
fn mem_probes(opts: &RecordOptions, held: &Held, sampling: &Sampling) -> Result<Option<MemProbes>> {
    let sampler = sampling.library.as_ref().map(|s| s.path().to_owned());
    let one = match (&opts.target, held.pid()) {
        (Target::Spawn(_), Some(pid)) => Some(pid),
        (Target::Pids(pids), _) if pids.len() == 1 => Some(pids[0]),
        _ => None,
    };
    let cuda = if opts.hbm {
        let Some(pid) = one else {
            return Err(Error::Usage("--hbm records one process: a command to start or a single -p PID"));
        };
        vec![crate::mem::cuda_library(opts, pid)?]
    } else {
        Vec::new()
    };
    let probes = |pid, objects, sampler, python| MemProbes {
        pid,
        objects,
        sampler,
        python,
        cuda: cuda.clone(),
        go: None,
        java: None,
    };
    // A Go program: runtime.mallocgc, every call or sampled in the kernel
    // (LD_PRELOAD cannot reach Go's allocator). Only with --mem: finding out
    // reads the executable's symbol table.
    let go = if opts.mem != MemMode::Off { go_program(opts) } else { None };
    if let (Some(pid), Some(go)) = (one, go) {
        crate::mem::check_go(&go)?;
        let rate = (opts.mem == MemMode::Sampled).then_some(opts.sample_bytes);
        let objects = match &opts.target {
            Target::Pids(_) => crate::mem::allocator_objects(pid),
            _ => Vec::new(),
        };
        let objects = objects.into_iter().filter(|o: &std::path::PathBuf| !o.ends_with(&go.exe)).collect();
        let mut p = probes(pid, objects, None, false);
        p.go = Some(crate::probes::GoProbe { exe: go.exe, offset: go.probe_offset, sample_bytes: rate });
        return Ok(Some(p));
    }
    // A JVM: the allocation samples it takes itself (a new TLAB, an object
    // outside one), by class; its heap is not malloc's.
    let java = if opts.mem != MemMode::Off { java_vm(opts) } else { None };
    if let (Some(pid), Some(jvm)) = (one, java) {
        if opts.mem == MemMode::Sampled {
            log::warn!("--preload does not apply to a JVM: its allocations are sampled by the JVM's TLABs");
        }
        let functions = crate::mem::java_alloc_functions(&jvm);
        if functions.is_empty() {
            return Err(Error::Usage(
                "--mem on a JVM: no AllocTracer::send_allocation_* in its libjvm.so (a JVM without symbols?)",
            ));
        }
        let mut p = probes(pid, Vec::new(), None, false);
        p.java = Some((jvm, functions));
        return Ok(Some(p));
    }
    Ok(Some(match (opts.mem, &opts.target, held.pid()) {
        (MemMode::Off, _, _) => match one {
            Some(pid) if opts.hbm => probes(pid, Vec::new(), None, false),
            _ => return Ok(None),
        },
        (MemMode::Sampled, _, Some(pid)) => probes(pid, Vec::new(), sampler, false),
        (MemMode::Attach, Target::Spawn(argv), Some(pid)) => {
            probes(pid, crate::mem::allocator_objects_for_command(&argv[0]), None, opts.mem_python)
        }
        (MemMode::Attach, Target::Pids(pids), _) if pids.len() == 1 => {
            probes(pids[0], crate::mem::allocator_objects(pids[0]), None, opts.mem_python)
        }
        (MemMode::Sampled, _, _) => {
            return Err(Error::Usage(
                "--mem --preload needs a command to start (profrec --mem --preload -- CMD)",
            ))
        }
        _ => return Err(Error::Usage("--mem records one process: a command to start or a single -p PID")),
    }))
}

/// The libjvm.so of the one recorded program, if it is a JVM.
fn java_vm(opts: &RecordOptions) -> Option<std::path::PathBuf> {
    match &opts.target {
        Target::Spawn(argv) => crate::mem::jvm_for_command(argv.first()?),
        Target::Pids(pids) if pids.len() == 1 => crate::mem::jvm_of(pids[0]),
        _ => None,
    }
}

/// The Go runtime of the one recorded program, if it is a Go program.
pub(super) fn go_program(opts: &RecordOptions) -> Option<crate::mem::GoRuntime> {
    match &opts.target {
        Target::Spawn(argv) => crate::mem::go_runtime_for_command(argv.first()?),
        Target::Pids(pids) if pids.len() == 1 => crate::mem::go_runtime_of(pids[0]),
        _ => None,
    }
}
