#![forbid(unsafe_code)]
//! imagejob-operator: Open Telekom Cloud IMS asynchronous jobs as Kubernetes `ImageJob` resources.

pub mod config;
pub mod crd;
pub mod ims;
pub mod status;
pub mod sim;
