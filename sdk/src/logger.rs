//! The `log` crate bridged to the host's log (`proxy_log`), and a panic hook that reports the
//! panic message and location through the host at critical level before the module traps.
//!
//! [`crate::export_filter!`] installs both; the level filter follows the host's own log level
//! (`proxy_get_log_level`), refreshed when the VM starts and at each `on_configure`.
//!
//! Built natively (tests, tools) the same code writes to standard error instead.

use std::sync::OnceLock;

/// The host's log levels (the proxy-wasm ABI numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum HostLevel {
    /// Very verbose diagnostics.
    Trace = 0,
    /// Diagnostics.
    Debug = 1,
    /// Normal operation.
    Info = 2,
    /// Something odd that was handled.
    Warn = 3,
    /// Something failed.
    Error = 4,
    /// The module is about to stop working (panics).
    Critical = 5,
}

impl HostLevel {
    /// The level of a `log` record.
    ///
    /// ```
    /// use tollgate_sdk::logger::HostLevel;
    /// assert_eq!(HostLevel::from_log(log::Level::Warn), HostLevel::Warn);
    /// ```
    pub fn from_log(level: log::Level) -> Self {
        match level {
            log::Level::Trace => Self::Trace,
            log::Level::Debug => Self::Debug,
            log::Level::Info => Self::Info,
            log::Level::Warn => Self::Warn,
            log::Level::Error => Self::Error,
        }
    }

    /// The ABI number of a level, if it is one.
    ///
    /// ```
    /// use tollgate_sdk::logger::HostLevel;
    /// assert_eq!(HostLevel::from_abi(4), Some(HostLevel::Error));
    /// assert_eq!(HostLevel::from_abi(9), None);
    /// ```
    pub fn from_abi(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    /// The `log` filter that lets through what the host would print at this level
    /// (`Critical` lets nothing from `log` through: `log` has no critical level).
    ///
    /// ```
    /// use tollgate_sdk::logger::HostLevel;
    /// assert_eq!(HostLevel::Info.filter(), log::LevelFilter::Info);
    /// assert_eq!(HostLevel::Critical.filter(), log::LevelFilter::Off);
    /// ```
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Self::Trace => log::LevelFilter::Trace,
            Self::Debug => log::LevelFilter::Debug,
            Self::Info => log::LevelFilter::Info,
            Self::Warn => log::LevelFilter::Warn,
            Self::Error => log::LevelFilter::Error,
            Self::Critical => log::LevelFilter::Off,
        }
    }
}

struct HostLogger;

static LOGGER: HostLogger = HostLogger;
static FILTER_NAME: OnceLock<&'static str> = OnceLock::new();

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            host::log(
                HostLevel::from_log(record.level()),
                &record.args().to_string(),
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the host logger and the panic hook (idempotent). `filter` prefixes panic reports.
///
/// Called by [`crate::export_filter!`]; filters do not call it themselves.
pub fn install(filter: &'static str) {
    let _ = FILTER_NAME.set(filter);
    if log::set_logger(&LOGGER).is_ok() {
        // Until the host is asked (it cannot be during `_initialize`), let everything through:
        // the host drops what is below its own level anyway.
        log::set_max_level(log::LevelFilter::Trace);
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(non-string panic payload)");
            let location = info
                .location()
                .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            let name = FILTER_NAME.get().copied().unwrap_or("tollgate");
            host::log(
                HostLevel::Critical,
                &format!("{name}: panicked{location}: {message}"),
            );
        }));
    }
}

/// Asks the host for its log level and makes `log` follow it.
pub fn refresh_level() {
    if let Some(level) = host::level() {
        log::set_max_level(level.filter());
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    //! The two log host calls, declared here so that a host error never panics inside the
    //! logger or the panic hook (the `proxy-wasm` wrappers panic on unexpected statuses).

    use super::HostLevel;

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        fn proxy_get_log_level(return_level: *mut u32) -> u32;
    }

    pub(super) fn log(level: HostLevel, message: &str) {
        // SAFETY: the pointer and length describe `message`, which outlives the call; the host
        // only reads that range.
        let _status = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
    }

    pub(super) fn level() -> Option<HostLevel> {
        let mut raw: u32 = 0;
        // SAFETY: `raw` is a valid, writable u32 for the duration of the call.
        let status = unsafe { proxy_get_log_level(&mut raw) };
        if status == 0 {
            HostLevel::from_abi(raw)
        } else {
            None
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    //! Native builds (tests, tools): there is no host, so log lines go to standard error.

    use super::HostLevel;

    pub(super) fn log(level: HostLevel, message: &str) {
        eprintln!("[{level:?}] {message}");
    }

    pub(super) fn level() -> Option<HostLevel> {
        None
    }
}
