//! Checks of what a person typed, before any credential leaves the machine:
//! the same rules the operator applies to an ImageJob.

use reqwest::Url;

use crate::controller::valid_region;

/// Refuses a region that is not `[a-z0-9-]`: it goes into a host name, and
/// `attacker.example/` would send the credentials elsewhere.
pub fn region(region: &str) -> Result<(), String> {
    if valid_region(region) {
        Ok(())
    } else {
        Err(format!("invalid region {region:?}: only a-z, 0-9 and '-' (up to 32 characters), e.g. eu-de"))
    }
}

/// The CRD's `spec.jobId`: `^[A-Za-z0-9][A-Za-z0-9._:-]*$`, 1–128 characters
/// (the first character rules out `.` and `..` as path segments).
pub fn job_id(id: &str) -> Result<(), String> {
    let first_ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if first_ok && rest_ok && id.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid job ID {id:?}: 1 to 128 of A-Z, a-z, 0-9, '.', '_', ':', '-', starting with a letter or digit"
        ))
    }
}

/// The CRD's `spec.projectId`: `^[A-Za-z0-9_-]+$`, 1–64 characters.
pub fn project_id(id: &str) -> Result<(), String> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Ok(())
    } else {
        Err(format!("invalid project ID {id:?}: 1 to 64 of A-Z, a-z, 0-9, '_', '-'"))
    }
}

/// An endpoint (region already filled in) must be `https://`, or plain
/// `http://` to a loopback host (a local simulator), unless insecure HTTP is
/// allowed explicitly: a password or token sent in clear would be readable
/// by anyone on the path.
pub fn endpoint(name: &str, url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("invalid {name} endpoint {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "refusing plain http:// {name} endpoint {url:?}: use https://, a loopback host, \
             or --allow-insecure-http (ALLOW_INSECURE_HTTP=true)"
        )),
        other => Err(format!("invalid {name} endpoint {url:?}: scheme {other:?} is neither https nor http")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert!(region("eu-de").is_ok());
        assert!(region("eu-ch2").is_ok());
        for bad in ["attacker.example/", "EU-DE", "", "eu de", "eu-de#", "a.b"] {
            assert!(region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_ids() {
        for good in ["ff8080814dbd65d7014dbe0d84db0013", "a", "job.1:2_3-4", &"x".repeat(128)] {
            assert!(job_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a?b", "a b", "-x", &"x".repeat(129)] {
            assert!(job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn project_ids() {
        assert!(project_id("0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b").is_ok());
        for bad in ["", ".", "..", "a/b", "a.b", &"x".repeat(65)] {
            assert!(project_id(bad).is_err(), "{bad}");
        }
    }

    /// The rules above are the CRD's: a change to the schema must show here.
    #[test]
    fn same_patterns_as_the_crd() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::crd::ImageJob::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        assert_eq!(spec["jobId"]["pattern"], "^[A-Za-z0-9][A-Za-z0-9._:-]*$");
        assert_eq!(spec["jobId"]["maxLength"], 128);
        assert_eq!(spec["projectId"]["pattern"], "^[A-Za-z0-9_-]+$");
        assert_eq!(spec["projectId"]["maxLength"], 64);
    }

    #[test]
    fn endpoints() {
        assert!(endpoint("IMS", "https://ims.eu-de.otc.t-systems.com", false).is_ok());
        for local in ["http://127.0.0.1:8088", "http://localhost:1", "http://[::1]:9"] {
            assert!(endpoint("IMS", local, false).is_ok(), "{local}");
        }
        let err = endpoint("IAM", "http://iam.example.com", false).unwrap_err();
        assert!(err.contains("--allow-insecure-http"), "{err}");
        assert!(endpoint("IAM", "http://iam.example.com", true).is_ok());
        assert!(endpoint("IMS", "ftp://x", true).is_err());
        assert!(endpoint("IMS", "not a url", true).is_err());
    }
}
