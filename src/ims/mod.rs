//! The IMS cloud: wire model, errors, authentication and the HTTP client.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
pub mod model;
pub mod signer;
mod transport;

pub use client::{ImsClient, JobSource, JobTarget, resolve_endpoint};
pub use credentials::{Credentials, CredentialsError, Secret};
pub use error::{ErrorKind, ImsError};
pub use model::Job;

/// A local fake of IMS and IAM for unit tests.
#[cfg(test)]
pub(crate) mod testing;
