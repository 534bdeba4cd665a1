//! # `tollgate-jose`: JWS/JWT verification for the identity filters
//!
//! One implementation of compact-JWS parsing ([`token`]), JWK sets ([`keys`]), the RSA
//! public operation ([`rsa_public`]) and ECDSA P-256/P-384 verification ([`ec`]) and Ed25519's ([`ed25519`]), shared by `jwt-auth` and `oidc`. A plain library: it
//! exports no proxy-wasm entry points, so any filter can link it.
//!
//! API boundary: nothing here touches the host (no clock, no callouts, no shared data); callers
//! pass the time and the keys in.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod ec;
pub mod ed25519;
pub mod keys;
pub mod rsa_public;
pub mod token;
