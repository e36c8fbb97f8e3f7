//! Fixed-layout records read out of bytes that nothing vouches for (the BPF
//! ring buffer, the kernel's perf ring, the sampler's shared memory): every
//! read is bounds-checked and copies, so no length or alignment is trusted.

/// Structs made only of integers and arrays of them (`#[repr(C)]`), for
/// which any bytes are a valid value.
pub(crate) trait Plain: Copy {}

/// The `T` at the start of `b`, if `b` is long enough.
pub(crate) fn read<T: Plain>(b: &[u8]) -> Option<T> {
    if b.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `b` holds at least size_of::<T>() bytes; T is Plain (every bit
    // pattern is a valid value) and read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// The u32 at `at` in `b`, if there are 4 bytes there.
pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The u64 at `at` in `b`, if there are 8 bytes there.
pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// A NUL-terminated string in a fixed-size field (all of it if no NUL).
pub(crate) fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
