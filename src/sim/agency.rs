//! Agencies ("assume role" across accounts): `POST /v3/auth/tokens` with
//! `methods: ["assume_role"]`. Pure: the body and the decision; who the
//! caller is (token holder or AK/SK signer) is settled by the server.

use serde::Deserialize;
use serde_json::Value;

use super::iam::{self, FlatRefusal, fake_id};
use super::scenario::{Project, Scenario};

/// An agency a delegating account created.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub name: String,
    /// The delegating account.
    pub domain_name: String,
    /// Default: a stable id derived from `domain_name`.
    #[serde(default)]
    pub domain_id: Option<String>,
    /// Project ids or names it may scope to; empty = every project.
    #[serde(default)]
    pub projects: Vec<String>,
    /// User names, federated `sub`s, access keys' `user` (or access key)
    /// or the metadata service's `user` that may assume it; empty = any
    /// authenticated caller.
    #[serde(default)]
    pub trusted: Vec<String>,
}

impl Agency {
    pub fn domain_id(&self) -> String {
        self.domain_id.clone().unwrap_or_else(|| fake_id("domain", &self.domain_name))
    }

    /// The name of the agency's user in its tokens, as IAM shows it.
    pub fn user_name(&self) -> String {
        format!("{}/{}", self.domain_name, self.name)
    }
}

/// The delegating account, as the request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    Name(String),
    Id(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRole {
    pub domain: DomainRef,
    pub agency: String,
    pub project: String,
}

/// Whether a token request asks for an agency token.
pub fn is_assume_role(body: &Value) -> bool {
    body["auth"]["identity"]["methods"].as_array().is_some_and(|m| m.iter().any(|v| v == "assume_role"))
}

/// `auth.identity.assume_role`: `domain_name` or `domain_id`, and
/// `xrole_name` (OTC) or `agency_name` (Huawei Cloud); a project scope.
pub fn parse(body: &Value) -> Result<AssumeRole, FlatRefusal> {
    let role = &body["auth"]["identity"]["assume_role"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let domain = text(&role["domain_name"])
        .map(DomainRef::Name)
        .or_else(|| text(&role["domain_id"]).map(DomainRef::Id))
        .ok_or_else(|| FlatRefusal::bad_body("assume_role needs domain_name or domain_id"))?;
    let agency = text(&role["xrole_name"])
        .or_else(|| text(&role["agency_name"]))
        .ok_or_else(|| FlatRefusal::bad_body("assume_role needs xrole_name or agency_name"))?;
    let project = iam::scoped_project(body)?;
    Ok(AssumeRole { domain, agency, project })
}

/// The agency and project `caller` gets: 404 for an agency the scenario
/// lacks, 403 for an untrusted caller or a project outside the agency.
pub fn assume<'a>(
    scenario: &'a Scenario,
    request: &AssumeRole,
    caller: &str,
) -> Result<(&'a Agency, Project), FlatRefusal> {
    let agency = scenario
        .agencies
        .iter()
        .find(|a| {
            a.name == request.agency
                && match &request.domain {
                    DomainRef::Name(name) => a.domain_name == *name,
                    DomainRef::Id(id) => a.domain_id() == *id,
                }
        })
        .ok_or_else(|| FlatRefusal::not_found(format!("Could not find agency {:?}", request.agency)))?;
    if !agency.trusted.is_empty() && !agency.trusted.iter().any(|t| t == caller) {
        return Err(FlatRefusal::forbidden(format!("{caller:?} may not assume agency {:?}", agency.user_name())));
    }
    let project = iam::permitted_project(scenario, &agency.projects, &request.project).ok_or_else(|| {
        FlatRefusal::forbidden(format!("agency {:?} has no role in project {:?}", agency.user_name(), request.project))
    })?;
    Ok((agency, project))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scenario() -> Scenario {
        Scenario::parse(
            r#"
            projects: [{id: p-other, name: eu-de_other}, {id: p-mine}]
            agencies:
              - {name: ims-reader, domain_name: other-account, projects: [eu-de_other],
                 trusted: [demo, "system:serviceaccount:team-a:imagejobs"]}
              - {name: open, domain_name: other-account, domain_id: d-123}
            "#,
        )
        .unwrap()
    }

    fn request(role: Value, project: &str) -> Value {
        json!({"auth": {"identity": {"methods": ["assume_role"], "assume_role": role},
                        "scope": {"project": {"id": project}}}})
    }

    #[test]
    fn parses_both_clouds_names() {
        let otc = parse(&request(json!({"domain_name": "other-account", "xrole_name": "ims-reader"}), "p")).unwrap();
        assert_eq!(
            otc,
            AssumeRole {
                domain: DomainRef::Name("other-account".into()),
                agency: "ims-reader".into(),
                project: "p".into()
            }
        );
        let huawei = parse(&request(json!({"domain_id": "d-123", "agency_name": "open"}), "p")).unwrap();
        assert_eq!((huawei.domain, huawei.agency.as_str()), (DomainRef::Id("d-123".into()), "open"));
        assert!(is_assume_role(&request(json!({}), "p")));
        for bad in [json!({"xrole_name": "x"}), json!({"domain_name": "d"})] {
            assert_eq!(parse(&request(bad, "p")).unwrap_err().code, "IAM.0011");
        }
    }

    #[test]
    fn trusted_callers_get_the_agencys_projects() {
        let s = scenario();
        let ask =
            |role: Value, project: &str, caller: &str| assume(&s, &parse(&request(role, project)).unwrap(), caller);
        let role = json!({"domain_name": "other-account", "xrole_name": "ims-reader"});
        let (agency, project) = ask(role.clone(), "p-other", "demo").unwrap();
        assert_eq!((agency.user_name().as_str(), project.id.as_str()), ("other-account/ims-reader", "p-other"));
        assert!(ask(role.clone(), "eu-de_other", "system:serviceaccount:team-a:imagejobs").is_ok());
        let untrusted = ask(role.clone(), "p-other", "mallory").unwrap_err();
        assert_eq!((untrusted.status, untrusted.code), (403, "IAM.0003"));
        let outside = ask(role, "p-mine", "demo").unwrap_err();
        assert!(outside.message.contains("no role in project"), "{}", outside.message);
        let unknown = ask(json!({"domain_name": "nobody", "xrole_name": "ims-reader"}), "p-other", "demo").unwrap_err();
        assert_eq!((unknown.status, unknown.code), (404, "IAM.0004"));
        // By domain id; no trusted list: anyone authenticated; no projects: all.
        assert!(ask(json!({"domain_id": "d-123", "xrole_name": "open"}), "p-mine", "anyone").is_ok());
        assert!(ask(json!({"domain_id": "d-999", "xrole_name": "open"}), "p-mine", "anyone").is_err());
    }
}
