//! Shipping a filter: the OCI images Istio pulls ([`oci`]), the `WasmPlugin`
//! manifest and Envoy bootstrap that load it ([`manifest`]), and a validator
//! that checks `WasmPlugin` manifests the way the Kubernetes API server does,
//! against the CRD's OpenAPI schema and its CEL rules ([`validate`]).

pub mod manifest;
pub mod oci;
pub mod scaffold;
pub mod schema;
pub mod validate;

use std::path::PathBuf;

/// Why shipping a filter failed: reading or writing a file, or input that is not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file or folder could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file's content is wrong (not YAML, not a module, a missing field...).
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or the name of the input).
        path: String,
        /// What is wrong, naming the field or entry.
        message: String,
    },
}

impl ShipError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_string(),
            message: message.into(),
        }
    }
}
