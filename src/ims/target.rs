//! Which job, where: [`JobTarget`] and the rules of its parts, in one place.
//!
//! The controller (an ImageJob's spec and Secret), `run`'s start-up checks
//! (the endpoint flags) and the `job` commands (what a person typed) all go
//! through [`resolve`], so a job the operator refuses is refused everywhere,
//! with the same words, before any credential leaves the machine. The job,
//! project and region rules are the CRD's patterns (`crd.rs`); the table
//! test below proves it against the generated schema.

use reqwest::Url;

/// Where one job lives. Endpoints are base URLs, already region-resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobTarget {
    pub ims_endpoint: String,
    pub iam_endpoint: String,
    pub project_id: String,
    pub job_id: String,
}

/// The endpoint templates of the operator's configuration (`{region}` is
/// replaced), and whether plain `http://` off loopback is allowed.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints<'a> {
    pub ims: &'a str,
    pub iam: &'a str,
    pub allow_insecure_http: bool,
}

impl Endpoints<'_> {
    /// Both endpoints for `region`, each checked by [`endpoint`]; the region
    /// itself is checked first, as it becomes part of a host name.
    pub fn resolve(&self, region: &str) -> Result<(String, String), String> {
        self::region(region)?;
        let ims = resolve_endpoint(self.ims, region);
        let iam = resolve_endpoint(self.iam, region);
        endpoint("IMS endpoint (--ims-endpoint)", &ims, self.allow_insecure_http)?;
        endpoint("IAM endpoint (--iam-endpoint)", &iam, self.allow_insecure_http)?;
        Ok((ims, iam))
    }
}

/// The job to query, once every part passed its rule: the one way a
/// [`JobTarget`] is built from configuration and input.
pub fn resolve(endpoints: &Endpoints, region: &str, project: &str, job: &str) -> Result<JobTarget, String> {
    // IDs go into the request path; a Secret's projectId is not schema-checked.
    project_id(project)?;
    job_id(job)?;
    let (ims_endpoint, iam_endpoint) = endpoints.resolve(region)?;
    Ok(JobTarget { ims_endpoint, iam_endpoint, project_id: project.to_owned(), job_id: job.to_owned() })
}

/// `https://ims.{region}.otc.t-systems.com` → `https://ims.eu-de.otc.t-systems.com`.
pub fn resolve_endpoint(template: &str, region: &str) -> String {
    template.replace("{region}", region)
}

/// The CRD's `spec.region`: `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`, 1–32
/// characters. It goes into a host name: `attacker.example/` would send the
/// credentials elsewhere.
pub fn region(region: &str) -> Result<(), String> {
    let inner_ok = region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = !region.starts_with('-') && !region.ends_with('-');
    if !region.is_empty() && region.len() <= 32 && inner_ok && ends_ok {
        Ok(())
    } else {
        Err(format!(
            "invalid region {region:?}: only a-z, 0-9 and '-' (up to 32 characters, not first or last), e.g. eu-de"
        ))
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
    // User info may hold a password: such an endpoint is never echoed.
    let shown = if url.contains('@') { "(with user info)".to_owned() } else { format!("{url:?}") };
    let parsed = Url::parse(url).map_err(|e| format!("invalid {name} {shown}: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() {
        return Err(format!("invalid {name} {shown}: an endpoint must not carry user info or a query"));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "refusing plain http:// {name} {shown}: use https://, a loopback host, \
             or --allow-insecure-http (ALLOW_INSECURE_HTTP=true)"
        )),
        other => Err(format!("invalid {name} {shown}: scheme {other:?} is neither https nor http")),
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

    type Rule = fn(&str) -> Result<(), String>;

    /// The rules above are the CRD's: for each spec field, every sample is
    /// accepted by the rule exactly when the generated schema's pattern and
    /// length bounds accept it. A change to either side shows here.
    #[test]
    fn same_patterns_as_the_crd() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::crd::ImageJob::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let long = |n: usize| "a".repeat(n);
        let table: [(&str, Rule, Vec<String>); 3] = [
            (
                "jobId",
                job_id,
                ["ff8080814dbd65d7014dbe0d84db0013", "a", "job.1:2_3-4", "", ".", "..", ".hidden", "a/b"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(["a?b", "a b", "-x", "X.", "1:"].iter().map(|s| s.to_string()))
                    .chain([long(128), long(129)])
                    .collect(),
            ),
            (
                "projectId",
                project_id,
                ["0b0a1e4b2c2d4e8f9a0b1c2d3e4f5a6b", "P_1-x", "", ".", "..", "a/b", "a.b", "a b"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([long(64), long(65)])
                    .collect(),
            ),
            (
                "region",
                region,
                ["eu-de", "eu-ch2", "a", "9", "a-b", "attacker.example/", "EU-DE", "", "eu de", "eu-de#"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain(["a.b", "-eu", "eu-", "-", "eu_de"].iter().map(|s| s.to_string()))
                    .chain([long(32), long(33)])
                    .collect(),
            ),
        ];
        for (field, rule, samples) in table {
            let schema = &spec[field];
            let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
            let (min, max) = (schema["minLength"].as_u64().unwrap(), schema["maxLength"].as_u64().unwrap());
            for s in samples {
                let by_schema = pattern.is_match(&s) && (min..=max).contains(&(s.len() as u64));
                assert_eq!(rule(&s).is_ok(), by_schema, "{field} {s:?}: rule vs CRD");
            }
        }
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
        let err = endpoint("IMS", "https://user:secret@ims.example.com", false).unwrap_err();
        assert!(err.contains("user info") && !err.contains("secret"), "{err}");
        assert!(endpoint("IMS", "https://ims.example.com/?x=1", false).is_err());
        assert!(endpoint("IMS", "not a url", true).is_err());
    }

    #[test]
    fn resolve_checks_every_part_and_fills_in_the_region() {
        let e = Endpoints {
            ims: "https://ims.{region}.example",
            iam: "https://iam.{region}.example",
            allow_insecure_http: false,
        };
        let t = resolve(&e, "eu-nl", "p1", "job-1").unwrap();
        assert_eq!(
            (t.ims_endpoint.as_str(), t.iam_endpoint.as_str()),
            ("https://ims.eu-nl.example", "https://iam.eu-nl.example")
        );
        assert_eq!((t.project_id.as_str(), t.job_id.as_str()), ("p1", "job-1"));
        assert!(resolve(&e, "evil.com/", "p1", "job-1").unwrap_err().contains("invalid region"));
        assert!(resolve(&e, "eu-de", "../x", "job-1").unwrap_err().contains("invalid project ID"));
        assert!(resolve(&e, "eu-de", "p1", "..").unwrap_err().contains("invalid job ID"));
        let plain = Endpoints { iam: "http://iam.{region}.example", ..e };
        assert!(resolve(&plain, "eu-de", "p1", "job-1").unwrap_err().contains("--iam-endpoint"));
        assert!(resolve(&Endpoints { allow_insecure_http: true, ..plain }, "eu-de", "p1", "job-1").is_ok());
    }
}
