//! Lease renewal: while passes run (user code included, however long), their leases are
//! extended every third of the lease, all in one statement. It runs on the I/O executor,
//! so user code that blocks a shard does not stop it.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::db;
use crate::shared::Shared;

/// Renews the leases held until `stop` changes.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = shared.lease / 3;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(every) => {}
        }
        renew(&shared).await;
    }
}

/// Extends every lease held; reports those taken over meanwhile. Their passes' next steps
/// fail on the fence, and the shards forget them when the passes end.
async fn renew(shared: &Shared) {
    let (ids, tokens) = shared.leases.tokens();
    if ids.is_empty() {
        return;
    }
    let until = shared.now().saturating_add(shared.lease_ms());
    match db::renew(&shared.store, &ids, &tokens, until).await {
        Ok(renewed) if renewed.len() < ids.len() => {
            let renewed: HashSet<String> = renewed.into_iter().collect();
            for id in ids.iter().filter(|id| !renewed.contains(id.as_ref())) {
                tracing::warn!(instance = %id, "an alarm lease was taken over by another process");
            }
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, leases = ids.len(), "cannot renew alarm leases");
        }
    }
}
