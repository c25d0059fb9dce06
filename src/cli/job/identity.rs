//! Credentials of `job get`/`job wait` beyond keys and passwords: an ID
//! token from a file (as CI systems issue them), the node's metadata keys,
//! and an agency on top of either.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::ims::metadata::{DEFAULT_ENDPOINT, MetadataKeys};
use crate::ims::{Agency, AgencyDomain, Credentials, IdToken, IdTokenSource, ImsError, Secret};

#[derive(Clone, Debug, Default, clap::Args)]
pub struct IdentityArgs {
    /// A file holding an OpenID Connect ID token (re-read whenever IAM needs
    /// one), exchanged at IAM through the identity provider `OTC_IDP_ID`.
    #[arg(long, env = "OTC_ID_TOKEN_FILE")]
    pub id_token_file: Option<PathBuf>,
    /// The IAM identity provider that trusts that ID token.
    #[arg(long, env = "OTC_IDP_ID")]
    pub idp_id: Option<String>,
    /// Sign with the node's temporary keys from the metadata service.
    #[arg(long, env = "OTC_METADATA_KEYS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub metadata_keys: bool,
    /// The metadata service (with `--metadata-keys`).
    #[arg(long, env = "METADATA_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub metadata_endpoint: String,
    /// Act through this agency of another account (needs a domain below).
    #[arg(long, env = "OTC_AGENCY_NAME")]
    pub agency_name: Option<String>,
    /// The delegating account, by name.
    #[arg(long, env = "OTC_AGENCY_DOMAIN_NAME", conflicts_with = "agency_domain_id")]
    pub agency_domain_name: Option<String>,
    /// The delegating account, by ID.
    #[arg(long, env = "OTC_AGENCY_DOMAIN_ID")]
    pub agency_domain_id: Option<String>,
}

impl IdentityArgs {
    /// The credentials these flags choose, else those of the environment
    /// (`keys`), with the agency on top.
    pub fn credentials(&self, keys: impl FnOnce() -> Result<Credentials, String>) -> Result<Credentials, String> {
        let base = match (&self.id_token_file, &self.idp_id, self.metadata_keys) {
            (Some(_), _, true) => return Err("choose one of OTC_ID_TOKEN_FILE and --metadata-keys".into()),
            (Some(path), Some(idp), false) => {
                let source = Arc::new(TokenFile { path: path.clone(), subject: format!("file:{}", path.display()) });
                Credentials::IdToken(IdToken { idp_id: idp.clone(), source })
            }
            (Some(_), None, _) => return Err("OTC_ID_TOKEN_FILE needs OTC_IDP_ID (the IAM identity provider)".into()),
            (None, _, true) => Credentials::Metadata(Arc::new(MetadataKeys::new(&self.metadata_endpoint))),
            (None, _, false) => keys()?,
        };
        Ok(base.with_agency(self.agency()?))
    }

    fn agency(&self) -> Result<Option<Agency>, String> {
        let Some(name) = &self.agency_name else { return Ok(None) };
        let domain = match (&self.agency_domain_name, &self.agency_domain_id) {
            (Some(n), None) => AgencyDomain::Name(n.clone()),
            (None, Some(id)) => AgencyDomain::Id(id.clone()),
            _ => return Err("an agency needs exactly one of OTC_AGENCY_DOMAIN_NAME and OTC_AGENCY_DOMAIN_ID".into()),
        };
        Ok(Some(Agency { name: name.clone(), domain }))
    }
}

/// An ID token in a file, read anew each time (CI systems rotate it).
struct TokenFile {
    path: PathBuf,
    subject: String,
}

impl IdTokenSource for TokenFile {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn fetch(&self) -> BoxFuture<'_, Result<Secret, ImsError>> {
        Box::pin(async move {
            let unavailable = |why: String| ImsError::IdentityUnavailable {
                detail: format!("ID token file {}: {why}", self.path.display()),
            };
            let text = std::fs::read_to_string(&self.path).map_err(|e| unavailable(e.to_string()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(unavailable("empty".into()));
            }
            Ok(Secret::new(token))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        id: IdentityArgs,
    }

    fn parse(args: &[&str]) -> IdentityArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap().id
    }

    fn keys() -> Result<Credentials, String> {
        Ok(Credentials::AkSk { access_key: "AK".into(), secret_key: "SK".into(), security_token: None })
    }

    #[test]
    fn which_credentials() {
        let cases: [(&[&str], Result<&str, &str>); 7] = [
            (&[], Ok("AK/SK")),
            (&["--id-token-file", "/t", "--idp-id", "ci"], Ok("ID token")),
            (&["--id-token-file", "/t"], Err("OTC_IDP_ID")),
            (&["--metadata-keys"], Ok("node metadata keys")),
            (&["--metadata-keys", "--id-token-file", "/t", "--idp-id", "ci"], Err("choose one")),
            (&["--agency-name", "a", "--agency-domain-id", "d"], Ok("agency")),
            (&["--agency-name", "a"], Err("exactly one")),
        ];
        for (args, want) in cases {
            let got = parse(args).credentials(keys).map(|c| c.kind_name());
            match want {
                Ok(kind) => assert_eq!(got, Ok(kind), "{args:?}"),
                Err(text) => assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{args:?}: {got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_token_file_is_read_when_needed() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "eyJ.a.b\n").unwrap();
        let source = TokenFile { path: file.path().into(), subject: "s".into() };
        assert_eq!(source.fetch().await.unwrap().expose(), "eyJ.a.b");
        std::fs::write(file.path(), "").unwrap();
        let err = source.fetch().await.err().unwrap();
        assert!(matches!(err, ImsError::IdentityUnavailable { .. }), "{err}");
    }
}
