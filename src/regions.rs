//! Which regions an ImageJob may name, and each region's endpoints.
//!
//! One endpoint template does not fit every cloud of the OTC family (the
//! Swiss region lives under another domain, IAM is global on some), so
//! `--region-endpoints` gives a region its own IMS and IAM base URLs; the
//! others use the `{region}` templates. `--allowed-regions` refuses any
//! other region before a request is sent. Pure: no I/O.

use std::collections::BTreeMap;

/// The regions allowed when `--allowed-regions` is not given (plus those
/// of `--region-endpoints`).
pub const DEFAULT_ALLOWED: [&str; 2] = ["eu-de", "eu-nl"];

/// Region → (IMS base URL, IAM base URL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionEndpoints(pub BTreeMap<String, (String, String)>);

/// Parses `eu-ch2=https://ims.example,https://iam.example;eu-nl=…` (empty: none).
pub fn parse_region_endpoints(raw: &str) -> Result<RegionEndpoints, String> {
    let mut map = BTreeMap::new();
    for entry in raw.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (region, urls) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not region=IMS,IAM"))?;
        let (region, urls) = (region.trim(), urls.trim());
        crate::ims::target::region(region)?;
        let (ims, iam) = urls.split_once(',').ok_or_else(|| format!("{region}: give both IMS and IAM, as IMS,IAM"))?;
        let pair = (ims.trim().trim_end_matches('/').to_owned(), iam.trim().trim_end_matches('/').to_owned());
        if pair.0.is_empty() || pair.1.is_empty() || pair.1.contains(',') {
            return Err(format!("{region}: give exactly two endpoints, as IMS,IAM"));
        }
        if map.insert(region.to_owned(), pair).is_some() {
            return Err(format!("region {region} is given twice"));
        }
    }
    Ok(RegionEndpoints(map))
}

impl RegionEndpoints {
    /// Each endpoint as strict as the default ones (https, or http on loopback).
    pub fn check(&self, allow_insecure: bool) -> Result<(), String> {
        for (region, (ims, iam)) in &self.0 {
            crate::ims::target::endpoint(&format!("--region-endpoints {region} IMS"), ims, allow_insecure)?;
            crate::ims::target::endpoint(&format!("--region-endpoints {region} IAM"), iam, allow_insecure)?;
        }
        Ok(())
    }

    /// The region's own endpoints, else the templates with `{region}` replaced.
    pub fn resolve(&self, region: &str, ims_template: &str, iam_template: &str) -> (String, String) {
        match self.0.get(region) {
            Some((ims, iam)) => (ims.clone(), iam.clone()),
            None => (ims_template.replace("{region}", region), iam_template.replace("{region}", region)),
        }
    }
}

/// `--allowed-regions` as given, or `eu-de,eu-nl` plus the regions with
/// their own endpoints.
pub fn allowed(given: Option<&[String]>, endpoints: &RegionEndpoints) -> Vec<String> {
    match given {
        Some(list) => list.iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect(),
        None => DEFAULT_ALLOWED.iter().map(|r| (*r).to_owned()).chain(endpoints.0.keys().cloned()).collect(),
    }
}

/// The refusal for a region not in `allowed`, if it is not.
pub fn refuse(region: &str, allowed: &[String]) -> Option<String> {
    (!allowed.iter().any(|r| r == region)).then(|| {
        format!("region {region:?} is not allowed here (allowed: {}; see --allowed-regions)", allowed.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let e = parse_region_endpoints("eu-ch2=https://ims.example, https://iam.example/; eu-nl=https://a,https://b")
            .unwrap();
        assert_eq!(e.0["eu-ch2"], ("https://ims.example".into(), "https://iam.example".into()));
        assert_eq!(e.0.len(), 2);
        assert_eq!(parse_region_endpoints("").unwrap(), RegionEndpoints::default());
        for bad in ["eu-ch2", "eu-ch2=https://a", "EU=https://a,https://b", "x=a,b,c", "x=a,b;x=c,d", "x=,b"] {
            assert!(parse_region_endpoints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolution_and_allowed_regions() {
        let e = parse_region_endpoints("eu-ch2=https://ims.ch,https://iam.ch").unwrap();
        let t = ("https://ims.{region}.otc", "https://iam.{region}.otc");
        assert_eq!(e.resolve("eu-ch2", t.0, t.1), ("https://ims.ch".into(), "https://iam.ch".into()));
        assert_eq!(e.resolve("eu-nl", t.0, t.1), ("https://ims.eu-nl.otc".into(), "https://iam.eu-nl.otc".into()));
        let cases: [(Option<&[&str]>, &str, bool); 5] = [
            (None, "eu-de", true),
            (None, "eu-ch2", true),
            (None, "ap-southeast-1", false),
            (Some(&["eu-de"]), "eu-nl", false),
            (Some(&["eu-de", "x"]), "x", true),
        ];
        for (given, region, ok) in cases {
            let given: Option<Vec<String>> = given.map(|g| g.iter().map(|s| s.to_string()).collect());
            let allowed = allowed(given.as_deref(), &e);
            assert_eq!(refuse(region, &allowed).is_none(), ok, "{given:?} {region}");
        }
    }

    #[test]
    fn endpoints_are_checked_like_the_defaults() {
        let e = parse_region_endpoints("eu-ch2=http://ims.example,https://iam.example").unwrap();
        assert!(e.check(false).unwrap_err().contains("eu-ch2"));
        assert!(e.check(true).is_ok());
        assert!(parse_region_endpoints("l=http://127.0.0.1:1,http://127.0.0.1:2").unwrap().check(false).is_ok());
    }
}
