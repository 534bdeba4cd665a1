//! Support for the integration tests: where Envoy and the built filters are,
//! a real Envoy process guard, a real upstream server, a plain HTTP/1.1 client
//! and header comparisons between Envoy and the harness.
//!
//! Nothing here skips: when Envoy or the filters are missing the helpers fail
//! with a message saying which `cargo xtask` command provides them. Every
//! process or thread started here is stopped by a guard's `Drop`, so a failing
//! assertion never leaves an Envoy or a server behind.
//!
//! Errors are `anyhow` errors: this crate only serves its own tests, and the
//! messages (with the tail of Envoy's log) are what a failing test prints.

pub mod browser;
pub mod client;
pub mod demo;
pub mod envoy;
pub mod grpc;
pub mod guest;
pub mod headers;
pub use tollgate_envoy::http1;
pub mod jwt;
pub mod launcher;
pub mod oidc;
pub mod paths;
pub mod stats;
pub mod trickle;
pub mod upstream;
