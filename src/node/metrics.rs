//! Metrics through the `metrics` facade (feature `metrics`).
//!
//! Nothing on a message's path calls the facade. The mux, the connection
//! and the node count anyway ([`ConnectionStats`], [`NodeStats`]), and an
//! export's pumps deliver through a [`Counted`] mailbox, one relaxed add
//! per message; one task per node, the sampler, reads those counts every
//! [`Config::metrics_interval`](crate::Config::metrics_interval) and
//! records them: gauges set, counters increased by what they grew since
//! the last sample. (The counts start from zero with each connection and
//! export; the series outlive them, and a metrics counter only goes up. A
//! connection or export that ended is read once more, so its last interval
//! counts too.) Its cost is per sample and per live peer, never per
//! message.
//!
//! Every series is labelled `node` (this node's name, or its id if it has
//! none); a connection's series also `peer` (the name the peer gave, else
//! its id), a named export's `actor` (its name). Exports without a name
//! (refs handed out in messages) are not recorded one by one: their number
//! is unbounded and their ids mean nothing to a reader. So a node records
//! one set of series per live peer and per named export, and no other
//! label. A departed peer's series are no longer recorded; the recorder
//! keeps their last values (the Prometheus exporter drops them after its
//! `idle_timeout`, if one is set).
//!
//! The sampler is the node's task (`NodeInner::spawn_service`): it holds
//! the node weakly, and ends when shutdown begins (after a last sample) or
//! the node is dropped.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};

use super::{ActorExit, Mailbox, Node, NodeInner, NodeStats, Phase, RemoteMessage};
use crate::conn::Counters;
use crate::{ConnectionStats, NodeId};

/// The names of the node's series, with their units and help texts: the
/// whole vocabulary, described once per sampler.
pub(crate) mod names {
    // Per node.
    pub(crate) const PEERS: &str = "tether_peers";
    pub(crate) const EXPORTS: &str = "tether_exports";
    pub(crate) const ROUTES: &str = "tether_routes";
    pub(crate) const OUTBOX_HELD: &str = "tether_outbox_held";
    pub(crate) const OUTBOX_REFUSED: &str = "tether_outbox_refused_total";
    pub(crate) const OUTBOX_UNDELIVERED: &str = "tether_outbox_undelivered_total";
    // Per connection.
    pub(crate) const MESSAGES_SENT: &str = "tether_messages_sent_total";
    pub(crate) const MESSAGES_RECEIVED: &str = "tether_messages_received_total";
    pub(crate) const BYTES_SENT: &str = "tether_bytes_sent_total";
    pub(crate) const BYTES_RECEIVED: &str = "tether_bytes_received_total";
    pub(crate) const SENDS_FULL: &str = "tether_sends_full_total";
    pub(crate) const SENDS_REFUSED: &str = "tether_sends_refused_total";
    pub(crate) const UNDECODABLE: &str = "tether_messages_undecodable_total";
    pub(crate) const UNREAD: &str = "tether_messages_unread_total";
    pub(crate) const RECONNECTS: &str = "tether_reconnects_total";
    pub(crate) const RESUMES: &str = "tether_resumes_total";
    pub(crate) const RTT: &str = "tether_rtt_seconds";
    pub(crate) const SEND_QUEUED: &str = "tether_send_queued_bytes";
    pub(crate) const RECV_BUFFERED: &str = "tether_recv_buffered_bytes";
    pub(crate) const REPLAY: &str = "tether_replay_bytes";
    pub(crate) const OPEN_PORTS: &str = "tether_open_ports";
    // Per named export.
    pub(crate) const DELIVERED: &str = "tether_actor_messages_delivered_total";
}

use names::*;

/// Describes every series of the node layer to the installed recorder.
fn describe() {
    describe_gauge!(PEERS, Unit::Count, "Peers with a live connection.");
    describe_gauge!(EXPORTS, Unit::Count, "Actors exported.");
    describe_gauge!(ROUTES, Unit::Count, "Routes held (one per actor this node holds refs to).");
    describe_gauge!(OUTBOX_HELD, Unit::Count, "Posted messages held in outboxes, not yet taken by their routes.");
    describe_counter!(
        OUTBOX_REFUSED,
        Unit::Count,
        "Posts refused because the outboxes were full (Config::max_outbox)."
    );
    describe_counter!(OUTBOX_UNDELIVERED, Unit::Count, "Messages accepted into an outbox and then not delivered.");
    describe_counter!(MESSAGES_SENT, Unit::Count, "Messages queued to the peer.");
    describe_counter!(MESSAGES_RECEIVED, Unit::Count, "Messages received from the peer.");
    describe_counter!(BYTES_SENT, Unit::Bytes, "Encoded bytes of the messages queued to the peer.");
    describe_counter!(BYTES_RECEIVED, Unit::Bytes, "Encoded bytes of the messages received from the peer.");
    describe_counter!(
        SENDS_FULL,
        Unit::Count,
        "Sends to the peer refused with Full because the send buffers were full."
    );
    describe_counter!(SENDS_REFUSED, Unit::Count, "Posts to the peer's actors refused because the outboxes were full.");
    describe_counter!(UNDECODABLE, Unit::Count, "Messages from the peer that did not decode, dropped.");
    describe_counter!(UNREAD, Unit::Count, "Messages to or from the peer dropped unread: their reader closed first.");
    describe_counter!(RECONNECTS, Unit::Count, "Reconnection attempts after the transport broke.");
    describe_counter!(RESUMES, Unit::Count, "Times the session resumed on a new transport.");
    describe_gauge!(RTT, Unit::Seconds, "Round-trip time measured by pings, smoothed.");
    describe_gauge!(SEND_QUEUED, Unit::Bytes, "Bytes queued for sending and not yet written, plus 64 per message.");
    describe_gauge!(RECV_BUFFERED, Unit::Bytes, "Received bytes held for the application.");
    describe_gauge!(REPLAY, Unit::Bytes, "Sent bytes kept until the peer acknowledges them.");
    describe_gauge!(OPEN_PORTS, Unit::Count, "Ports open on the connection.");
    describe_counter!(DELIVERED, Unit::Count, "Messages from peers handed to the exported actor's mailbox.");
}

/// An actor's mailbox as an export's pumps see it: it counts the messages
/// handed over, so that the pump itself counts nothing.
struct Counted<M> {
    mailbox: Arc<dyn Mailbox<M>>,
    /// The export's count, shared by its routes (and its message types).
    delivered: Arc<AtomicU64>,
}

/// `mailbox`, counting into `delivered` what it hands over.
pub(crate) fn counted<M: RemoteMessage>(
    mailbox: Arc<dyn Mailbox<M>>,
    delivered: &Arc<AtomicU64>,
) -> Arc<dyn Mailbox<M>> {
    Arc::new(Counted { mailbox, delivered: delivered.clone() })
}

// Every method forwards (a method added to `Mailbox` must be forwarded
// here too, or exported actors would get its default).
impl<M: RemoteMessage> Mailbox<M> for Counted<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        self.mailbox.deliver(msg)?;
        // Relaxed: a count read once per sample, ordering nothing.
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn deliver_tracked(&self, msg: M) -> Result<Option<BoxFuture<'static, ()>>, M> {
        let handled = self.mailbox.deliver_tracked(msg)?;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(handled)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        self.mailbox.stopped()
    }

    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        self.mailbox.exit()
    }
}

/// Whether a node's sampler was started: the node's extension.
#[derive(Default)]
pub(crate) struct Sampling(AtomicBool);

/// Starts `node`'s sampler, once per node, if a runtime is at hand (a
/// node made outside one is started when it first listens or connects).
pub(crate) fn start(node: &Node) {
    if tokio::runtime::Handle::try_current().is_err() || node.extension::<Sampling>().0.swap(true, Ordering::AcqRel) {
        return;
    }
    let inner = node.inner();
    let closing = inner.on_shutdown(Phase::Closing);
    // False once the node shuts down: then there is nothing to sample.
    let _ = inner.spawn_service(run(Arc::downgrade(inner), node_label(inner), inner.cfg.metrics_interval, closing));
}

/// How a node is labelled: its name, or its id if it has none.
pub(crate) fn node_label(inner: &NodeInner) -> Arc<str> {
    match &inner.name {
        Some(name) => name.as_str().into(),
        None => inner.id.to_string().into(),
    }
}

/// Samples every `every` until `closing` resolves (then once more), or the
/// node is gone.
async fn run(node: Weak<NodeInner>, label: Arc<str>, every: Duration, closing: impl Future<Output = ()>) {
    describe();
    let mut sampler = Sampler {
        node: label,
        unnamed: HashSet::new(),
        node_counts: Default::default(),
        conns: HashMap::new(),
        exports: HashMap::new(),
    };
    let mut tick = tokio::time::interval(every);
    // A late tick is late, not several: the next sample reads the same counters.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(closing);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            () = &mut closing => true,
        };
        let Some(node) = node.upgrade() else { return };
        sampler.sample(&Node::from_inner(node));
        if last {
            return;
        }
    }
}

/// What the sampler keeps from one sample to the next.
struct Sampler {
    /// The node's label.
    node: Arc<str>,
    /// Live peers the last sample saw without a name.
    unnamed: HashSet<NodeId>,
    /// The node's counters last time.
    node_counts: [u64; NODE_COUNTERS.len()],
    /// Each connection recorded last time ([`Counters::key`]).
    conns: HashMap<usize, Sampled<Counters, { CONN_COUNTERS.len() }>>,
    /// Each named export recorded last time, by its count's address.
    exports: HashMap<usize, Sampled<Arc<AtomicU64>, 1>>,
}

/// A source of counts as the last sample left it.
struct Sampled<S, const N: usize> {
    source: S,
    labels: [(&'static str, Arc<str>); 2],
    counts: [u64; N],
}

/// The counters of a node, in the order [`node_counts`] reads them.
const NODE_COUNTERS: [&str; 2] = [OUTBOX_REFUSED, OUTBOX_UNDELIVERED];

fn node_counts(s: &NodeStats) -> [u64; NODE_COUNTERS.len()] {
    [s.outbox_refused, s.outbox_undelivered]
}

/// The counters of a connection, in the order [`conn_counts`] reads them.
const CONN_COUNTERS: [&str; 10] = [
    MESSAGES_SENT,
    MESSAGES_RECEIVED,
    BYTES_SENT,
    BYTES_RECEIVED,
    SENDS_FULL,
    SENDS_REFUSED,
    UNDECODABLE,
    UNREAD,
    RECONNECTS,
    RESUMES,
];

fn conn_counts(s: &ConnectionStats) -> [u64; CONN_COUNTERS.len()] {
    [
        s.messages_out,
        s.messages_in,
        s.bytes_out,
        s.bytes_in,
        s.full,
        s.refused,
        s.undecodable,
        s.unread,
        s.reconnects,
        s.resumes,
    ]
}

/// Increases each of `names`' series by what its count grew since `before`
/// (by 0 too: the series is there from the first sample). The cluster's
/// sampler records its gossip counters with it too.
pub(crate) fn increase<const N: usize>(
    names: &[&'static str; N],
    labels: &[(&'static str, Arc<str>)],
    before: &[u64; N],
    now: &[u64; N],
) {
    for ((name, before), now) in names.iter().zip(before).zip(now) {
        counter!(*name, labels).increment(now.saturating_sub(*before));
    }
}

impl Sampler {
    /// Records what `node` and its connections count now.
    fn sample(&mut self, node: &Node) {
        let (peers, delivered) = {
            let st = node.inner().lock();
            (st.peers.named_connections(), st.registry.delivered())
        };
        let stats = node.stats();
        let labels = [("node", self.node.clone())];
        gauge!(PEERS, &labels).set(stats.peers as f64);
        gauge!(EXPORTS, &labels).set(stats.exports as f64);
        gauge!(ROUTES, &labels).set(stats.routes as f64);
        gauge!(OUTBOX_HELD, &labels).set(stats.outbox_held as f64);
        let counts = node_counts(&stats);
        increase(&NODE_COUNTERS, &labels, &self.node_counts, &counts);
        self.node_counts = counts;

        let mut conns = HashMap::with_capacity(peers.len());
        let mut unnamed = HashSet::new();
        for (id, name, conn) in peers {
            // A peer is named by its hello, which may come a little after
            // its connection is in the table: one without a name is labelled
            // by its id only from the second sample that sees it, so that a
            // named peer does not leave a series labelled by its id behind.
            let peer: Arc<str> = match name {
                Some(name) => name.into(),
                None => {
                    unnamed.insert(id);
                    if !self.unnamed.contains(&id) {
                        continue;
                    }
                    id.to_string().into()
                }
            };
            let source = conn.counters();
            let key = source.key();
            let before = self.conns.remove(&key).map_or([0; CONN_COUNTERS.len()], |c| c.counts);
            let labels = [("node", self.node.clone()), ("peer", peer)];
            let s = source.stats();
            let counts = conn_counts(&s);
            increase(&CONN_COUNTERS, &labels, &before, &counts);
            record_gauges(&labels, &s);
            conns.insert(key, Sampled { source, labels, counts });
        }
        self.unnamed = unnamed;
        // Connections that ended since: what they counted last.
        for (_, gone) in std::mem::replace(&mut self.conns, conns) {
            increase(&CONN_COUNTERS, &gone.labels, &gone.counts, &conn_counts(&gone.source.stats()));
        }

        let mut exports = HashMap::with_capacity(delivered.len());
        for (actor, source) in delivered {
            let key = Arc::as_ptr(&source) as usize;
            let before = self.exports.remove(&key).map_or([0], |e| e.counts);
            let labels = [("node", self.node.clone()), ("actor", actor.into())];
            let counts = [source.load(Ordering::Relaxed)];
            increase(&[DELIVERED], &labels, &before, &counts);
            exports.insert(key, Sampled { source, labels, counts });
        }
        for (_, gone) in std::mem::replace(&mut self.exports, exports) {
            increase(&[DELIVERED], &gone.labels, &gone.counts, &[gone.source.load(Ordering::Relaxed)]);
        }
    }
}

fn record_gauges(labels: &[(&'static str, Arc<str>)], s: &ConnectionStats) {
    if let Some(rtt) = s.rtt {
        gauge!(RTT, labels).set(rtt.as_secs_f64());
    }
    gauge!(SEND_QUEUED, labels).set(s.send_queued as f64);
    gauge!(RECV_BUFFERED, labels).set(s.recv_buffered as f64);
    gauge!(REPLAY, labels).set(s.replay_bytes as f64);
    gauge!(OPEN_PORTS, labels).set(s.open_ports as f64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Config;

    /// The sampler is the node's: shutdown waits for it to end, and a
    /// dropped node's sampler ends at once, never having kept the node.
    #[tokio::test(flavor = "current_thread")]
    async fn the_sampler_ends_with_its_node() {
        let alive = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
        let limit = Duration::from_secs(5);
        let node = Node::new(None, Config::default()).unwrap();
        assert_eq!(alive(), 1, "the sampler runs");
        tokio::time::timeout(limit, node.shutdown()).await.expect("shutdown waits for the sampler");
        assert_eq!(alive(), 0);

        let node = Node::new(Some("dropped"), Config::default()).unwrap();
        let weak = Arc::downgrade(node.inner());
        // Its first sample taken, it waits for the next.
        tokio::task::yield_now().await;
        assert_eq!(alive(), 1);
        drop(node);
        assert!(weak.upgrade().is_none(), "the sampler holds the node weakly");
        tokio::time::timeout(limit, async {
            while alive() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the sampler ends with its node");
    }
}
