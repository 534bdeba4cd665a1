//! The proxy-wasm ABI as plain data, shared by the host, the shipping tools
//! and anything else that reasons about modules without running them. No
//! wasmtime here.
//!
//! - [`AbiVersion`]: the ABI versions a module can declare.
//! - [`pairs`]: the header-map serialisation guests and hosts exchange.
//! - [`MapType`], [`BufferType`], [`MetricKind`]: the kinds calls name by number.
//! - [`Direction`]: request or response.
//! - [`FailurePolicy`]: Envoy's wasm `failure_policy`.
//! - [`PluginIdentity`]: a plugin's name, root id, vm id and VM environment.
//! - [`Status`]: what host functions return to the guest.
//! - [`LogLevel`]: the levels guests log at.
//! - [`guests`]: the bundled reference guests (WAT), for the harness floor
//!   and Envoy's `--compare` baseline.

mod direction;
mod failure_policy;
pub mod guests;
mod identity;
mod kinds;
mod log_level;
pub mod pairs;
mod status;
mod version;

pub use direction::Direction;
pub use failure_policy::FailurePolicy;
pub use identity::{EnvoyNode, IdentityError, NODE, PluginIdentity};
pub use kinds::{BufferType, MapType, MetricKind};
pub use log_level::LogLevel;
pub use status::Status;
pub use version::AbiVersion;
