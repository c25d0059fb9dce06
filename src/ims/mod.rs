//! The IMS cloud: wire model, errors, authentication and the HTTP client.

pub mod model;
pub mod signer;
