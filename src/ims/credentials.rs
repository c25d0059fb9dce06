//! Cloud credentials from the environment or a Kubernetes Secret.
//!
//! Secret values live in [`Secret`], which zeroes its memory on drop and
//! never prints its content; errors name missing keys, never values.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// A secret string: Debug and Display print `[redacted]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The plain value, for signing or a request header only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

#[derive(Clone, Debug)]
pub enum Credentials {
    /// Permanent or temporary (with `security_token`) access keys.
    AkSk { access_key: String, secret_key: Secret, security_token: Option<Secret> },
    /// IAM user password, exchanged for a project-scoped token.
    Password { username: String, password: Secret, domain_name: String },
    /// An OpenID Connect ID token (a ServiceAccount's, or a CI system's),
    /// exchanged at IAM for a project-scoped token (OIDC federation).
    IdToken(IdToken),
    /// The node's temporary keys from the metadata service.
    Metadata(Arc<super::metadata::MetadataKeys>),
    /// An agency of another account, assumed with `base`.
    Agency { base: Box<Credentials>, agency: Agency },
}

/// Hands out an ID token (a JWT) when IAM needs one: only when the IAM
/// token it buys is due for renewal, never per poll.
pub trait IdTokenSource: Send + Sync {
    /// Who the token names (e.g. `system:serviceaccount:ns:sa`): part of
    /// the cache key, never secret.
    fn subject(&self) -> &str;
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Secret, super::ImsError>>;
}

/// An ID token source and the IAM identity provider that trusts it.
#[derive(Clone)]
pub struct IdToken {
    pub idp_id: String,
    pub source: Arc<dyn IdTokenSource>,
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdToken({} via {})", self.source.subject(), self.idp_id)
    }
}

/// An IAM agency (OTC's `xrole_name`) of the account that delegates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Agency {
    pub name: String,
    pub domain: AgencyDomain,
}

/// The delegating account, by name or by ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AgencyDomain {
    Name(String),
    Id(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no cloud credentials in {origin}: set {} and {} (optionally {}), or {}, {} and {}",
        .names.access_key, .names.secret_key, .names.security_token,
        .names.username, .names.password, .names.domain_name
    )]
    Absent { origin: &'static str, names: &'static KeyNames },
    #[error("incomplete credentials in {origin}: missing {}", .missing.join(", "))]
    Missing { origin: &'static str, missing: Vec<&'static str> },
    #[error("{key} in {origin} is not valid UTF-8")]
    NotUtf8 { origin: &'static str, key: &'static str },
}

/// The names of the credential fields in one source.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyNames {
    pub access_key: &'static str,
    pub secret_key: &'static str,
    pub security_token: &'static str,
    pub username: &'static str,
    pub password: &'static str,
    pub domain_name: &'static str,
    pub project_id: &'static str,
}

pub const ENV_NAMES: KeyNames = KeyNames {
    access_key: "OTC_ACCESS_KEY",
    secret_key: "OTC_SECRET_KEY",
    security_token: "OTC_SECURITY_TOKEN",
    username: "OTC_USERNAME",
    password: "OTC_PASSWORD",
    domain_name: "OTC_DOMAIN_NAME",
    project_id: "OTC_PROJECT_ID",
};

pub const SECRET_KEYS: KeyNames = KeyNames {
    access_key: "accessKey",
    secret_key: "secretKey",
    security_token: "securityToken",
    username: "username",
    password: "password",
    domain_name: "domainName",
    project_id: "projectId",
};

/// A non-secret fingerprint of credentials, for map keys and logs: an HMAC
/// under a per-process random key, so that even a weak password cannot be
/// guessed from a logged fingerprint. Stable within one process only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl Credentials {
    /// Reads `OTC_ACCESS_KEY`/`OTC_SECRET_KEY`/`OTC_SECURITY_TOKEN` or
    /// `OTC_USERNAME`/`OTC_PASSWORD`/`OTC_DOMAIN_NAME`.
    pub fn from_env() -> Result<Credentials, CredentialsError> {
        Self::from_lookup("the environment", &ENV_NAMES, |name| {
            std::env::var_os(name).map(|v| v.into_string().map_err(|_| ()))
        })
    }

    /// Reads the keys of a Kubernetes Secret's `data`; also returns its
    /// optional `projectId`.
    pub fn from_secret_data(
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(Credentials, Option<String>), CredentialsError> {
        let lookup = |name: &str| data.get(name).map(|v| String::from_utf8(v.clone()).map_err(|_| ()));
        let creds = Self::from_lookup("the Secret", &SECRET_KEYS, lookup)?;
        let project = read("the Secret", SECRET_KEYS.project_id, &lookup, false)?;
        Ok((creds, project))
    }

    /// Both sources share this logic. AK/SK wins when both kinds are
    /// present: it needs no IAM round trip. A value that is set but empty
    /// counts as missing.
    fn from_lookup(
        source: &'static str,
        names: &'static KeyNames,
        lookup: impl Fn(&str) -> Option<Result<String, ()>>,
    ) -> Result<Credentials, CredentialsError> {
        let get = |name, keep_spaces| read(source, name, &lookup, keep_spaces);
        let access_key = get(names.access_key, false)?;
        let secret_key = get(names.secret_key, false)?;
        if access_key.is_some() || secret_key.is_some() {
            return match (access_key, secret_key) {
                (Some(access_key), Some(secret_key)) => Ok(Credentials::AkSk {
                    access_key,
                    secret_key: Secret::new(secret_key),
                    security_token: get(names.security_token, false)?.map(Secret::new),
                }),
                (None, _) => Err(missing(source, vec![names.access_key])),
                (_, None) => Err(missing(source, vec![names.secret_key])),
            };
        }
        let username = get(names.username, false)?;
        let password = get(names.password, true)?;
        let domain_name = get(names.domain_name, false)?;
        match (username, password, domain_name) {
            (Some(username), Some(password), Some(domain_name)) => {
                Ok(Credentials::Password { username, password: Secret::new(password), domain_name })
            }
            (None, None, None) => Err(CredentialsError::Absent { origin: source, names }),
            (u, p, d) => {
                let wanted = [(u.is_none(), names.username), (p.is_none(), names.password)];
                let wanted = wanted.into_iter().chain([(d.is_none(), names.domain_name)]);
                Err(missing(source, wanted.filter(|(gone, _)| *gone).map(|(_, n)| n).collect()))
            }
        }
    }

    /// A fingerprint of all the material, including secrets, so that a
    /// rotated secret gives a new key (and a fresh token).
    pub fn cache_key(&self) -> CacheKey {
        let base;
        let parts: Vec<&str> = match self {
            Credentials::AkSk { access_key, secret_key, security_token } => {
                vec!["aksk", access_key, secret_key.expose(), security_token.as_ref().map_or("", Secret::expose)]
            }
            Credentials::Password { username, password, domain_name } => {
                vec!["password", domain_name, username, password.expose()]
            }
            // The identity, not the token of the moment: it rotates.
            Credentials::IdToken(id) => vec!["oidc", &id.idp_id, id.source.subject()],
            Credentials::Metadata(keys) => vec!["metadata", keys.endpoint()],
            Credentials::Agency { base: b, agency } => {
                base = hex::encode(b.cache_key().0);
                let (kind, domain) = match &agency.domain {
                    AgencyDomain::Name(n) => ("name", n),
                    AgencyDomain::Id(i) => ("id", i),
                };
                vec!["agency", &base, &agency.name, kind, domain]
            }
        };
        fingerprint(&parts)
    }

    /// What the cloud locks after repeated failures whatever the rest of the
    /// material: the access key (the gateway locks it after five bad
    /// signatures in a row) or the IAM user. None for the others.
    pub fn lock_key(&self) -> Option<CacheKey> {
        let parts: [&str; 3] = match self {
            Credentials::AkSk { access_key, .. } => ["ak", access_key, ""],
            Credentials::Password { username, domain_name, .. } => ["user", domain_name, username],
            _ => return None,
        };
        Some(fingerprint(&parts))
    }

    /// `"AK/SK"`, `"temporary AK/SK"`, `"password"`, …, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Credentials::AkSk { security_token: Some(_), .. } => "temporary AK/SK",
            Credentials::AkSk { .. } => "AK/SK",
            Credentials::Password { .. } => "password",
            Credentials::IdToken(_) => "ID token",
            Credentials::Metadata(_) => "node metadata keys",
            Credentials::Agency { .. } => "agency",
        }
    }

    /// True when IMS is called with an IAM token (not a signature).
    pub fn uses_token(&self) -> bool {
        !matches!(self, Credentials::AkSk { .. } | Credentials::Metadata(_))
    }

    /// On top of these credentials, the agency `agency` (if any).
    pub fn with_agency(self, agency: Option<Agency>) -> Credentials {
        match agency {
            Some(agency) => Credentials::Agency { base: Box::new(self), agency },
            None => self,
        }
    }
}

fn missing(source: &'static str, missing: Vec<&'static str>) -> CredentialsError {
    CredentialsError::Missing { origin: source, missing }
}

/// One value: trimmed (a Secret made from a file often ends in a newline);
/// a password loses only its line ending, as spaces may belong to it.
fn read(
    source: &'static str,
    key: &'static str,
    lookup: &impl Fn(&str) -> Option<Result<String, ()>>,
    keep_spaces: bool,
) -> Result<Option<String>, CredentialsError> {
    let Some(raw) = lookup(key) else { return Ok(None) };
    let raw = raw.map_err(|()| CredentialsError::NotUtf8 { origin: source, key })?;
    let value = if keep_spaces { raw.trim_end_matches(['\r', '\n']) } else { raw.trim() };
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// A keyed hash of `parts` (secret for this process only), never reversible.
fn fingerprint(parts: &[&str]) -> CacheKey {
    let mut mac = Hmac::<Sha256>::new_from_slice(process_key()).expect("HMAC takes any key length");
    for part in parts {
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    CacheKey(mac.finalize().into_bytes().into())
}

fn process_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let c = Credentials::Password { username: "u".into(), password: s.clone(), domain_name: "d".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_data_aksk_with_project() {
        let d = data(&[("accessKey", "AK1\n"), ("secretKey", "SK1"), ("securityToken", "tok"), ("projectId", " p1 ")]);
        let (creds, project) = Credentials::from_secret_data(&d).unwrap();
        assert_eq!(project.as_deref(), Some("p1"));
        let Credentials::AkSk { access_key, secret_key, security_token } = &creds else { panic!("not AK/SK") };
        assert_eq!(access_key, "AK1");
        assert_eq!(secret_key.expose(), "SK1");
        assert_eq!(security_token.as_ref().map(Secret::expose), Some("tok"));
        assert_eq!(creds.kind_name(), "temporary AK/SK");
    }

    #[test]
    fn secret_data_password_keeps_inner_spaces() {
        let d = data(&[("username", "bob"), ("password", " pw \n"), ("domainName", "OTC-EU")]);
        let (creds, project) = Credentials::from_secret_data(&d).unwrap();
        assert_eq!(project, None);
        let Credentials::Password { username, password, domain_name } = creds else { panic!("not password") };
        assert_eq!((username.as_str(), password.expose(), domain_name.as_str()), ("bob", " pw ", "OTC-EU"));
    }

    #[test]
    fn missing_keys_are_named_without_values() {
        let err = Credentials::from_secret_data(&data(&[("accessKey", "AKSECRETLOOKING")])).unwrap_err();
        assert_eq!(err.to_string(), "incomplete credentials in the Secret: missing secretKey");
        let err = Credentials::from_secret_data(&data(&[("password", "hunter2"), ("domainName", "")])).unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg, "incomplete credentials in the Secret: missing username, domainName");
        assert!(!msg.contains("hunter2"));
        let err = Credentials::from_secret_data(&data(&[("projectId", "p")])).unwrap_err();
        assert!(err.to_string().contains("accessKey and secretKey"), "{err}");
        let err = Credentials::from_secret_data(&BTreeMap::from([("secretKey".into(), vec![0xff])])).unwrap_err();
        assert_eq!(err.to_string(), "secretKey in the Secret is not valid UTF-8");
    }

    #[test]
    fn aksk_wins_over_password() {
        let d = data(&[("accessKey", "a"), ("secretKey", "s"), ("username", "u")]);
        assert!(matches!(Credentials::from_secret_data(&d).unwrap().0, Credentials::AkSk { .. }));
    }

    #[test]
    fn env_lookup_names_env_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| Ok(v.to_string()))
        };
        let err = Credentials::from_lookup("the environment", &ENV_NAMES, env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no cloud credentials in the environment: set OTC_ACCESS_KEY and OTC_SECRET_KEY \
             (optionally OTC_SECURITY_TOKEN), or OTC_USERNAME, OTC_PASSWORD and OTC_DOMAIN_NAME"
        );
        let err = Credentials::from_lookup("the environment", &ENV_NAMES, env(&[("OTC_SECRET_KEY", "s")])).unwrap_err();
        assert_eq!(err.to_string(), "incomplete credentials in the environment: missing OTC_ACCESS_KEY");
        let creds = Credentials::from_lookup(
            "the environment",
            &ENV_NAMES,
            env(&[("OTC_USERNAME", "u"), ("OTC_PASSWORD", "p"), ("OTC_DOMAIN_NAME", "d")]),
        )
        .unwrap();
        assert_eq!(creds.kind_name(), "password");
    }

    #[test]
    fn cache_key_tracks_all_material() {
        let aksk = |ak: &str, sk: &str, tok: Option<&str>| Credentials::AkSk {
            access_key: ak.into(),
            secret_key: sk.into(),
            security_token: tok.map(Secret::from),
        };
        let k = aksk("a", "s", None).cache_key();
        assert_eq!(k, aksk("a", "s", None).cache_key());
        assert_ne!(k, aksk("a", "s2", None).cache_key());
        assert_ne!(k, aksk("a", "s", Some("t")).cache_key());
        assert_ne!(aksk("ab", "c", None).cache_key(), aksk("a", "bc", None).cache_key());
        let pw = Credentials::Password { username: "a".into(), password: "s".into(), domain_name: "".into() };
        assert_ne!(k, pw.cache_key());
        assert_eq!(k.to_string().len(), 16);
    }
}
