//! `imagejob-operator probe URL`: one HTTP GET, exit 0 on a 2xx answer. The
//! image has no shell and no HTTP client, so `helm test` and ad-hoc checks
//! (`kubectl debug`) use the operator binary itself.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// http:// or https:// URL to GET, e.g. http://imagejob-operator-metrics:8080/readyz
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What a probe concluded, and the line that says so.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed(String),
    Failed(String),
}

/// Pure: an answer's status and the start of its body, as a verdict.
pub fn judge(url: &str, status: u16, body: &str) -> Verdict {
    let first_line = body.lines().next().unwrap_or("").chars().take(200).collect::<String>();
    let line = format!("{url}: {status} {first_line}");
    if (200..300).contains(&status) { Verdict::Passed(line) } else { Verdict::Failed(line) }
}

/// Checks the URL's form before anything is sent.
pub fn parse_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("{raw:?}: only http:// and https:// URLs with a host can be probed")),
    }
}

pub async fn run(args: ProbeArgs) -> ExitCode {
    let url = match parse_url(&args.url) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(4);
        }
    };
    match fetch(url, args.timeout).await {
        Ok(Verdict::Passed(line)) => {
            println!("ok: {line}");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Failed(line)) => {
            eprintln!("failed: {line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("failed: {}: {e}", args.url);
            ExitCode::FAILURE
        }
    }
}

async fn fetch(url: reqwest::Url, timeout: Duration) -> Result<Verdict, reqwest::Error> {
    let shown = url.to_string();
    let client = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()?;
    let answer = client.get(url).send().await?;
    let status = answer.status().as_u16();
    let body = answer.text().await.unwrap_or_default();
    Ok(judge(&shown, status, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_passes() {
        assert_eq!(judge("u", 200, "ok\n"), Verdict::Passed("u: 200 ok".into()));
        assert!(matches!(judge("u", 204, ""), Verdict::Passed(_)));
        assert_eq!(
            judge("u", 503, "not ready: ImageJob cache not synced"),
            Verdict::Failed("u: 503 not ready: ImageJob cache not synced".into())
        );
        assert!(matches!(judge("u", 301, ""), Verdict::Failed(_)));
    }

    #[test]
    fn only_http_urls_with_a_host_are_probed() {
        assert!(parse_url("http://198.19.1.10:8080/readyz").is_ok());
        assert!(parse_url("https://svc.ns:8443/readyz").is_ok());
        for bad in ["file:///etc/passwd", "readyz", "http://", "unix:/run/x.sock"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
