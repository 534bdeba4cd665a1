//! Metrics: `proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric`, following Envoy: ids carry the
//! kind in their low two bits; counters only grow (`increment` by a
//! non-positive offset is `BadArgument`); histograms cannot be incremented
//! or read (`BadArgument`); an unknown id is `NotFound`.

use super::{Status, memory as mem};
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
         id_ptr: u32|
         -> u32 {
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Status::BadArgument.code(),
            };
            let id = mem::with_bytes(&mut caller, name_ptr, name_len, |name, state| {
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
            });
            let Some(id) = id else {
                return Status::InvalidMemoryAccess.code();
            };
            Status::written(mem::write_u32(&mut caller, id_ptr, id)).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Caller<'_, HostState>, id: u32, offset: i64| -> u32 {
            let Some(m) = caller.data_mut().metrics.get_mut(id) else {
                return Status::NotFound.code();
            };
            match m.kind {
                MetricKind::Counter if offset > 0 => m.value = m.value.saturating_add(offset),
                MetricKind::Gauge => m.value = m.value.saturating_add(offset),
                _ => return Status::BadArgument.code(),
            }
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut caller: Caller<'_, HostState>, id: u32, value: u64| -> u32 {
            let Some(m) = caller.data_mut().metrics.get_mut(id) else {
                return Status::NotFound.code();
            };
            let v = i64::try_from(value).unwrap_or(i64::MAX);
            match m.kind {
                MetricKind::Counter => m.value = m.value.saturating_add(v),
                MetricKind::Gauge => m.value = v,
                MetricKind::Histogram => {
                    m.value = v;
                    m.samples.push(value);
                }
            }
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: u32, out: u32| -> u32 {
            let Some(m) = caller.data().metrics.get(id) else {
                return Status::NotFound.code();
            };
            if m.kind == MetricKind::Histogram {
                return Status::BadArgument.code();
            }
            let v = m.value as u64;
            Status::written(mem::write_u64(&mut caller, out, v)).code()
        },
    )?;
    Ok(())
}
