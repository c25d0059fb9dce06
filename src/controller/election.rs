//! Leader election on a `coordination.k8s.io` Lease. kube-lease-manager
//! claims and renews it; a standby, though, watches the Lease itself (a GET
//! a second) and starts its manager only when the Lease is free. The manager
//! alone sleeps until the holder's Lease would expire, so a leader that
//! released the Lease on a graceful stop would still cost the standby the
//! whole Lease duration (15 s) instead of about a second.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::fence::{Fence, live_holder};

/// A 15 s Lease renewed from 12 s before it ends (every ~3 s, as client-go's
/// 2 s retry against a 10 s deadline): one slow request on a loaded API
/// server or node does not cost the Lease, and a standby still takes over
/// about 15 s after a crash.
const LEASE_SECONDS: u64 = 15;
const RENEW_GRACE_SECONDS: u64 = 12;
/// How often a standby reads the Lease.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// How long a claim may take before the standby goes back to watching (another
/// standby won the race, and this manager would sleep a whole Lease).
const CLAIM_WINDOW: Duration = Duration::from_secs(5);

pub type LeaseTask = JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>;

/// This replica leads: `leader` turns false if the Lease is lost; dropping
/// every receiver makes `task` release the Lease.
pub struct Elected {
    pub leader: watch::Receiver<bool>,
    pub task: LeaseTask,
    pub fence: Fence,
}

enum Claim {
    Decided(bool),
    Shutdown,
}

pub struct Election {
    pub client: Client,
    pub namespace: String,
    pub lease: String,
    pub identity: String,
}

/// Pure: whether `identity` may claim `lease` at `now` — it does not exist,
/// nobody holds it, its holder's time ran out, or it is ours already.
pub fn claimable(lease: Option<&Lease>, identity: &str, now: Timestamp) -> bool {
    lease.and_then(|l| live_holder(l, now)).is_none_or(|holder| holder == identity)
}

impl Election {
    /// Waits until this replica holds the Lease; None when `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> anyhow::Result<Option<Elected>> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        loop {
            tokio::select! {
                () = self.until_claimable(&leases) => {}
                () = shutdown.cancelled() => return Ok(None),
            }
            let (mut leader, task) = self.manager().await?.watch().await;
            let claim = tokio::select! {
                won = leader.wait_for(|is_leader| *is_leader) => Claim::Decided(won.is_ok()),
                () = tokio::time::sleep(CLAIM_WINDOW) => Claim::Decided(false),
                () = shutdown.cancelled() => Claim::Shutdown,
            };
            match claim {
                Claim::Decided(true) => {
                    let fence = Fence::lease(leases, &self.lease, &self.identity, leader.clone());
                    return Ok(Some(Elected { leader, task, fence }));
                }
                Claim::Decided(false) => debug!("another replica claimed the Lease first"),
                Claim::Shutdown => {
                    // Dropping the receiver makes the manager release what it claimed.
                    drop(leader);
                    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                    return Ok(None);
                }
            }
            // Not the holder: nothing to release, and its sleep is what we avoid.
            task.abort();
        }
    }

    async fn until_claimable(&self, leases: &Api<Lease>) {
        let mut tick = tokio::time::interval(STANDBY_POLL);
        let mut holder_seen: Option<String> = None;
        let mut error_seen = String::new();
        loop {
            tick.tick().await;
            let lease = match leases.get_opt(&self.lease).await {
                Ok(lease) => lease,
                Err(e) => {
                    // Said once per kind of error (RBAC, API server away), not each second.
                    let error = e.to_string();
                    if error != error_seen {
                        warn!(%error, "reading the leader Lease; retrying every second");
                        error_seen = error;
                    }
                    continue;
                }
            };
            let now = Timestamp::now();
            if claimable(lease.as_ref(), &self.identity, now) {
                return;
            }
            let holder = lease.as_ref().and_then(|l| live_holder(l, now)).map(str::to_owned);
            if holder != holder_seen {
                info!(holder = holder.as_deref().unwrap_or(""), "standing by; the Lease is held");
                holder_seen = holder;
            }
        }
    }

    async fn manager(&self) -> anyhow::Result<kube_lease_manager::LeaseManager> {
        Ok(kube_lease_manager::LeaseManagerBuilder::new(self.client.clone(), &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(RENEW_GRACE_SECONDS)
            .with_field_manager(super::FIELD_MANAGER)
            .build()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fence::tests::lease;

    #[test]
    fn a_standby_claims_only_a_free_expired_or_own_lease() {
        let now = Timestamp::from_second(1000).unwrap();
        let released = Lease { spec: Some(Default::default()), ..Lease::default() };
        let cases = [
            (None, true),                          // not created yet
            (Some(released), true),                // released on a graceful stop
            (Some(lease("other", 980, 15)), true), // holder crashed, Lease expired
            (Some(lease("me", 995, 15)), true),    // ours (a claim we did not see end)
            (Some(lease("other", 995, 15)), false),
        ];
        for (l, want) in cases {
            assert_eq!(claimable(l.as_ref(), "me", now), want, "{:?}", l.map(|l| l.spec));
        }
    }
}
