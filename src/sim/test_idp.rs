//! A TEST identity provider for ims-sim's OIDC federation: published,
//! worthless keys (`tests/fixtures/oidc/`) and helpers that mint JWTs
//! with them, for this crate's tests and anyone testing against ims-sim.
//! Anything signed with these keys proves nothing: never trust them
//! outside a simulator.
//!
//! ```
//! use imagejob_operator::sim::test_idp;
//! // A scenario's identity provider: `jwks: <test_idp::JWKS_JSON>`.
//! let jwt = test_idp::service_account_token("https://kubernetes.default.svc", "iam-sim", "team-a", "imagejobs", 600);
//! assert_eq!(jwt.split('.').count(), 3);
//! ```

use serde_json::{Value, json};

/// The public halves of [`TestKey::Rsa`] and [`TestKey::Ec`], as
/// `kubectl get --raw /openid/v1/jwks` prints a cluster's.
pub const JWKS_JSON: &str = include_str!("../../tests/fixtures/oidc/test-jwks.json");
/// The `kid` of [`TestKey::Rsa`] (RS256).
pub const RSA_KID: &str = "sim-test-rsa";
/// The `kid` of [`TestKey::Ec`] (ES256, P-256).
pub const EC_KID: &str = "sim-test-ec";

const RSA_PEM: &[u8] = include_bytes!("../../tests/fixtures/oidc/test-rsa-key.pem");
const EC_PEM: &[u8] = include_bytes!("../../tests/fixtures/oidc/test-ec-key.pem");
const UNTRUSTED_PEM: &[u8] = include_bytes!("../../tests/fixtures/oidc/untrusted-rsa-key.pem");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKey {
    /// In [`JWKS_JSON`] as `sim-test-rsa`; signs RS256.
    Rsa,
    /// In [`JWKS_JSON`] as `sim-test-ec`; signs ES256.
    Ec,
    /// In no JWKS; signs RS256 (as `sim-test-rsa` by default): its
    /// signatures must fail.
    Untrusted,
}

/// [`JWKS_JSON`] as a JSON value, for scenarios built in code.
pub fn jwks() -> Value {
    serde_json::from_str(JWKS_JSON).expect("the test JWKS is JSON")
}

/// Signs `claims` with `key` under its own `kid`.
pub fn sign(key: TestKey, claims: &Value) -> String {
    let kid = if key == TestKey::Ec { EC_KID } else { RSA_KID };
    sign_with(key, kid, claims)
}

/// Signs `claims` with `key`, naming any `kid` in the header.
pub fn sign_with(key: TestKey, kid: &str, claims: &Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (alg, encoding) = match key {
        TestKey::Rsa => (Algorithm::RS256, EncodingKey::from_rsa_pem(RSA_PEM)),
        TestKey::Ec => (Algorithm::ES256, EncodingKey::from_ec_pem(EC_PEM)),
        TestKey::Untrusted => (Algorithm::RS256, EncodingKey::from_rsa_pem(UNTRUSTED_PEM)),
    };
    let header = Header { kid: Some(kid.to_owned()), ..Header::new(alg) };
    jsonwebtoken::encode(&header, claims, &encoding.expect("test key")).expect("test JWT")
}

/// The header and claims of `claims_from` under the signature of `signed`:
/// a token whose payload was changed after signing.
pub fn splice(signed: &str, claims_from: &str) -> String {
    let signature = signed.rsplit('.').next().unwrap_or_default();
    let body = claims_from.rsplit_once('.').map_or(claims_from, |(body, _)| body);
    format!("{body}.{signature}")
}

/// What the API server's TokenRequest would give ServiceAccount `sa` of
/// `namespace`: RS256, `sub` `system:serviceaccount:{namespace}:{sa}`,
/// valid for `lifetime_secs` from now.
pub fn service_account_token(issuer: &str, audience: &str, namespace: &str, sa: &str, lifetime_secs: i64) -> String {
    sign(TestKey::Rsa, &service_account_claims(issuer, audience, namespace, sa, lifetime_secs))
}

/// The claims of [`service_account_token`], to change before [`sign`]ing.
pub fn service_account_claims(issuer: &str, audience: &str, namespace: &str, sa: &str, lifetime_secs: i64) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({
        "iss": issuer,
        "aud": [audience],
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": sa, "uid": "00000000-0000-0000-0000-000000000000"}},
    })
}
