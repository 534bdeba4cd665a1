//! Envoy's wasm `failure_policy`: what a failed VM means for the streams after it.

/// What happens when a filter's VM fails (traps, runs too long), as Envoy's
/// `failure_policy` (`envoy.extensions.wasm.v3.PluginConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Envoy's default (`UNSPECIFIED` and `FAIL_CLOSED`): the failing stream
    /// and every later one answer 503 `wasm_fail_stream`.
    #[default]
    FailClosed,
    /// `FAIL_OPEN` (or the deprecated `fail_open: true`): the failed filter
    /// is skipped, the chain continues without it.
    FailOpen,
    /// `FAIL_RELOAD`: like `FailClosed` for the failing stream, then a fresh
    /// VM for requests that arrive after the reload backoff (Envoy's default
    /// base interval 1 s); during the backoff requests answer 503.
    FailReload,
}

impl FailurePolicy {
    /// The name Envoy's configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "FAIL_CLOSED",
            Self::FailOpen => "FAIL_OPEN",
            Self::FailReload => "FAIL_RELOAD",
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "FAIL_CLOSED" | "CLOSED" | "UNSPECIFIED" => Self::FailClosed,
            "FAIL_OPEN" | "OPEN" => Self::FailOpen,
            "FAIL_RELOAD" | "RELOAD" => Self::FailReload,
            other => {
                return Err(format!(
                    "unknown failure policy `{other}` (FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD)"
                ));
            }
        })
    }
}
