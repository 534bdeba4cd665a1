//! `--memory-limit`, `--max-callouts-per-exchange`, `--exchange-timeout`,
//! `--max-log-bytes-per-exchange`, `--max-log-line-bytes` and
//! `--max-input-bytes`: the bounds a run's VMs and inputs are held to
//! (`tollgate_host::limits`, `tollgate_files::input`), the same flags on
//! every command that runs VMs (`replay`, `bench`, `test`, `envoy`).

use anyhow::{Result, bail};
use std::time::Duration;
use tollgate_host::limits::Limits;

/// The limits flags, flattened into each command that runs VMs.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest linear memory a VM may grow to (bytes, or with KiB/MiB/GiB);
    /// past it memory.grow returns -1 as in Envoy. Default: 1GiB, Envoy's
    /// own (fixed) limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// Most callouts (HTTP and gRPC calls and streams) a VM may dispatch in
    /// one exchange before the exchange fails as a callout storm. Default: 10000.
    #[arg(long, value_name = "N")]
    pub max_callouts_per_exchange: Option<u64>,
    /// Longest wall time one exchange may keep a VM busy delivering callout
    /// answers, in seconds (e.g. 2.5). Default: 60.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub exchange_timeout: Option<Duration>,
    /// Most bytes of guest log kept per exchange (the rest is dropped and
    /// said so). Default: 4MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_log_bytes_per_exchange: Option<u64>,
    /// Longest guest log line kept (the rest is cut and said so). Default: 64KiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_log_line_bytes: Option<u64>,
    /// Largest input file read (recordings, configurations, suites, bodies,
    /// stubs; a JSON-lines line). Default: 1GiB, or TOLLGATE_MAX_INPUT_BYTES.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_input_bytes: Option<u64>,
}

impl LimitArgs {
    /// Sets the input cap for the process and returns the VMs' limits.
    pub fn apply(&self) -> Result<Limits> {
        if let Some(n) = self.max_input_bytes {
            tollgate_files::input::set_max_input_bytes(n);
        }
        let mut l = Limits::default();
        if let Some(n) = self.memory_limit {
            l.memory_bytes = n;
        }
        if let Some(n) = self.max_callouts_per_exchange {
            if n == 0 {
                bail!("--max-callouts-per-exchange must be at least 1");
            }
            l.callouts_per_exchange = n;
        }
        if let Some(d) = self.exchange_timeout {
            l.exchange_wall = d;
        }
        if let Some(n) = self.max_log_bytes_per_exchange {
            l.log_bytes_per_exchange = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.max_log_line_bytes {
            l.log_line_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(l)
    }
}

/// `1048576`, `64KiB`, `128MiB`, `1GiB` (also `K`/`M`/`G`, `KB`..., all
/// powers of 1024); at least 1.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 64KiB, 1GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?} in {s:?} (KiB, MiB or GiB)")),
    };
    let v = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if v == 0 {
        return Err("must be at least 1 byte".into());
    }
    Ok(v)
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("131072"), Ok(131_072));
        assert_eq!(parse_bytes("128KiB"), Ok(131_072));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2m"), Ok(2 << 20));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1TB").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
