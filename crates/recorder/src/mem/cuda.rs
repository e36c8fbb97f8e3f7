//! Finding the CUDA driver library (`--hbm`) a process uses or will load.

use std::path::PathBuf;

use crate::{Error, Result};

/// The CUDA driver's file name.
const LIBCUDA: &str = "libcuda.so.1";
/// Where distributions and NVIDIA's installers put the driver library
/// (not `stubs/`: link-time stand-ins without a driver behind them).
const CUDA_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/local/nvidia/lib64",
    "/usr/lib/wsl/lib",
];

/// The CUDA driver library that `pid` uses or will load (`--hbm`): the
/// one given (`--cuda-lib`), the one it has mapped, else the first
/// libcuda.so.1 on its LD_LIBRARY_PATH (a command to start inherits
/// profrec's) or in the system's library directories. uprobes go on the
/// file, so one that is loaded later (dlopen, as the CUDA runtime does) is
/// covered from its first call.
pub fn cuda_library(opts: &crate::RecordOptions, pid: u32) -> Result<PathBuf> {
    if let Some(p) = &opts.cuda_lib {
        return p.canonicalize().map_err(|source| Error::Io { path: p.clone(), source });
    }
    if let Some(mapped) = crate::procfs::read_maps(pid).ok().and_then(|maps| {
        maps.into_iter().find(|m| m.path.rsplit('/').next().is_some_and(|n| n.starts_with("libcuda.so")))
    }) {
        return Ok(PathBuf::from(format!("/proc/{pid}/root{}", mapped.path)));
    }
    let library_path = match opts.target {
        crate::Target::Spawn(_) => {
            std::env::var_os("LD_LIBRARY_PATH").map(|v| v.to_string_lossy().into_owned())
        }
        _ => environ_value(pid, "LD_LIBRARY_PATH"),
    };
    let dirs: Vec<PathBuf> = library_path
        .iter()
        .flat_map(|v| v.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect::<Vec<_>>())
        .chain(CUDA_DIRS.iter().map(PathBuf::from))
        .collect();
    dirs.iter().map(|d| d.join(LIBCUDA)).find(|p| p.is_file()).and_then(|p| p.canonicalize().ok()).ok_or(
        Error::Usage(
            "--hbm: no libcuda.so.1 (the CUDA driver) in the target's maps, on its LD_LIBRARY_PATH \
             or in the system's library directories; give it with --cuda-lib PATH",
        ),
    )
}

/// One variable of a process's environment (read bounded: it is the target's).
fn environ_value(pid: u32, name: &str) -> Option<String> {
    use std::io::Read;
    let mut raw = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/environ")).ok()?.take(1 << 20).read_to_end(&mut raw).ok()?;
    let prefix = format!("{name}=");
    raw.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
