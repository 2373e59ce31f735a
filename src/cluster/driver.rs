//! The task that runs a node's membership: one UDP socket, the engine's
//! timers, seed rounds, and publishing the view for handles. Ends when the
//! node shuts down, after leaving the cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::engine::{Engine, Timer, MAX_DATAGRAM};
use super::sync::Replica;
use super::{seeds, ClusterConfig, ClusterError, ClusterEvent, Shared};
use crate::node::{NodeInner, Phase};
use crate::Node;

/// Most datagrams taken in at leaving, before the leave is sent.
const MAX_DRAINED: usize = 1024;

pub(super) fn start(
    node: &Node,
    engine: Engine,
    socket: UdpSocket,
    cfg: ClusterConfig,
    shared: Arc<Shared>,
    replica: Arc<Replica>,
) -> Result<(), ClusterError> {
    let inner = node.inner();
    if inner.lock().closing {
        return Err(ClusterError::NodeShutDown);
    }
    if !inner.set_directory(shared.clone()) {
        return Err(ClusterError::AlreadyJoined);
    }
    let closing = inner.on_shutdown(Phase::Closing);
    let weak = Arc::downgrade(inner);
    if !inner.spawn_service(run(engine, socket, cfg, shared, replica.clone(), weak, closing)) {
        return Err(ClusterError::NodeShutDown);
    }
    if !super::sync::start(node, replica) {
        return Err(ClusterError::NodeShutDown);
    }
    Ok(())
}

/// Timers foca asked for, due first first.
#[derive(Default)]
struct Timers {
    due: BTreeMap<(Instant, u64), Timer>,
    seq: u64,
}

impl Timers {
    fn next(&self) -> Option<Instant> {
        self.due.keys().next().map(|k| k.0)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let entry = self.due.first_entry()?;
        (entry.key().0 <= now).then(|| entry.remove())
    }
}

async fn run(
    mut engine: Engine,
    socket: UdpSocket,
    cfg: ClusterConfig,
    shared: Arc<Shared>,
    replica: Arc<Replica>,
    node: Weak<NodeInner>,
    closing: impl std::future::Future<Output = ()>,
) {
    let mut version = replica.version.subscribe();
    // Records published before this task first ran (a join_group right
    // after join) are gossiped too.
    version.mark_changed();
    let (seed_tx, mut seed_rx) = tokio::sync::mpsc::channel(1);
    let resolver = tokio::spawn(seeds::watch(cfg.seeds.clone(), cfg.seed_interval, seed_tx));
    let _resolver = AbortOnDrop(resolver);
    let mut timers = Timers::default();
    let mut metrics = super::metrics::Sampler::new(&node);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    tokio::pin!(closing);
    loop {
        flush(&mut engine, &socket, &mut timers, &shared, &replica, &node).await;
        let next = timers.next();
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, _)) => engine.handle_datagram(&buf[..n]),
                Err(e) => tracing::debug!(error = %e, "gossip socket"),
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                while let Some(t) = timers.pop_due(now) {
                    engine.handle_timer(t);
                }
            }
            Ok(()) = version.changed() => {
                let v = *version.borrow_and_update();
                if v > 0 {
                    engine.publish_version(v);
                }
            }
            () = metrics.due() => metrics.record(&shared),
            Some(addrs) = seed_rx.recv() => {
                for addr in addrs {
                    if !engine.is_active(addr) {
                        engine.announce(addr);
                    }
                }
            }
            () = &mut closing => {
                // What has arrived is taken in first: a node that just
                // joined may not have read the members' answer yet, and
                // would leave without telling them (they would report it
                // down, not left). Bounded by what the socket holds.
                for _ in 0..MAX_DRAINED {
                    let Ok((n, _)) = socket.try_recv_from(&mut buf) else { break };
                    engine.handle_datagram(&buf[..n]);
                }
                engine.leave();
                flush(&mut engine, &socket, &mut timers, &shared, &replica, &node).await;
                break;
            }
        }
    }
    // Subscribers hear the end.
    shared.lock().events = None;
    replica.close();
}

/// Carries out what the engine asked: datagrams out, timers started, the
/// view and events published. The registry follows membership before an
/// event is published: once a subscriber hears a member is gone, its names
/// and group members are gone too.
async fn flush(
    engine: &mut Engine,
    socket: &UdpSocket,
    timers: &mut Timers,
    shared: &Shared,
    replica: &Replica,
    node: &Weak<NodeInner>,
) {
    while let Some((to, datagram)) = engine.poll_transmit() {
        // Gossip tolerates loss; a failed send is a lost datagram.
        if let Err(e) = socket.send_to(&datagram, to).await {
            tracing::debug!(%to, error = %e, "gossip not sent");
        }
    }
    while let Some((after, timer)) = engine.poll_timer() {
        timers.seq += 1;
        timers.due.insert((Instant::now() + after, timers.seq), timer);
    }
    let mut p = shared.lock();
    p.stats = engine.stats();
    let mut changed = false;
    while let Some(event) = engine.poll_event() {
        changed = true;
        tracing::info!(?event, "cluster");
        replica.edit(|t| super::sync::follow(engine, t, &event));
        if let (ClusterEvent::NodeRestarted { old, .. }, Some(node)) = (&event, node.upgrade()) {
            node.peer_restarted(*old);
        }
        if let Some(tx) = &p.events {
            // No receiver is not an error: nobody subscribed.
            let _ = tx.send(event);
        }
    }
    if changed {
        p.members = engine.members();
    }
    p.me = engine.me();
    drop(p);
    let mut heard = false;
    while let Some((node, version)) = engine.poll_version() {
        replica.edit(|t| t.heard(node, version));
        heard = true;
    }
    if changed || heard {
        replica.wake.notify_one();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
