//! OIDC federation ("workload identity"): an identity provider's ID token
//! (a Kubernetes ServiceAccount token) exchanged for an IAM token by
//! `POST /v3.0/OS-AUTH/id-token/tokens`. Pure: the checks of the token and
//! of the provider's conversion rules; the handler lives in the server.
//!
//! Checks, in order, each refused with 401 `IAM.0001` and a message naming
//! it: a JWT at all; an asymmetric `alg` (RS*/PS*/ES*, never HS* or none);
//! a key of the provider's JWKS by `kid` (without a `kid`, the only key);
//! the key's own `alg`, if it has one, equal to the token's; the signature;
//! `iss` equal to the provider's issuer; `aud` (a string or a list)
//! containing its `client_id`; `exp` in the future; `nbf`, when present,
//! not in the future (no leeway for either); a string `sub`. Then the
//! rules: none matching is 403 `IAM.0003`.

use std::collections::HashSet;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::iam::FlatRefusal;

/// An identity provider of protocol `oidc`, as its `openid-connect-config`
/// and conversion rules describe it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// The `X-Idp-Id` clients send.
    pub id: String,
    /// `idp_url`: the `iss` tokens must carry.
    pub issuer: String,
    /// The audience tokens must carry.
    pub client_id: String,
    /// `signing_key`: a JWKS, as a JSON object or the JSON text of one.
    #[serde(deserialize_with = "jwks")]
    pub jwks: JwkSet,
    /// The domain (account) its federated users belong to.
    #[serde(default = "default_domain")]
    pub domain: String,
    #[serde(default)]
    pub rules: Vec<MappingRule>,
}

fn default_domain() -> String {
    "sim-domain".into()
}

/// A conversion rule: when every `remote` condition holds, the `local`
/// user and groups apply, and the user may scope to `projects`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    pub remote: Vec<RemoteCondition>,
    /// IAM's list of `{"user": {"name"}}` and `{"group": {"name"}}`;
    /// `{0}`, `{1}`… stand for the claim values of the remote conditions.
    #[serde(default)]
    pub local: Vec<Value>,
    /// Project ids or names; empty or absent = every project. (The sim's
    /// stand-in for the permissions of the groups in `local`.)
    #[serde(default)]
    pub projects: Vec<String>,
}

/// `{type: <claim>, any_one_of: [...]}`, `{type, not_any_of: [...]}`, or
/// `{type}` alone (the claim must be present).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteCondition {
    #[serde(rename = "type")]
    pub claim: String,
    #[serde(default)]
    pub any_one_of: Option<Vec<String>>,
    #[serde(default)]
    pub not_any_of: Option<Vec<String>>,
}

fn jwks<'de, D: Deserializer<'de>>(d: D) -> Result<JwkSet, D::Error> {
    let value = match Value::deserialize(d)? {
        Value::String(text) => serde_json::from_str(&text).map_err(de::Error::custom)?,
        other => other,
    };
    serde_json::from_value(value).map_err(|e| de::Error::custom(format!("jwks: {e}")))
}

impl IdentityProvider {
    pub fn validate(&self) -> Result<(), String> {
        if self.jwks.keys.is_empty() {
            return Err("jwks has no keys".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.remote.is_empty() {
                return Err(format!("rule {i}: `remote` needs at least one condition"));
            }
            if rule.remote.iter().any(|c| c.any_one_of.is_some() && c.not_any_of.is_some()) {
                return Err(format!("rule {i}: a condition has either any_one_of or not_any_of"));
            }
        }
        Ok(())
    }
}

/// Verifies an ID token against the provider; its claims when it passes.
/// `now` in Unix seconds.
pub fn verify(idp: &IdentityProvider, jwt: &str, now: i64) -> Result<Map<String, Value>, FlatRefusal> {
    let refuse = |why: String| FlatRefusal::unauthenticated(format!("The id_token is invalid: {why}"));
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| refuse(format!("not a JWT ({e})")))?;
    if !is_asymmetric(header.alg) {
        return Err(refuse(format!("algorithm {:?} is not allowed", header.alg)));
    }
    let jwk = signing_key(&idp.jwks, header.kid.as_deref()).map_err(refuse)?;
    if let Some(alg) = jwk.common.key_algorithm
        && format!("{alg:?}") != format!("{:?}", header.alg)
    {
        return Err(refuse(format!("the key is for {alg:?}, the token says {:?}", header.alg)));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| refuse(format!("unusable signing key ({e})")))?;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &signature_only(header.alg))
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => refuse("signature verification failed".into()),
            _ => refuse(format!("cannot verify ({e})")),
        })?
        .claims;
    check_claims(idp, &claims, now).map_err(refuse)?;
    Ok(claims)
}

fn is_asymmetric(alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA)
}

fn signing_key<'a>(jwks: &'a JwkSet, kid: Option<&str>) -> Result<&'a Jwk, String> {
    match kid {
        Some(kid) => jwks.find(kid).ok_or_else(|| format!("no signing key with kid {kid:?}")),
        None if jwks.keys.len() == 1 => Ok(&jwks.keys[0]),
        None => Err("no kid, and the provider has several keys".into()),
    }
}

/// The library checks the signature only; the claims are checked by
/// [`check_claims`] against an injected clock, with precise messages.
fn signature_only(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims = HashSet::new();
    v
}

fn check_claims(idp: &IdentityProvider, claims: &Map<String, Value>, now: i64) -> Result<(), String> {
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss != Some(idp.issuer.as_str()) {
        return Err(format!("iss {iss:?} is not the provider's issuer {:?}", idp.issuer));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == idp.client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a == idp.client_id.as_str()),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud does not contain the client_id {:?}", idp.client_id));
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or("no numeric exp")?;
    if now >= exp {
        return Err(format!("expired (exp {exp}, now {now})"));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or("nbf is not a number")?;
        if now < nbf {
            return Err(format!("not valid yet (nbf {nbf}, now {now})"));
        }
    }
    claims.get("sub").and_then(Value::as_str).map(|_| ()).ok_or_else(|| "no sub".into())
}

/// What the conversion rules make of a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub sub: String,
    /// The local user name; `FederationUser` when no rule names one.
    pub user_name: String,
    pub groups: Vec<String>,
    /// Ids or names; empty = every project.
    pub projects: Vec<String>,
}

/// Applies every matching rule (as IAM does): groups and projects add up,
/// a rule without projects allows all, the first user name wins. No
/// matching rule: 403.
pub fn map_claims(idp: &IdentityProvider, claims: &Map<String, Value>) -> Result<Mapped, FlatRefusal> {
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut mapped = Mapped { sub: sub.clone(), user_name: String::new(), groups: vec![], projects: vec![] };
    let mut all_projects = false;
    let mut matched = false;
    for rule in &idp.rules {
        let Some(values) = rule.remote.iter().map(|c| condition_value(c, claims)).collect::<Option<Vec<_>>>() else {
            continue;
        };
        matched = true;
        all_projects |= rule.projects.is_empty();
        mapped.projects.extend(rule.projects.iter().cloned());
        for local in &rule.local {
            if let Some(name) = local["user"]["name"].as_str()
                && mapped.user_name.is_empty()
            {
                mapped.user_name = fill_placeholders(name, &values);
            }
            if let Some(name) = local["group"]["name"].as_str() {
                mapped.groups.push(fill_placeholders(name, &values));
            }
        }
    }
    if !matched {
        return Err(FlatRefusal::forbidden(format!(
            "No conversion rule of identity provider {} matches sub {sub:?}",
            idp.id
        )));
    }
    if all_projects {
        mapped.projects.clear();
    }
    if mapped.user_name.is_empty() {
        mapped.user_name = "FederationUser".into();
    }
    Ok(mapped)
}

/// The value a condition matched (the claim's first value), or None.
fn condition_value(c: &RemoteCondition, claims: &Map<String, Value>) -> Option<String> {
    let values = claim_values(claims.get(&c.claim)?);
    let first = values.first()?.clone();
    let matches = match (&c.any_one_of, &c.not_any_of) {
        (Some(any), _) => values.iter().any(|v| any.contains(v)),
        (None, Some(none)) => !values.iter().any(|v| none.contains(v)),
        (None, None) => true,
    };
    matches.then_some(first)
}

/// A claim as text values: a string, each item of a list, or a scalar.
fn claim_values(claim: &Value) -> Vec<String> {
    match claim {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(claim_values).collect(),
        Value::Null | Value::Object(_) => vec![],
        other => vec![other.to_string()],
    }
}

fn fill_placeholders(template: &str, values: &[String]) -> String {
    values.iter().enumerate().fold(template.to_owned(), |t, (i, v)| t.replace(&format!("{{{i}}}"), v))
}

/// The exchange's body: `auth.id_token.id` and the project scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub id_token: String,
    pub project: String,
}

pub fn parse_exchange(body: &[u8]) -> Result<Exchange, FlatRefusal> {
    let value: Value = serde_json::from_slice(body).map_err(|_| FlatRefusal::bad_body("not JSON"))?;
    let id_token = value["auth"]["id_token"]["id"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FlatRefusal::bad_body("auth.id_token.id is required"))?;
    let project = super::iam::scoped_project(&value)?;
    Ok(Exchange { id_token: id_token.to_owned(), project })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_idp::{self, TestKey};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const SUB: &str = "system:serviceaccount:team-a:imagejobs";

    fn provider() -> IdentityProvider {
        let rules = json!([
            {"remote": [{"type": "sub", "any_one_of": [SUB]}],
             "local": [{"user": {"name": "{0}"}}, {"group": {"name": "ims-team-a"}}],
             "projects": ["p-team-a"]},
            {"remote": [{"type": "sub", "not_any_of": [SUB, "system:serviceaccount:team-b:imagejobs"]},
                        {"type": "aud"}],
             "projects": ["p-shared"]},
        ]);
        serde_json::from_value(json!({
            "id": "k8s", "issuer": "https://kubernetes.default.svc", "client_id": "iam-sim",
            "jwks": test_idp::jwks(), "rules": rules}))
        .unwrap()
    }

    fn claims(sub: &str) -> Value {
        json!({"iss": "https://kubernetes.default.svc", "aud": ["iam-sim", "other"], "sub": sub,
               "exp": NOW + 600, "iat": NOW - 5, "nbf": NOW - 5})
    }

    fn refusal(jwt: &str) -> String {
        let e = verify(&provider(), jwt, NOW).unwrap_err();
        assert_eq!((e.status, e.code), (401, "IAM.0001"), "{e:?}");
        e.message
    }

    #[test]
    fn good_tokens_of_both_algorithms_pass() {
        for key in [TestKey::Rsa, TestKey::Ec] {
            let claims = verify(&provider(), &test_idp::sign(key, &claims(SUB)), NOW).unwrap();
            assert_eq!(claims["sub"], SUB);
        }
        // The JWKS may also be given as text, as `kubectl get --raw` prints it.
        let text: IdentityProvider = serde_json::from_value(json!({
            "id": "k", "issuer": "i", "client_id": "c", "jwks": test_idp::JWKS_JSON}))
        .unwrap();
        assert_eq!(text.jwks.keys.len(), 2);
    }

    #[test]
    fn each_check_refuses_with_its_reason() {
        let mut c = claims(SUB);
        assert!(refusal("not-a-jwt").contains("not a JWT"));
        let unknown_kid = test_idp::sign_with(TestKey::Rsa, "rotated-away", &c);
        assert!(refusal(&unknown_kid).contains(r#"no signing key with kid "rotated-away""#));
        let forged = test_idp::sign_with(TestKey::Untrusted, test_idp::RSA_KID, &c);
        assert!(refusal(&forged).contains("signature verification failed"));
        let mut other = c.clone();
        other["sub"] = json!("system:serviceaccount:kube-system:admin");
        let tampered = test_idp::splice(&test_idp::sign(TestKey::Rsa, &c), &test_idp::sign(TestKey::Rsa, &other));
        assert!(refusal(&tampered).contains("signature verification failed"));
        let wrong_family = test_idp::sign_with(TestKey::Rsa, test_idp::EC_KID, &c);
        assert!(refusal(&wrong_family).contains("the key is for ES256"));
        c["iss"] = json!("https://evil.example");
        assert!(refusal(&test_idp::sign(TestKey::Rsa, &c)).contains("iss"));
        c = claims(SUB);
        c["aud"] = json!("someone-else");
        assert!(refusal(&test_idp::sign(TestKey::Rsa, &c)).contains("aud does not contain"));
        c = claims(SUB);
        c["exp"] = json!(NOW);
        assert!(refusal(&test_idp::sign(TestKey::Rsa, &c)).contains("expired"));
        c = claims(SUB);
        c["nbf"] = json!(NOW + 1);
        assert!(refusal(&test_idp::sign(TestKey::Rsa, &c)).contains("not valid yet"));
        c = claims(SUB);
        c.as_object_mut().unwrap().remove("sub");
        assert!(refusal(&test_idp::sign(TestKey::Rsa, &c)).contains("no sub"));
    }

    #[test]
    fn symmetric_algorithms_are_refused() {
        let key = jsonwebtoken::EncodingKey::from_secret(b"secret");
        let hs = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims(SUB), &key).unwrap();
        assert!(refusal(&hs).contains("HS256 is not allowed"));
    }

    #[test]
    fn rules_map_subjects_to_users_groups_and_projects() {
        let idp = provider();
        let map = |sub: &str| map_claims(&idp, claims(sub).as_object().unwrap());
        let team_a = map(SUB).unwrap();
        assert_eq!(team_a.user_name, SUB);
        assert_eq!(team_a.groups, ["ims-team-a"]);
        assert_eq!(team_a.projects, ["p-team-a"]);
        let other = map("system:serviceaccount:team-c:ci").unwrap();
        assert_eq!(
            (other.user_name.as_str(), other.projects.as_slice()),
            ("FederationUser", &["p-shared".to_owned()][..])
        );
        let refused = map("system:serviceaccount:team-b:imagejobs").unwrap_err();
        assert_eq!((refused.status, refused.code), (403, "IAM.0003"));
        assert!(refused.message.contains("team-b"), "{}", refused.message);
    }

    #[test]
    fn a_rule_without_projects_allows_all() {
        let mut idp = provider();
        idp.rules.push(serde_json::from_value(json!({"remote": [{"type": "sub"}]})).unwrap());
        assert!(map_claims(&idp, claims(SUB).as_object().unwrap()).unwrap().projects.is_empty());
    }

    #[test]
    fn exchange_bodies() {
        let ok = json!({"auth": {"id_token": {"id": "a.b.c"}, "scope": {"project": {"id": "p1"}}}});
        assert_eq!(
            parse_exchange(ok.to_string().as_bytes()).unwrap(),
            Exchange { id_token: "a.b.c".into(), project: "p1".into() }
        );
        for bad in [json!({"auth": {"scope": {"project": {"id": "p1"}}}}), json!({"auth": {"id_token": {"id": "x"}}})] {
            let e = parse_exchange(bad.to_string().as_bytes()).unwrap_err();
            assert_eq!((e.status, e.code), (400, "IAM.0011"));
        }
        assert_eq!(parse_exchange(b"{").unwrap_err().code, "IAM.0011");
    }

    #[test]
    fn providers_are_validated() {
        let mut idp = provider();
        idp.rules[0].remote[0].not_any_of = Some(vec![]);
        assert!(idp.validate().unwrap_err().contains("either"));
        idp.rules[0].remote.clear();
        assert!(idp.validate().unwrap_err().contains("at least one"));
        assert!(provider().validate().is_ok());
    }
}
