//! Proxy-wasm log levels (`proxy_log`, `proxy_get_log_level`).

/// Proxy-wasm log levels, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `trace` (0)
    Trace = 0,
    /// `debug` (1)
    Debug = 1,
    /// `info` (2)
    Info = 2,
    /// `warn` (3)
    Warn = 3,
    /// `error` (4)
    Error = 4,
    /// `critical` (5)
    Critical = 5,
}

impl LogLevel {
    /// The level for an ABI value, `None` when out of range.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    /// Lower-case name, as Envoy prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" => Self::Error,
            "critical" => Self::Critical,
            other => {
                return Err(format!(
                    "unknown log level `{other}` (trace, debug, info, warn, error, critical)"
                ));
            }
        })
    }
}

impl TryFrom<u32> for LogLevel {
    type Error = u32;
    /// The level for an ABI value; the value itself when out of range.
    fn try_from(v: u32) -> Result<Self, u32> {
        Self::from_u32(v).ok_or(v)
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for LogLevel {
    /// Compares with a level's lower-case name (`level == "trace"`).
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
