//! Metrics: `proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric`, following Envoy: ids carry the
//! kind in their low two bits; counters only grow (`increment` by a
//! non-positive offset is `BadArgument`); histograms cannot be incremented
//! or read (`BadArgument`); an unknown id is `NotFound`.

use super::{AbiError, AbiResult, Status, memory as mem, to_guest, written};
use crate::state::{HostState, Metric, MetricKind};
use wasmtime::{Caller, Linker};

/// Adds the metric functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         name_ptr: u32,
         name_len: u32,
         id_ptr: u32| { to_guest(define(&mut caller, kind, (name_ptr, name_len), id_ptr)) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Caller<'_, HostState>, id: u32, offset: i64| {
            to_guest(increment(caller.data_mut(), id, offset))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut caller: Caller<'_, HostState>, id: u32, value: u64| {
            to_guest(record(caller.data_mut(), id, value))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: u32, out: u32| to_guest(get(&mut caller, id, out)),
    )?;
    Ok(())
}

fn define(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    (name_ptr, name_len): (u32, u32),
    id_ptr: u32,
) -> AbiResult {
    let kind = MetricKind::try_from(kind).map_err(|_| AbiError::Status(Status::BadArgument))?;
    let id = mem::with_bytes(caller, name_ptr, name_len, |name, state| {
        let name = String::from_utf8_lossy(name).into_owned();
        let metrics = &mut state.metrics;
        if let Some(id) = metrics.by_name.get(&(name.clone(), kind as u32)) {
            return *id;
        }
        let id = ((metrics.list.len() as u32) << 2) | kind as u32;
        metrics.list.push(Metric {
            name: name.clone(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        metrics.by_name.insert((name, kind as u32), id);
        id
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?;
    written(mem::write_u32(caller, id_ptr, id))
}

fn increment(state: &mut HostState, id: u32, offset: i64) -> AbiResult {
    let m = state
        .metrics
        .get_mut(id)
        .ok_or(AbiError::Status(Status::NotFound))?;
    match m.kind {
        MetricKind::Counter if offset > 0 => m.value = m.value.saturating_add(offset),
        MetricKind::Gauge => m.value = m.value.saturating_add(offset),
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn record(state: &mut HostState, id: u32, value: u64) -> AbiResult {
    let m = state
        .metrics
        .get_mut(id)
        .ok_or(AbiError::Status(Status::NotFound))?;
    let v = i64::try_from(value).unwrap_or(i64::MAX);
    match m.kind {
        MetricKind::Counter => m.value = m.value.saturating_add(v),
        MetricKind::Gauge => m.value = v,
        MetricKind::Histogram => {
            m.value = v;
            m.samples.push(value);
        }
    }
    Ok(())
}

fn get(caller: &mut Caller<'_, HostState>, id: u32, out: u32) -> AbiResult {
    let m = caller
        .data()
        .metrics
        .get(id)
        .ok_or(AbiError::Status(Status::NotFound))?;
    if m.kind == MetricKind::Histogram {
        return Err(Status::BadArgument.into());
    }
    let v = m.value as u64;
    written(mem::write_u64(caller, out, v))
}
