//! Fenced writes: a replica that is not (or no longer) the leader writes no
//! status and no Event. A leader paused (SIGSTOP, a long GC, a frozen VM)
//! past its Lease wakes with reconciles in flight and a stale belief that it
//! leads; so before each write the Lease itself is read. The write's
//! resourceVersion precondition (see `reconcile`) is the second fence: even
//! a write that slips through cannot replace a newer status.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;

use super::Error;

/// None when leader election is off (a single replica writes freely).
pub struct Fence {
    lease: Option<LeaseFence>,
}

struct LeaseFence {
    api: Api<Lease>,
    name: String,
    identity: String,
    leader: watch::Receiver<bool>,
}

impl Fence {
    pub fn none() -> Self {
        Fence { lease: None }
    }

    pub fn lease(api: Api<Lease>, name: &str, identity: &str, leader: watch::Receiver<bool>) -> Self {
        Fence { lease: Some(LeaseFence { api, name: name.to_owned(), identity: identity.to_owned(), leader }) }
    }

    /// Ok when this replica may write now.
    pub async fn check(&self) -> Result<(), Error> {
        let Some(l) = &self.lease else { return Ok(()) };
        if !*l.leader.borrow() {
            return Err(Error::NotLeader);
        }
        let lease = l.api.get(&l.name).await.map_err(Error::Lease)?;
        if holds(&lease, &l.identity, Timestamp::now()) { Ok(()) } else { Err(Error::NotLeader) }
    }
}

/// Pure: `identity` holds `lease` at `now` (holder, and renewed within its
/// duration).
pub fn holds(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    live_holder(lease, now) == Some(identity)
}

/// Pure: who holds `lease` at `now`, if anyone (a holder whose time ran out
/// or an empty holder, as a released Lease has, holds nothing).
pub fn live_holder(lease: &Lease, now: Timestamp) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let until = renewed.checked_add(jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds?))).ok()?;
    (now < until).then_some(holder)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    pub(crate) fn lease(holder: &str, renewed: i64, duration: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn only_the_holder_of_a_live_lease_may_write() {
        let now = Timestamp::from_second(1000).unwrap();
        let cases = [
            (lease("me", 990, 15), true),
            (lease("me", 980, 15), false),    // expired: paused past the Lease
            (lease("other", 995, 15), false), // taken over
            (Lease::default(), false),
        ];
        for (l, want) in cases {
            assert_eq!(holds(&l, "me", now), want, "{:?}", l.spec);
        }
    }
}
