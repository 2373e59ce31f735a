//! The membership's metrics (feature `metrics`): the members this node
//! sees up and down, and its gossip counters, recorded by the driver every
//! [`Config::metrics_interval`](crate::Config::metrics_interval) and
//! labelled `node` like the node's own series (`node/metrics.rs`). Without
//! the feature the [`Sampler`] never comes due.

#[cfg(feature = "metrics")]
pub(super) use sampler::Sampler;

#[cfg(not(feature = "metrics"))]
pub(super) use off::Sampler;

#[cfg(feature = "metrics")]
mod sampler {
    use std::sync::{Arc, Weak};

    use metrics::{describe_counter, describe_gauge, gauge, Unit};

    use super::super::{GossipStats, MemberStatus, Shared};
    use crate::node::metrics::{increase, node_label};
    use crate::node::NodeInner;

    const MEMBERS: &str = "tether_cluster_members";
    const MEMBERS_DOWN: &str = "tether_cluster_members_down";
    const GOSSIP_SENT: &str = "tether_gossip_sent_total";
    const GOSSIP_SENT_BYTES: &str = "tether_gossip_sent_bytes_total";
    const GOSSIP_RECEIVED: &str = "tether_gossip_received_total";
    const GOSSIP_RECEIVED_BYTES: &str = "tether_gossip_received_bytes_total";
    const GOSSIP_REJECTED: &str = "tether_gossip_rejected_total";

    /// The gossip counters, in the order [`gossip_counts`] reads them.
    const GOSSIP_COUNTERS: [&str; 5] =
        [GOSSIP_SENT, GOSSIP_SENT_BYTES, GOSSIP_RECEIVED, GOSSIP_RECEIVED_BYTES, GOSSIP_REJECTED];

    fn gossip_counts(s: &GossipStats) -> [u64; GOSSIP_COUNTERS.len()] {
        [s.sent, s.sent_bytes, s.received, s.received_bytes, s.rejected]
    }

    /// When to record next, as which node, and the gossip counts recorded
    /// so far: this membership's counts start from zero, the node's series
    /// may have counted an earlier one, so they are increased by the growth.
    pub(in super::super) struct Sampler {
        tick: tokio::time::Interval,
        node: Arc<str>,
        recorded: GossipStats,
    }

    impl Sampler {
        /// Describes the series; the first sample is due at once.
        pub(in super::super) fn new(node: &Weak<NodeInner>) -> Sampler {
            describe_gauge!(MEMBERS, Unit::Count, "Other cluster members this node sees up.");
            describe_gauge!(MEMBERS_DOWN, Unit::Count, "Cluster members this node saw declared down and remembers.");
            describe_counter!(GOSSIP_SENT, Unit::Count, "Gossip datagrams sent.");
            describe_counter!(GOSSIP_SENT_BYTES, Unit::Bytes, "Gossip bytes sent.");
            describe_counter!(GOSSIP_RECEIVED, Unit::Count, "Gossip datagrams received with a valid tag.");
            describe_counter!(GOSSIP_RECEIVED_BYTES, Unit::Bytes, "Gossip bytes received.");
            describe_counter!(GOSSIP_REJECTED, Unit::Count, "Gossip datagrams dropped (no valid tag, undecodable).");
            // The driver is started by its node, which is alive then.
            let (node, every) = match node.upgrade() {
                Some(n) => (node_label(&n), n.cfg.metrics_interval),
                None => (Arc::from(""), std::time::Duration::from_secs(1)),
            };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Sampler { tick, node, recorded: GossipStats::default() }
        }

        /// Resolves when the next sample is due.
        pub(in super::super) async fn due(&mut self) {
            self.tick.tick().await;
        }

        /// Records the view and the gossip counters `shared` publishes.
        pub(in super::super) fn record(&mut self, shared: &Shared) {
            let (up, down, stats) = {
                let p = shared.lock();
                let count = |status| p.members.iter().filter(|m| m.status == status).count();
                (count(MemberStatus::Up), count(MemberStatus::Down), p.stats)
            };
            let labels = [("node", self.node.clone())];
            gauge!(MEMBERS, &labels).set(up as f64);
            gauge!(MEMBERS_DOWN, &labels).set(down as f64);
            let before = std::mem::replace(&mut self.recorded, stats);
            increase(&GOSSIP_COUNTERS, &labels, &gossip_counts(&before), &gossip_counts(&stats));
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    use std::sync::Weak;

    use super::super::Shared;
    use crate::node::NodeInner;

    /// Never due.
    pub(in super::super) struct Sampler;

    impl Sampler {
        pub(in super::super) fn new(_: &Weak<NodeInner>) -> Sampler {
            Sampler
        }

        pub(in super::super) async fn due(&mut self) {
            std::future::pending().await
        }

        pub(in super::super) fn record(&mut self, _: &Shared) {}
    }
}
