//! One probe per credential. The API gateway locks an access key after five
//! bad signatures, and IAM locks a user after failed logins, whatever
//! ImageJob sent them; so the unit that backs off is the credential (by
//! fingerprint), not the ImageJob:
//! - until a credential has been seen to work, at most one request with it
//!   is in flight (the others wait for that answer);
//! - after an authentication failure nothing is sent with it; every caller
//!   gets that failure back, until one backoff probe succeeds. A corrected
//!   Secret is a new fingerprint and so starts afresh at once;
//! - but the gateway locks the access key (and IAM the user), not the
//!   Secret: five Secrets naming one access key with five wrong secret keys
//!   would lock it. So unverified probes of one access key (or IAM user) go
//!   one at a time, and after `MAX_REFUSED_PER_LOCK` refusals within
//!   `LOCK_WINDOW` no new one goes until the window has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::Instant;

use crate::ims::credentials::CacheKey;
use crate::ims::{ErrorKind, ImsError};

/// Backoff between probes of a refused credential.
const PROBE_MIN: Duration = Duration::from_secs(300);
const PROBE_MAX: Duration = Duration::from_secs(3600);

/// Refusals of one access key (or IAM user) that stop further probes with
/// it, and how long they count: below the gateway's five in a row, over its
/// five-minute lock.
const MAX_REFUSED_PER_LOCK: usize = 3;
const LOCK_WINDOW: Duration = Duration::from_secs(300);

/// A credential at one endpoint: the unit that backs off. `lock` is what
/// the cloud locks (`Credentials::lock_key`), shared by credentials that
/// differ only in their secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GateKey {
    pub endpoint: String,
    pub credentials: CacheKey,
    pub lock: Option<CacheKey>,
}

/// Pure: when the next probe of a lock (access key, user) may go, given the
/// times of its recent refusals; None when it may go now.
pub fn lock_wait(refusals: &[Instant], now: Instant) -> Option<Duration> {
    let mut ages: Vec<Duration> =
        refusals.iter().map(|t| now.duration_since(*t)).filter(|age| *age < LOCK_WINDOW).collect();
    if ages.len() < MAX_REFUSED_PER_LOCK {
        return None;
    }
    // Oldest first: the wait ends when enough of them have aged out.
    ages.sort_unstable_by(|a, b| b.cmp(a));
    Some(LOCK_WINDOW - ages[ages.len() - MAX_REFUSED_PER_LOCK])
}

#[derive(Clone, Debug, Default)]
pub enum State {
    /// No answer yet that shows the credential works.
    #[default]
    Unverified,
    /// It worked: requests go freely.
    Verified,
    /// It was refused: nothing goes until `retry_at`, then one probe.
    Refused { error: Arc<ImsError>, retry_at: Instant, failures: u32 },
}

/// What a caller may do now.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Send,
    /// Send, as the only request in flight with this credential.
    Probe,
    Refuse,
}

/// Pure: what the state allows at `now`.
pub fn decide(state: &State, now: Instant) -> Decision {
    match state {
        State::Verified => Decision::Send,
        State::Unverified => Decision::Probe,
        State::Refused { retry_at, .. } if now >= *retry_at => Decision::Probe,
        State::Refused { .. } => Decision::Refuse,
    }
}

/// Pure: the state after an answer. Any answer past the gateway (a job,
/// 403, 404, 400) shows the credential works; a transient failure shows
/// nothing; an authentication failure refuses it.
pub fn after(
    state: &State,
    answer: Result<(), &Arc<ImsError>>,
    now: Instant,
    backoff: impl Fn(u32) -> Duration,
) -> State {
    let err = match answer {
        Ok(()) => return State::Verified,
        Err(e) => e,
    };
    match err.kind() {
        ErrorKind::AuthenticationFailed => {
            let failures = match state {
                State::Refused { failures, .. } => failures + 1,
                _ => 1,
            };
            State::Refused { error: err.clone(), retry_at: now + backoff(failures), failures }
        }
        ErrorKind::Transient => state.clone(),
        // Built locally and never sent: proves nothing.
        ErrorKind::BadRequest if err.status().is_none() => state.clone(),
        ErrorKind::Forbidden | ErrorKind::JobNotFound | ErrorKind::BadRequest => State::Verified,
    }
}

#[derive(Default)]
struct Entry {
    state: Mutex<State>,
    /// Held by the one request in flight while the credential is not verified.
    probe: Arc<AsyncMutex<()>>,
}

/// One access key (or IAM user) at one endpoint, over all its credentials.
#[derive(Default)]
struct LockEntry {
    /// When its credentials were refused lately (authentication failures).
    refusals: Mutex<Vec<Instant>>,
    /// Held by the one unverified probe in flight with it.
    probe: Arc<AsyncMutex<()>>,
}

/// Permission to send; report the answer with [`CredentialGate::report`].
pub enum Admission {
    Send(Ticket),
    /// The credential was refused: this is the failure to show.
    Refused(Arc<ImsError>),
}

pub struct Ticket {
    key: GateKey,
    _probe: Option<OwnedMutexGuard<()>>,
    _lock_probe: Option<OwnedMutexGuard<()>>,
}

#[derive(Default)]
pub struct CredentialGate {
    entries: Mutex<HashMap<GateKey, Arc<Entry>>>,
    locks: Mutex<HashMap<(String, CacheKey), Arc<LockEntry>>>,
}

impl CredentialGate {
    fn entry(&self, key: &GateKey) -> Arc<Entry> {
        self.entries.lock().unwrap().entry(key.clone()).or_default().clone()
    }

    fn lock_entry(&self, key: &GateKey) -> Option<Arc<LockEntry>> {
        let lock = key.lock?;
        Some(self.locks.lock().unwrap().entry((key.endpoint.clone(), lock)).or_default().clone())
    }

    /// Before a probe: one at a time per access key, and none while it has
    /// been refused too often lately (a transient refusal: it passes).
    async fn admit_probe(&self, key: &GateKey) -> Result<Option<OwnedMutexGuard<()>>, Arc<ImsError>> {
        let Some(lock) = self.lock_entry(key) else { return Ok(None) };
        let guard = lock.probe.clone().lock_owned().await;
        match lock_wait(&lock.refusals.lock().unwrap(), Instant::now()) {
            None => Ok(Some(guard)),
            Some(wait) => Err(Arc::new(ImsError::Transport {
                service: crate::ims::error::Service::Ims,
                detail: format!(
                    "not sent: {MAX_REFUSED_PER_LOCK} credentials with this access key or user were refused in the \
                     last {} minutes, and the cloud locks it after five; next try in {}s",
                    LOCK_WINDOW.as_secs() / 60,
                    wait.as_secs().max(1)
                ),
            })),
        }
    }

    /// Waits while another request probes this credential, then says
    /// whether this one may be sent.
    pub async fn admit(&self, key: &GateKey) -> Admission {
        let entry = self.entry(key);
        let refused = |entry: &Entry| match &*entry.state.lock().unwrap() {
            State::Refused { error, .. } => Admission::Refused(error.clone()),
            _ => unreachable!("only a refused state refuses"),
        };
        // The decision is taken before matching: `refused` locks the state again.
        let decision = decide(&entry.state.lock().unwrap(), Instant::now());
        let send =
            |probe, lock_probe| Admission::Send(Ticket { key: key.clone(), _probe: probe, _lock_probe: lock_probe });
        match decision {
            Decision::Send => return send(None, None),
            Decision::Refuse => return refused(&entry),
            Decision::Probe => {}
        }
        let guard = entry.probe.clone().lock_owned().await;
        // The probe before us may have settled it.
        let decision = decide(&entry.state.lock().unwrap(), Instant::now());
        match decision {
            Decision::Send => send(None, None),
            Decision::Refuse => refused(&entry),
            Decision::Probe => match self.admit_probe(key).await {
                Ok(lock_probe) => send(Some(guard), lock_probe),
                Err(wait) => Admission::Refused(wait),
            },
        }
    }

    /// Records the answer of an admitted request (before the ticket drops,
    /// so the next waiter sees it).
    pub fn report(&self, ticket: &Ticket, answer: Result<(), &Arc<ImsError>>) {
        let entry = self.entry(&ticket.key);
        let now = Instant::now();
        let mut state = entry.state.lock().unwrap();
        *state = after(&state, answer, now, |n| super::schedule::backoff(n, PROBE_MIN, PROBE_MAX, None));
        if let (Err(e), State::Refused { retry_at, failures, .. }) = (answer, &*state)
            && e.kind() == ErrorKind::AuthenticationFailed
        {
            let next_probe_in = retry_at.duration_since(now).as_secs();
            tracing::debug!(
                failures,
                next_probe_in,
                "credential refused: nothing is sent with it before the next probe"
            );
        }
        if let Some(lock) = self.lock_entry(&ticket.key) {
            let mut refusals = lock.refusals.lock().unwrap();
            match (answer, &*state) {
                (Err(e), _) if e.kind() == ErrorKind::AuthenticationFailed => refusals.push(now),
                (_, State::Verified) => refusals.clear(),
                _ => {}
            }
            refusals.retain(|t| now.duration_since(*t) < LOCK_WINDOW);
        }
    }

    /// Forgets credentials nobody is sending with and nobody is locked out of.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.entries.lock().unwrap().retain(|_, e| {
            Arc::strong_count(e) > 1
                || matches!(&*e.state.lock().unwrap(), State::Refused { retry_at, .. } if *retry_at > now)
        });
        self.locks.lock().unwrap().retain(|_, l| {
            Arc::strong_count(l) > 1 || l.refusals.lock().unwrap().iter().any(|t| now.duration_since(*t) < LOCK_WINDOW)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::credentials::Credentials;
    use crate::ims::error::Service;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn http(status: u16, code: &str) -> Arc<ImsError> {
        let body = format!(r#"{{"error_code":"{code}","error_msg":"m"}}"#);
        Arc::new(ImsError::from_response(Service::Ims, status, &Default::default(), body.as_bytes()))
    }

    fn key(sk: &str) -> GateKey {
        let creds = Credentials::AkSk { access_key: "AK".into(), secret_key: sk.into(), security_token: None };
        GateKey { endpoint: "http://ims".into(), credentials: creds.cache_key(), lock: creds.lock_key() }
    }

    #[test]
    fn decisions_and_transitions() {
        let now = Instant::now();
        let backoff = |n: u32| Duration::from_secs(300 * u64::from(n));
        let refused = after(&State::Unverified, Err(&http(401, "APIGW.0301")), now, backoff);
        assert_eq!(decide(&refused, now), Decision::Refuse);
        assert_eq!(decide(&refused, now + Duration::from_secs(300)), Decision::Probe, "one probe after backoff");
        let again = after(&refused, Err(&http(401, "APIGW.0301")), now, backoff);
        assert!(matches!(again, State::Refused { failures: 2, .. }));
        assert_eq!(decide(&again, now + Duration::from_secs(300)), Decision::Refuse, "backoff grows");
        let cases: [(Result<(), Arc<ImsError>>, Decision); 5] = [
            (Ok(()), Decision::Send),
            (Err(http(404, "IMG.0001")), Decision::Send),
            (Err(http(403, "IMG.0001")), Decision::Send),
            (Err(http(503, "X")), Decision::Probe),
            (Err(http(429, "APIG.0308")), Decision::Probe),
        ];
        for (answer, want) in cases {
            let next = after(&State::Unverified, answer.as_ref().map(|_| ()), now, backoff);
            assert_eq!(decide(&next, now), want, "{answer:?}");
        }
        assert_eq!(decide(&after(&refused, Ok(()), now, backoff), now), Decision::Send, "a probe that works");
    }

    /// Ten callers on one wrong key: one request, ten refusals.
    #[tokio::test]
    async fn ten_callers_on_a_wrong_key_send_once() {
        let gate = Arc::new(CredentialGate::default());
        let sent = Arc::new(AtomicUsize::new(0));
        let calls = (0..10).map(|_| {
            let (gate, sent) = (gate.clone(), sent.clone());
            tokio::spawn(async move {
                match gate.admit(&key("wrong")).await {
                    Admission::Send(ticket) => {
                        sent.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        gate.report(&ticket, Err(&http(401, "APIGW.0301")));
                        false
                    }
                    Admission::Refused(e) => e.kind() == ErrorKind::AuthenticationFailed,
                }
            })
        });
        let refused = futures::future::join_all(calls).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(sent.load(Ordering::SeqCst), 1);
        assert_eq!(refused, 9);
        // The corrected Secret is another credential: it goes at once.
        assert!(matches!(gate.admit(&key("right")).await, Admission::Send(_)));
    }

    /// Five Secrets naming one access key, five wrong secret keys: three
    /// bad signatures at most, then nothing until the window has passed.
    #[tokio::test(start_paused = true)]
    async fn one_access_key_with_many_wrong_secrets_is_never_locked() {
        let gate = CredentialGate::default();
        let mut sent = 0;
        for sk in ["w1", "w2", "w3", "w4", "w5"] {
            match gate.admit(&key(sk)).await {
                Admission::Send(ticket) => {
                    sent += 1;
                    gate.report(&ticket, Err(&http(401, "APIGW.0301")));
                }
                Admission::Refused(e) => {
                    assert!(e.is_transient(), "waiting is not a credential failure: {e}");
                    assert!(e.to_string().contains("locks it after five"), "{e}");
                }
            }
        }
        assert_eq!(sent, MAX_REFUSED_PER_LOCK);
        tokio::time::advance(LOCK_WINDOW).await;
        assert!(matches!(gate.admit(&key("right")).await, Admission::Send(_)), "after the window, one more");
        // Another access key is not held up by this one.
        let other = Credentials::AkSk { access_key: "AK2".into(), secret_key: "x".into(), security_token: None };
        let other = GateKey { endpoint: "http://ims".into(), credentials: other.cache_key(), lock: other.lock_key() };
        assert!(matches!(gate.admit(&other).await, Admission::Send(_)));
    }

    #[test]
    fn lock_wait_counts_recent_refusals_only() {
        let now = Instant::now() + LOCK_WINDOW * 2;
        let ago = |s: u64| now - Duration::from_secs(s);
        assert_eq!(lock_wait(&[ago(10), ago(20)], now), None);
        assert_eq!(lock_wait(&[ago(10), ago(20), ago(30)], now), Some(LOCK_WINDOW - Duration::from_secs(30)));
        let four = [ago(10), ago(20), ago(30), ago(40)];
        assert_eq!(lock_wait(&four, now), Some(LOCK_WINDOW - Duration::from_secs(30)), "until two have aged out");
        assert_eq!(lock_wait(&[ago(10), ago(20), ago(400)], now), None, "one is older than the window");
    }

    #[tokio::test]
    async fn a_verified_credential_sends_in_parallel() {
        let gate = CredentialGate::default();
        let Admission::Send(first) = gate.admit(&key("k")).await else { panic!("refused") };
        gate.report(&first, Ok(()));
        drop(first);
        let a = gate.admit(&key("k")).await;
        let b = gate.admit(&key("k")).await;
        assert!(matches!((a, b), (Admission::Send(_), Admission::Send(_))));
    }
}
