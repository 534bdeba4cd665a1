//! WASI (`wasi_snapshot_preview1` and `wasi_unstable`) as Envoy provides it:
//! stdout and stderr go to the log (info and error, trailing newline
//! dropped), environment variables come from the VM settings, clocks from
//! the virtual clock, randomness from the seeded generator; there is no
//! filesystem or network, and every other call answers the errno
//! proxy-wasm-cpp-host answers. `proc_exit`, `fd_seek` and `fd_close` fail
//! the VM in Envoy; here they trap.

use super::memory as mem;
use crate::state::{HostState, LogLevel};
use wasmtime::{Caller, Linker};

const SUCCESS: u32 = 0;
const BADF: u32 = 8;
/// What proxy-wasm-cpp-host answers for `fd_readdir` (it uses 20).
const READDIR_NOTDIR: u32 = 20;
const FAULT: u32 = 21;
const INVAL: u32 = 28;
const NOENT: u32 = 44;
const NOSYS: u32 = 52;
const NOTSUP: u32 = 58;
/// Envoy's limit for one `random_get`.
const RANDOM_GET_MAX: u32 = 64 * 1024;

/// The guest called `proc_exit`; carried as the trap's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcExit(pub u32);

impl std::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the module called proc_exit({})", self.0)
    }
}

impl std::error::Error for ProcExit {}

fn std_fd(fd: u32) -> bool {
    fd == 1 || fd == 2
}

fn fatal(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "the module called WASI `{what}`, which Envoy treats as a fatal VM error"
    ))
}

/// Gathers an iovec list and logs it; `Err(errno)` on a bad fd or pointer.
fn write_iovs(
    caller: &mut Caller<'_, HostState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
) -> Result<u32, u32> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Err(BADF),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len {
        let at = iovs
            .checked_add(i.checked_mul(8).ok_or(FAULT)?)
            .ok_or(FAULT)?;
        let buf = mem::read_u32(caller, at).ok_or(FAULT)?;
        let len = mem::read_u32(caller, at.checked_add(4).ok_or(FAULT)?).ok_or(FAULT)?;
        if len != 0 {
            text.extend(mem::read(caller, buf, len).ok_or(FAULT)?);
        }
    }
    let written = text.len() as u32;
    if !text.is_empty() {
        if text.last() == Some(&b'\n') {
            text.pop();
        }
        caller
            .data_mut()
            .log(level, String::from_utf8_lossy(&text).into_owned());
    }
    Ok(written)
}

/// `fd_write`/`fd_pwrite`: logs the iovecs and stores the byte count at `out`.
fn write_and_count(c: &mut Caller<'_, HostState>, fd: u32, iovs: u32, n: u32, out: u32) -> u32 {
    match write_iovs(c, fd, iovs, n) {
        Ok(w) if mem::write_u32(c, out, w) => SUCCESS,
        Ok(_) => FAULT,
        Err(e) => e,
    }
}

/// Stores a zero `u32` at `out`, then answers `errno` (or `FAULT` on a bad pointer).
fn zero_then(c: &mut Caller<'_, HostState>, out: u32, errno: u32) -> u32 {
    if mem::write_u32(c, out, 0) {
        errno
    } else {
        FAULT
    }
}

/// `SUCCESS` on stdout/stderr, `BADF` on any other fd.
fn std_fd_ok(fd: u32) -> u32 {
    if std_fd(fd) { SUCCESS } else { BADF }
}

/// Registers a call that ignores its arguments and answers a fixed errno.
macro_rules! fixed {
    ($linker:expr, $m:expr, $name:literal, ($($t:ty),*) => $errno:expr) => {
        $linker.func_wrap($m, $name, |_c: Caller<'_, HostState>, $(_: $t),*| -> u32 { $errno })?;
    };
}

/// Registers a call that answers `SUCCESS` on stdout/stderr and `BADF` otherwise.
macro_rules! std_fd_only {
    ($linker:expr, $m:expr, $name:literal, ($($t:ty),*)) => {
        $linker.func_wrap($m, $name, |_c: Caller<'_, HostState>, fd: u32, $(_: $t),*| -> u32 {
            std_fd_ok(fd)
        })?;
    };
}

fn add_module(linker: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Caller<'_, HostState>, fd: u32, iovs: u32, n: u32, out: u32| -> u32 {
            write_and_count(&mut c, fd, iovs, n, out)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_pwrite",
        |mut c: Caller<'_, HostState>, fd: u32, iovs: u32, n: u32, _off: u64, out: u32| -> u32 {
            write_and_count(&mut c, fd, iovs, n, out)
        },
    )?;
    fixed!(linker, m, "fd_read", (u32, u32, u32, u32) => NOSYS);
    fixed!(linker, m, "fd_pread", (u32, u32, u32, u64, u32) => NOSYS);
    linker.func_wrap(
        m,
        "fd_seek",
        |_c: Caller<'_, HostState>,
         _fd: u32,
         _off: i64,
         _whence: u32,
         _out: u32|
         -> wasmtime::Result<u32> { Err(fatal("fd_seek")) },
    )?;
    linker.func_wrap(
        m,
        "fd_close",
        |_c: Caller<'_, HostState>, _fd: u32| -> wasmtime::Result<u32> { Err(fatal("fd_close")) },
    )?;
    linker.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: Caller<'_, HostState>, fd: u32, out: u32| -> u32 {
            if !std_fd(fd) {
                return BADF;
            }
            // filetype 0, flags 0, rights_base = FD_WRITE (64), inheriting 0.
            let mut stat = [0u8; 24];
            stat[8..16].copy_from_slice(&64u64.to_le_bytes());
            if mem::write(&mut c, out, &stat) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    fixed!(linker, m, "fd_fdstat_set_flags", (u32, u32) => NOSYS);
    std_fd_only!(linker, m, "fd_fdstat_set_rights", (u64, u64));
    fixed!(linker, m, "fd_prestat_get", (u32, u32) => BADF);
    fixed!(linker, m, "fd_prestat_dir_name", (u32, u32, u32) => NOSYS);
    fixed!(linker, m, "fd_filestat_get", (u32, u32) => BADF);
    std_fd_only!(linker, m, "fd_filestat_set_size", (u64));
    std_fd_only!(linker, m, "fd_filestat_set_times", (u64, u64, u32));
    fixed!(linker, m, "fd_advise", (u32, u64, u64, u32) => SUCCESS);
    std_fd_only!(linker, m, "fd_allocate", (u64, u64));
    std_fd_only!(linker, m, "fd_datasync", ());
    std_fd_only!(linker, m, "fd_sync", ());
    linker.func_wrap(
        m,
        "fd_tell",
        |mut c: Caller<'_, HostState>, fd: u32, out: u32| -> u32 {
            if !std_fd(fd) {
                return BADF;
            }
            if mem::write_u64(&mut c, out, 0) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_readdir",
        |mut c: Caller<'_, HostState>, _fd: u32, _b: u32, _l: u32, _k: u64, out: u32| -> u32 {
            zero_then(&mut c, out, READDIR_NOTDIR)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_renumber",
        |_c: Caller<'_, HostState>, fd: u32, to: u32| -> u32 {
            if std_fd(fd) && std_fd(to) {
                NOTSUP
            } else {
                BADF
            }
        },
    )?;
    fixed!(linker, m, "path_open", (u32, u32, u32, u32, u32, i64, i64, u32, u32) => NOENT);
    fixed!(linker, m, "path_filestat_get", (u32, u32, u32, u32, u32) => NOTSUP);
    fixed!(linker, m, "path_filestat_set_times", (u32, u32, u32, u32, u64, u64, u32) => NOTSUP);
    fixed!(linker, m, "path_create_directory", (u32, u32, u32) => NOTSUP);
    fixed!(linker, m, "path_remove_directory", (u32, u32, u32) => NOTSUP);
    fixed!(linker, m, "path_unlink_file", (u32, u32, u32) => NOTSUP);
    fixed!(linker, m, "path_link", (u32, u32, u32, u32, u32, u32, u32) => NOTSUP);
    fixed!(linker, m, "path_rename", (u32, u32, u32, u32, u32, u32) => NOTSUP);
    fixed!(linker, m, "path_symlink", (u32, u32, u32, u32, u32) => NOTSUP);
    linker.func_wrap(
        m,
        "path_readlink",
        |mut c: Caller<'_, HostState>,
         _fd: u32,
         _p: u32,
         _l: u32,
         _b: u32,
         _bl: u32,
         out: u32|
         -> u32 { zero_then(&mut c, out, NOTSUP) },
    )?;
    linker.func_wrap(
        m,
        "sock_accept",
        |mut c: Caller<'_, HostState>, _fd: u32, _f: u32, out: u32| -> u32 {
            zero_then(&mut c, out, NOTSUP)
        },
    )?;
    linker.func_wrap(
        m,
        "sock_recv",
        |mut c: Caller<'_, HostState>,
         _fd: u32,
         _d: u32,
         _l: u32,
         _f: u32,
         out: u32,
         flags_out: u32|
         -> u32 {
            if mem::write_u32(&mut c, out, 0) && mem::write(&mut c, flags_out, &[0, 0]) {
                NOTSUP
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        m,
        "sock_send",
        |mut c: Caller<'_, HostState>, _fd: u32, _d: u32, _l: u32, _f: u32, out: u32| -> u32 {
            zero_then(&mut c, out, NOTSUP)
        },
    )?;
    fixed!(linker, m, "sock_shutdown", (u32, u32) => NOTSUP);
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut c: Caller<'_, HostState>, count_out: u32, size_out: u32| -> u32 {
            let env = &c.data().settings.env;
            let count = env.len() as u32;
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            if mem::write_u32(&mut c, count_out, count)
                && mem::write_u32(&mut c, size_out, size as u32)
            {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        m,
        "environ_get",
        |mut c: Caller<'_, HostState>, mut array: u32, mut buf: u32| -> u32 {
            let settings = c.data().settings.clone();
            for (k, v) in &settings.env {
                let entry = format!("{k}={v}\0");
                if !mem::write_u32(&mut c, array, buf) || !mem::write(&mut c, buf, entry.as_bytes())
                {
                    return FAULT;
                }
                buf = buf.wrapping_add(entry.len() as u32);
                array = array.wrapping_add(4);
            }
            SUCCESS
        },
    )?;
    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut c: Caller<'_, HostState>, argc_out: u32, size_out: u32| -> u32 {
            if mem::write_u32(&mut c, argc_out, 0) && mem::write_u32(&mut c, size_out, 0) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    fixed!(linker, m, "args_get", (u32, u32) => SUCCESS);
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Caller<'_, HostState>, id: u32, _precision: u64, out: u32| -> u32 {
            let clock = c.data().clock;
            let now = match id {
                0 => clock.realtime,
                1 => clock.monotonic,
                _ => return NOTSUP,
            };
            if mem::write_u64(&mut c, out, now) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        m,
        "clock_res_get",
        |mut c: Caller<'_, HostState>, id: u32, out: u32| -> u32 {
            if id > 1 {
                return NOTSUP;
            }
            if mem::write_u64(&mut c, out, 1) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(
        m,
        "random_get",
        |mut c: Caller<'_, HostState>, ptr: u32, len: u32| -> u32 {
            if len > RANDOM_GET_MAX {
                return INVAL;
            }
            if len == 0 {
                return SUCCESS;
            }
            let mut bytes = vec![0u8; len as usize];
            c.data_mut().rng.fill(&mut bytes);
            if mem::write(&mut c, ptr, &bytes) {
                SUCCESS
            } else {
                FAULT
            }
        },
    )?;
    linker.func_wrap(m, "sched_yield", |_c: Caller<'_, HostState>| -> u32 {
        SUCCESS
    })?;
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut c: Caller<'_, HostState>, _in: u32, _out: u32, _n: u32, nevents: u32| -> u32 {
            zero_then(&mut c, nevents, SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "proc_exit",
        |mut c: Caller<'_, HostState>, code: u32| -> wasmtime::Result<()> {
            c.data_mut().proc_exit = Some(code);
            Err(wasmtime::Error::new(ProcExit(code)))
        },
    )?;
    Ok(())
}

/// Adds WASI under both `wasi_snapshot_preview1` and `wasi_unstable`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    add_module(linker, "wasi_snapshot_preview1")?;
    add_module(linker, "wasi_unstable")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::AbiVersion;
    use crate::state::{SharedRegistry, VmSettings};
    use std::sync::Arc;
    use wasmtime::{Engine, Instance, Module, Store};

    /// Each export calls one WASI import with fixed arguments; `_u` the same
    /// import under `wasi_unstable`.
    const GUEST: &str = r#"
      (module
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_unstable" "fd_read" (func $read_u (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_pread" (func $pread (param i32 i32 i32 i64 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
        (import "wasi_unstable" "fd_prestat_get" (func $prestat_u (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_advise" (func $advise (param i32 i64 i64 i32) (result i32)))
        (import "wasi_snapshot_preview1" "path_open"
          (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (import "wasi_unstable" "path_link" (func $link (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "sock_shutdown" (func $shutdown (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_allocate" (func $allocate (param i32 i64 i64) (result i32)))
        (import "wasi_unstable" "fd_sync" (func $sync (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "read") (result i32) (call $read (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (func (export "read_u") (result i32) (call $read_u (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (func (export "pread") (result i32)
          (call $pread (i32.const 0) (i32.const 0) (i32.const 0) (i64.const 0) (i32.const 0)))
        (func (export "prestat") (result i32) (call $prestat (i32.const 3) (i32.const 0)))
        (func (export "prestat_u") (result i32) (call $prestat_u (i32.const 3) (i32.const 0)))
        (func (export "advise") (result i32) (call $advise (i32.const 9) (i64.const 0) (i64.const 0) (i32.const 0)))
        (func (export "open") (result i32)
          (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                      (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
        (func (export "link") (result i32)
          (call $link (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 0) (i32.const 0)))
        (func (export "shutdown") (result i32) (call $shutdown (i32.const 1) (i32.const 0)))
        (func (export "args") (result i32) (call $args (i32.const 0) (i32.const 0)))
        (func (export "allocate_stdout") (result i32) (call $allocate (i32.const 1) (i64.const 0) (i64.const 8)))
        (func (export "allocate_file") (result i32) (call $allocate (i32.const 5) (i64.const 0) (i64.const 8)))
        (func (export "sync_stderr") (result i32) (call $sync (i32.const 2)))
        (func (export "sync_file") (result i32) (call $sync (i32.const 4))))
    "#;

    #[test]
    fn stubs_answer_cpp_host_errnos_under_both_module_names() {
        let engine = Engine::default();
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).expect("WASI links");
        let module = Module::new(&engine, GUEST).expect("guest compiles");
        let state = HostState::new(
            Arc::new(VmSettings::default()),
            Arc::new(SharedRegistry::default()),
            AbiVersion::V0_2_1,
        );
        let mut store = Store::new(&engine, state);
        let instance: Instance = linker
            .instantiate(&mut store, &module)
            .expect("instantiates");
        let expected = [
            ("read", NOSYS),
            ("read_u", NOSYS),
            ("pread", NOSYS),
            ("prestat", BADF),
            ("prestat_u", BADF),
            ("advise", SUCCESS),
            ("open", NOENT),
            ("link", NOTSUP),
            ("shutdown", NOTSUP),
            ("args", SUCCESS),
            ("allocate_stdout", SUCCESS),
            ("allocate_file", BADF),
            ("sync_stderr", SUCCESS),
            ("sync_file", BADF),
        ];
        for (export, errno) in expected {
            let f = instance
                .get_typed_func::<(), u32>(&mut store, export)
                .expect("export exists");
            assert_eq!(f.call(&mut store, ()).expect("no trap"), errno, "{export}");
        }
    }
}
