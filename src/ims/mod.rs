//! The IMS cloud: wire model, errors, authentication and the HTTP client.
//!
//! What real IMS and IAM do, from public docs and SDKs, and what shaped this
//! client (the simulator in `crate::sim` stands in for the same behaviour):
//! - Job status: `GET {ims}/v1/{project_id}/jobs/{job_id}` (the status API;
//!   since 2025-12 its documented answers carry no progress) and
//!   `GET {ims}/v1/cloudimages/job/{job_id}` (the progress API: the same job
//!   plus `process_percent`, `current_task`, `subJobId`; the project from the
//!   token's scope or the signed `X-Project-Id`); endpoints
//!   `https://ims.{region}.otc.t-systems.com` and `https://iam.{region}…`.
//! - Jobs that make several images (OVA import, volumes to system and data
//!   images) name them only in `sub_jobs_result[].entities`.
//! - Answers vary (`model`): times as RFC 3339 or the legacy
//!   `04-Jun-2015 18:11:06:586`; `end_time` is `""` while running;
//!   `process_percent` a 0–1 fraction (`1` when done); `error_code` and
//!   `fail_reason` `null` on success, and on FAIL the reason may sit only in
//!   `entities`; lower-case `results[].status`; job types beyond the
//!   documented list; sub-jobs with or without `sub_jobs_list`.
//! - Errors (`error`): bodies as `{"error":{"code","message"}}` or flat
//!   `{"error_code","error_msg","request_id"}`; request ID also in
//!   `X-Request-Id`. IMS sends its own errors as HTTP 400 with an IMG code
//!   (IMG.0026 as 403): the code classifies them. Throttling is HTTP 429 `APIG.0308`, no Retry-After
//!   documented.
//! - IAM password auth (`auth`): `POST /v3/auth/tokens` scoped to the
//!   project; the token is the `X-Subject-Token` header, valid 24 h, revoked
//!   early on password or permission changes, so a 401 gets one fresh token.
//! - AK/SK (`signer`): `SDK-HMAC-SHA256` over a canonical request (URI
//!   always ending in `/`, sorted query, signed headers incl. `x-sdk-date`
//!   and `x-project-id`); the gateway also accepts the OTC Go SDK's
//!   `Credential=AK/{day}///sdk_request` form with a derived key. It refuses
//!   a date more than 15 minutes off and **locks an access key for 5 minutes
//!   after 5 bad signatures in a row**: a rejected signature is never retried
//!   in a loop (`APIGW.0301`).

pub mod auth;
pub mod ca;
pub mod client;
pub mod credentials;
pub mod error;
pub mod iam;
pub mod metadata;
pub mod model;
pub mod signer;
pub mod target;
mod transport;

pub use ca::CaBundle;
pub use client::{ImsClient, JobApi, JobSource};
pub use credentials::{Agency, AgencyDomain, Credentials, CredentialsError, IdToken, IdTokenSource, Secret};
pub use error::{ErrorKind, ImsError};
pub use model::Job;
pub use target::{JobTarget, resolve_endpoint};

/// A local fake of IMS and IAM for unit tests.
#[cfg(test)]
pub(crate) mod testing;
