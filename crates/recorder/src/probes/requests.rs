//! Socket requests: the raw syscall exit tracepoint, and its entry for close (`bpf/requests.bpf.c`).

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::Link;

use super::wire::MAX_PAYLOAD;
use super::{load_error, no_rodata, object_storage, share_maps, OncpuSkel, Targets};
use crate::Result;

#[allow(clippy::all, clippy::unwrap_used, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/requests.skel.rs"));
}
pub(super) use skel::RequestsSkel;
use skel::RequestsSkelBuilder;

/// Loads the socket-syscall programs onto the target table and ring buffer of `skel`.
pub(super) fn load(
    skel: &OncpuSkel<'static>,
    targets: &Targets,
    payload_bytes: u32,
    links: &mut Vec<Link>,
) -> Result<RequestsSkel<'static>> {
    let mut open =
        RequestsSkelBuilder::default().open(object_storage()).map_err(|e| load_error("open requests", e))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| no_rodata("requests"))?;
    rodata.filter_pids = matches!(targets, Targets::Pids { .. });
    rodata.payload_bytes = payload_bytes.min(MAX_PAYLOAD as u32);
    share_maps(skel, &mut open.maps.targets, &mut open.maps.events, &mut open.maps.stack_tops)?;
    let req = open.load().map_err(|e| load_error("load requests (verifier log above)", e))?;
    links.push(req.progs.on_sys_enter.attach().map_err(|e| load_error("attach tp_btf/sys_enter", e))?);
    links.push(req.progs.on_sys_exit.attach().map_err(|e| load_error("attach tp_btf/sys_exit", e))?);
    Ok(req)
}
