//! The status codes host functions return to the guest (`WasmResult`).

/// Status codes returned to the guest (proxy-wasm `WasmResult`, as numbered
/// by proxy-wasm-cpp-host and the ABI spec).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A key (header, property, shared data, queue, metric) was not found.
    NotFound = 1,
    /// An argument was out of range, or the object is not available now.
    BadArgument = 2,
    /// Data could not be serialised.
    SerializationFailure = 3,
    /// Data could not be parsed.
    ParseFailure = 4,
    /// An expression was illegal or unrecognised.
    BadExpression = 5,
    /// A pointer or length the guest passed is outside its memory.
    InvalidMemoryAccess = 6,
    /// A container (queue) was empty.
    Empty = 7,
    /// Compare-and-swap value did not match.
    CasMismatch = 8,
    /// A result was of an unexpected size.
    ResultMismatch = 9,
    /// Something failed inside the host.
    InternalFailure = 10,
    /// The connection or stream was closed.
    BrokenConnection = 11,
    /// The host does not implement this.
    Unimplemented = 12,
}

impl Status {
    /// `Ok` when a write into guest memory succeeded, else `InvalidMemoryAccess`.
    pub const fn written(ok: bool) -> Self {
        if ok {
            Self::Ok
        } else {
            Self::InvalidMemoryAccess
        }
    }

    /// The raw value the guest receives.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

impl From<Status> for u32 {
    fn from(s: Status) -> u32 {
        s as u32
    }
}

impl TryFrom<u32> for Status {
    type Error = u32;
    /// The status for a raw value; the value itself when it names none.
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::Ok,
            1 => Self::NotFound,
            2 => Self::BadArgument,
            3 => Self::SerializationFailure,
            4 => Self::ParseFailure,
            5 => Self::BadExpression,
            6 => Self::InvalidMemoryAccess,
            7 => Self::Empty,
            8 => Self::CasMismatch,
            9 => Self::ResultMismatch,
            10 => Self::InternalFailure,
            11 => Self::BrokenConnection,
            12 => Self::Unimplemented,
            other => return Err(other),
        })
    }
}
