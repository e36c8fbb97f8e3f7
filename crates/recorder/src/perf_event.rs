//! `perf_event_open(2)`: the attribute struct and the call, shared by the
//! sampling clock the BPF program hangs on and the mapping records of
//! `mmap_events`.

use std::os::fd::{FromRawFd, OwnedFd};

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER5.
#[repr(C)]
#[derive(Default)]
pub struct PerfEventAttr {
    pub kind: u32,
    pub size: u32,
    pub config: u64,
    pub sample_freq: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub reserved: u16,
}

pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
pub const PERF_COUNT_SW_DUMMY: u64 = 9;

/// Bits of `PerfEventAttr::flags`.
pub mod flag {
    pub const MMAP: u64 = 1 << 8;
    pub const COMM: u64 = 1 << 9;
    pub const FREQ: u64 = 1 << 10;
    pub const SAMPLE_ID_ALL: u64 = 1 << 18;
    pub const MMAP2: u64 = 1 << 23;
    pub const COMM_EXEC: u64 = 1 << 24;
    pub const USE_CLOCKID: u64 = 1 << 25;
}

/// Bits of `PerfEventAttr::sample_type`.
pub const PERF_SAMPLE_TID: u64 = 1 << 1;
pub const PERF_SAMPLE_TIME: u64 = 1 << 2;

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

impl PerfEventAttr {
    /// A software event of this kind with the struct's own size filled in.
    pub fn software(config: u64) -> Self {
        PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            ..Default::default()
        }
    }
}

/// Opens an event on `cpu` for every task there (pid -1), close-on-exec.
pub fn open_on_cpu(attr: &PerfEventAttr, cpu: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a valid, fully initialized perf_event_attr of the size it
    // declares; pid -1 with a cpu means every task on that cpu.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            -1,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    /// PERF_ATTR_SIZE_VER5.
    #[test]
    fn the_attribute_struct_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<super::PerfEventAttr>(), 112);
    }
}
