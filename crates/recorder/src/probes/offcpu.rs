//! Off-CPU time: the scheduler tracepoints (`bpf/offcpu.bpf.c`).

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use super::{load_error, no_rodata, object_storage, share_maps, share_python_maps, OncpuSkel, Targets};
use crate::Result;

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/offcpu.skel.rs"));
}
pub(super) use skel::OffcpuSkel;
use skel::OffcpuSkelBuilder;

/// Settings of off-CPU recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffCpuOptions {
    /// Shorter blocks are dropped (and counted) in the kernel.
    pub min_block_ns: u64,
    /// Also record who woke each thread, with the waker's stacks.
    pub wakers: bool,
    /// Take kernel stacks too (the costlier part of the switch-out path).
    pub kernel_stacks: bool,
    /// Tests only: act as if every n-th switch-in were missed (0 = never).
    pub test_miss_switch_ins: u32,
}

/// Loads the off-CPU programs onto the target table and ring buffer of `skel`.
pub(super) fn load(
    skel: &OncpuSkel<'static>,
    targets: &Targets,
    o: &OffCpuOptions,
    stack_bytes: u32,
    links: &mut Vec<Link>,
) -> Result<OffcpuSkel<'static>> {
    let mut open =
        OffcpuSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open off-CPU", e))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("off-CPU"))?;
    rodata.filter_pids = matches!(targets, Targets::Pids { .. });
    rodata.min_block_ns = o.min_block_ns;
    rodata.track_wakers = o.wakers;
    rodata.kernel_stacks = o.kernel_stacks;
    rodata.test_miss_switch_ins = o.test_miss_switch_ins;
    rodata.stack_bytes = stack_bytes.min(super::MAX_STACK_COPY as u32);
    share_maps(skel, &mut open.maps.targets, &mut open.maps.events, &mut open.maps.stack_tops)?;
    share_python_maps(skel, &mut open.maps.py_procs, &mut open.maps.py_tstates)?;
    let off = open.load().map_err(|e| load_error("load off-CPU (verifier log above)", e))?;
    links.push(off.progs.on_switch.attach().map_err(|e| load_error("attach tp_btf/sched_switch", e))?);
    if stack_bytes > 0 {
        // Blocks in syscalls get their stack bytes when the syscall returns.
        links.push(off.progs.on_sys_exit.attach().map_err(|e| load_error("attach tp_btf/sys_exit", e))?);
        links.push(
            off.progs
                .on_thread_exit
                .attach()
                .map_err(|e| load_error("attach tp_btf/sched_process_exit", e))?,
        );
    }
    if o.wakers {
        links.push(off.progs.on_waking.attach().map_err(|e| load_error("attach tp_btf/sched_waking", e))?);
    }
    Ok(off)
}
