//! Which identity an ImageJob acts as: the Secret it names, the
//! ServiceAccount it names (workload identity), or the operator-wide default
//! (the node's metadata keys), with an agency on top when it asks for one.
//!
//! Workload identity never lends the operator's own identity: the token is
//! requested for the ServiceAccount the ImageJob names, in the ImageJob's own
//! namespace, and IAM's conversion rules decide what that subject may do.
//! A token is requested only when the IAM token it buys is due, not per poll.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use super::secrets::SecretError;
use super::{Ctx, Error};
use crate::config::{DefaultCredentials, ReadSecrets, RunArgs};
use crate::crd::{ImageJob, ImageJobSpec};
use crate::ims::error::Service;
use crate::ims::{Agency, AgencyDomain, Credentials, IdToken, IdTokenSource, ImsError, Secret};
use crate::status::{Outcome, StallReason};

/// How long a requested ServiceAccount token lives: IAM's docs ask for at
/// least 600 s, and it is used once, right away.
pub const TOKEN_SECONDS: i64 = 600;

/// Who an ImageJob acts as.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity<'a> {
    Secret(&'a str),
    ServiceAccount(&'a str),
    Metadata,
}

/// Pure: the identity of `spec` under the operator's configuration, or why
/// there is none (a Stalled reason and message).
pub fn identity_of<'a>(spec: &'a ImageJobSpec, args: &RunArgs) -> Result<Identity<'a>, (StallReason, String)> {
    let invalid = |m: &str| Err((StallReason::InvalidSpec, m.to_owned()));
    match (&spec.credentials_ref, &spec.service_account_ref) {
        (Some(_), Some(_)) => invalid("set only one of spec.credentialsRef and spec.serviceAccountRef"),
        (Some(_), None) if args.read_secrets == ReadSecrets::Off => invalid(
            "this operator reads no Secrets (--read-secrets=false): use spec.serviceAccountRef (workload identity)",
        ),
        (Some(secret), None) => Ok(Identity::Secret(&secret.name)),
        (None, Some(_)) if args.oidc_idp_id.is_none() || args.oidc_audience.is_none() => invalid(
            "spec.serviceAccountRef needs workload identity, which this operator runs without \
             (--oidc-idp-id and --oidc-audience; chart values workloadIdentity.idpId and .audience)",
        ),
        (None, Some(_)) if spec.project_id.is_none() => {
            invalid("spec.serviceAccountRef needs spec.projectId (the project the IAM token is scoped to)")
        }
        (None, Some(sa)) => Ok(Identity::ServiceAccount(&sa.name)),
        (None, None) if args.default_credentials == Some(DefaultCredentials::Metadata) => Ok(Identity::Metadata),
        (None, None) => Err((
            StallReason::CredentialsNotFound,
            "no credentials: set spec.credentialsRef (a Secret) or spec.serviceAccountRef (workload identity); \
             this operator runs without --default-credentials"
                .to_owned(),
        )),
    }
}

/// Pure: the agency of `spec.assumeRole`, if any (the CRD makes sure of
/// exactly one of domainName and domainId).
pub fn agency_of(spec: &ImageJobSpec) -> Option<Agency> {
    let role = spec.assume_role.as_ref()?;
    let domain = match (&role.domain_id, &role.domain_name) {
        (Some(id), _) => AgencyDomain::Id(id.clone()),
        (None, Some(name)) => AgencyDomain::Name(name.clone()),
        (None, None) => AgencyDomain::Name(String::new()),
    };
    Some(Agency { name: role.agency_name.clone(), domain })
}

/// The credentials an ImageJob acts with and the Secret's `projectId`, or
/// the Stalled outcome that says why there are none. Only Kubernetes API
/// failures are errors.
pub async fn credentials_for<S>(
    ij: &ImageJob,
    ctx: &Ctx<S>,
) -> Result<Result<(Credentials, Option<String>), Outcome>, Error> {
    let namespace = ij.namespace().ok_or(Error::NoNamespace)?;
    let stalled = |reason, message| Ok(Err(Outcome::Stalled { reason, message }));
    let (credentials, project) = match identity_of(&ij.spec, &ctx.args) {
        Err((reason, message)) => return stalled(reason, message),
        Ok(Identity::Secret(name)) => match ctx.secrets.load(&namespace, name).await {
            Ok(l) => (l.credentials.clone(), l.project_id.clone()),
            Err(e @ (SecretError::NotFound { .. } | SecretError::Invalid { .. })) => {
                return stalled(StallReason::CredentialsNotFound, e.to_string());
            }
            Err(e @ SecretError::NotLabeled { .. }) => {
                return stalled(StallReason::CredentialsNotLabeled, e.to_string());
            }
            Err(e @ SecretError::Forbidden { .. }) => {
                return stalled(StallReason::CredentialsNotReadable, e.to_string());
            }
            Err(e) => return Err(e.into()),
        },
        Ok(Identity::ServiceAccount(name)) => (workload_identity(ctx, &namespace, name), None),
        Ok(Identity::Metadata) => match &ctx.metadata_keys {
            Some(keys) => (Credentials::Metadata(keys.clone()), None),
            None => return stalled(StallReason::CredentialsNotFound, "no metadata keys configured".into()),
        },
    };
    Ok(Ok((credentials.with_agency(agency_of(&ij.spec)), project)))
}

fn workload_identity<S>(ctx: &Ctx<S>, namespace: &str, name: &str) -> Credentials {
    let (idp, audience) = (ctx.args.oidc_idp_id.clone(), ctx.args.oidc_audience.clone());
    let source = ServiceAccountToken::new(ctx.client.clone(), namespace, name, &audience.unwrap_or_default());
    Credentials::IdToken(IdToken { idp_id: idp.unwrap_or_default(), source: Arc::new(source) })
}

/// A ServiceAccount's token, from the API server's TokenRequest.
pub struct ServiceAccountToken {
    client: Client,
    namespace: String,
    name: String,
    audience: String,
    subject: String,
}

impl ServiceAccountToken {
    pub fn new(client: Client, namespace: &str, name: &str, audience: &str) -> Self {
        let subject = format!("system:serviceaccount:{namespace}:{name}");
        Self { client, namespace: namespace.into(), name: name.into(), audience: audience.into(), subject }
    }

    async fn request(&self) -> Result<Secret, ImsError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let spec = TokenRequestSpec {
            audiences: vec![self.audience.clone()],
            expiration_seconds: Some(TOKEN_SECONDS),
            ..Default::default()
        };
        let request = TokenRequest { spec, ..Default::default() };
        let answer = api.create_token_request(&self.name, &PostParams::default(), &request).await;
        let token = answer.map_err(|e| token_error(&self.namespace, &self.name, e))?.status.map(|s| s.token);
        token.filter(|t| !t.is_empty()).map(Secret::new).ok_or_else(|| ImsError::InvalidBody {
            service: Service::Kubernetes,
            detail: "TokenRequest answered without a token".into(),
            request_id: None,
        })
    }
}

impl IdTokenSource for ServiceAccountToken {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn fetch(&self) -> BoxFuture<'_, Result<Secret, ImsError>> {
        Box::pin(self.request())
    }
}

/// Pure: a TokenRequest failure as the status shows it. A missing
/// ServiceAccount or a refusal is configuration (Stalled, no cloud request);
/// an API server that does not answer is transient.
pub fn token_error(namespace: &str, name: &str, e: kube::Error) -> ImsError {
    let unavailable = |detail: String| ImsError::IdentityUnavailable { detail };
    match e {
        kube::Error::Api(s) if s.code == 404 => unavailable(format!("ServiceAccount {namespace}/{name} not found")),
        kube::Error::Api(s) if s.code == 403 => unavailable(format!(
            "the operator may not request a token for ServiceAccount {namespace}/{name} \
             (RBAC: create serviceaccounts/token; is workload identity on in the chart?)"
        )),
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429 => unavailable(format!(
            "TokenRequest for ServiceAccount {namespace}/{name} refused: HTTP {}: {}",
            s.code, s.message
        )),
        other => ImsError::Transport { service: Service::Kubernetes, detail: format!("TokenRequest: {other}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::args;
    use crate::ims::ErrorKind;

    fn spec(json: serde_json::Value) -> ImageJobSpec {
        let mut base = serde_json::json!({"jobId": "j"});
        base.as_object_mut().unwrap().extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn which_identity() {
        use serde_json::json;
        let wi: &[&str] = &["--oidc-idp-id", "k8s", "--oidc-audience", "iam"];
        let meta: &[&str] = &["--default-credentials", "metadata"];
        let sa = json!({"serviceAccountRef": {"name": "sa"}, "projectId": "p"});
        let secret = json!({"credentialsRef": {"name": "s"}});
        let both = json!({"credentialsRef": {"name": "s"}, "serviceAccountRef": {"name": "sa"}});
        let no_secrets: &[&str] = &["--read-secrets=false"];
        let cases: [(&[&str], serde_json::Value, Result<Identity, StallReason>); 9] = [
            (no_secrets, secret.clone(), Err(StallReason::InvalidSpec)),
            (&[], secret.clone(), Ok(Identity::Secret("s"))),
            (wi, secret, Ok(Identity::Secret("s"))),
            (wi, sa.clone(), Ok(Identity::ServiceAccount("sa"))),
            (&[], sa, Err(StallReason::InvalidSpec)),
            (wi, json!({"serviceAccountRef": {"name": "sa"}}), Err(StallReason::InvalidSpec)),
            (wi, both, Err(StallReason::InvalidSpec)),
            (meta, json!({}), Ok(Identity::Metadata)),
            (wi, json!({}), Err(StallReason::CredentialsNotFound)),
        ];
        for (flags, json, want) in cases {
            let s = spec(json.clone());
            let got = identity_of(&s, &args(flags)).map_err(|(r, _)| r);
            assert_eq!(got, want, "{flags:?} {json}");
        }
    }

    #[test]
    fn agency_by_name_or_id() {
        use serde_json::json;
        assert_eq!(agency_of(&spec(json!({}))), None);
        let by_name = spec(json!({"assumeRole": {"agencyName": "a", "domainName": "other"}}));
        assert_eq!(agency_of(&by_name).unwrap().domain, AgencyDomain::Name("other".into()));
        let by_id = spec(json!({"assumeRole": {"agencyName": "a", "domainId": "d1"}}));
        assert_eq!(agency_of(&by_id).unwrap(), Agency { name: "a".into(), domain: AgencyDomain::Id("d1".into()) });
    }

    #[test]
    fn token_request_failures() {
        let api = |code: u16| kube::Error::Api(kube::core::Status::failure("m", "r").with_code(code).boxed());
        let e = token_error("ns", "sa", api(404));
        assert!(matches!(e, ImsError::IdentityUnavailable { .. }) && e.to_string().contains("ns/sa not found"), "{e}");
        assert!(token_error("ns", "sa", api(403)).to_string().contains("serviceaccounts/token"));
        assert!(token_error("ns", "sa", api(503)).is_transient());
        assert!(token_error("ns", "sa", api(429)).is_transient());
        let outcome = super::super::outcome_of_error(&token_error("ns", "sa", api(404)));
        assert!(matches!(outcome, Outcome::Stalled { reason: StallReason::CredentialsNotFound, .. }));
        assert_eq!(token_error("ns", "sa", api(404)).kind(), ErrorKind::BadRequest);
    }
}
