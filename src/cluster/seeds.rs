//! Seeds: where a node looks for the cluster, resolved again and again so
//! that a DNS name's changing record set is followed.

use std::net::SocketAddr;
use std::time::Duration;

use super::Seed;

/// Most addresses taken from all seeds together per round.
const MAX_SEED_ADDRS: usize = 256;

/// Every address the seeds name now: static ones as they are, DNS names as
/// the system resolver answers (a name that fails to resolve is skipped and
/// logged; the next round tries again).
pub(crate) async fn resolve(seeds: &[Seed]) -> Vec<SocketAddr> {
    let mut all = Vec::new();
    for seed in seeds {
        match seed {
            Seed::Addr(a) => all.push(*a),
            Seed::Dns { host, port } => match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(found) => all.extend(found.take(MAX_SEED_ADDRS)),
                Err(e) => tracing::debug!(%host, error = %e, "seed name did not resolve"),
            },
        }
    }
    all.sort();
    all.dedup();
    all.truncate(MAX_SEED_ADDRS);
    all
}

/// Resolves `seeds` now and every `interval`, handing each round's
/// addresses to `out` until it closes.
pub(crate) async fn watch(seeds: Vec<Seed>, interval: Duration, out: tokio::sync::mpsc::Sender<Vec<SocketAddr>>) {
    if seeds.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let addrs = resolve(&seeds).await;
        tracing::trace!(?addrs, "seeds resolved");
        if out.send(addrs).await.is_err() {
            return;
        }
    }
}
