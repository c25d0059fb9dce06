#![forbid(unsafe_code)]
//! imagejob-operator: Open Telekom Cloud IMS asynchronous jobs as Kubernetes `ImageJob` resources.

pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod http;
pub mod ims;
pub mod metrics;
pub mod progress;
pub mod regions;
pub mod sim;
pub mod status;
pub mod telemetry;
pub mod text;
