//! Reads of another process's memory (`process_vm_readv`): each read is
//! checked, none trusted beyond its bytes.

/// The address space of one process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    pid: libc::pid_t,
}

impl Memory {
    pub(crate) fn new(pid: u32) -> Memory {
        Memory { pid: libc::pid_t::try_from(pid).unwrap_or(0) }
    }

    /// Fills `buf` from `addr`; false unless every byte was read.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if buf.is_empty() {
            return true;
        }
        if self.pid <= 0 || addr == 0 {
            return false;
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: `local` covers exactly `buf`, which we own mutably; the
        // remote range is only read by the kernel, which checks it.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        usize::try_from(n).is_ok_and(|n| n == buf.len())
    }

    pub(crate) fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_ne_bytes(b))
    }

    pub(crate) fn u32(&self, addr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b).then(|| u32::from_ne_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_refuses_bad_addresses() {
        let value: u64 = 0x1122_3344_5566_7788;
        let me = Memory::new(std::process::id());
        assert_eq!(me.u64(&value as *const u64 as u64), Some(value));
        assert_eq!(me.u64(0), None);
        assert_eq!(me.u64(8), None, "an unmapped page");
        assert_eq!(Memory::new(0).u64(&value as *const u64 as u64), None);
    }
}
