//! The proxy-wasm ABI versions a module can declare through its exports.

/// The proxy-wasm ABI version a module declares through its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`
    V0_1_0,
    /// `proxy_abi_version_0_2_0`
    V0_2_0,
    /// `proxy_abi_version_0_2_1`
    V0_2_1,
}

impl AbiVersion {
    /// Dotted form, e.g. `0.2.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1_0 => "0.1.0",
            Self::V0_2_0 => "0.2.0",
            Self::V0_2_1 => "0.2.1",
        }
    }

    /// The version from a module's export names (newest wins).
    pub fn detect<'a>(exports: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut found = None;
        for name in exports {
            let v = match name {
                "proxy_abi_version_0_2_1" => Self::V0_2_1,
                "proxy_abi_version_0_2_0" => Self::V0_2_0,
                "proxy_abi_version_0_1_0" => Self::V0_1_0,
                _ => continue,
            };
            found = Some(match found {
                Some(f) if rank(f) > rank(v) => f,
                _ => v,
            });
        }
        found
    }
}

fn rank(v: AbiVersion) -> u8 {
    match v {
        AbiVersion::V0_1_0 => 0,
        AbiVersion::V0_2_0 => 1,
        AbiVersion::V0_2_1 => 2,
    }
}

impl std::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
