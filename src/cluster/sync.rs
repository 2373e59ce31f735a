//! Keeping the replicated registry (`records.rs`) in step: the shared
//! [`Replica`] that handles, the membership driver and this task edit, the
//! task that pulls members' sets and publishes this node's own, and the
//! actor every member exports to answer pulls.
//!
//! Pulls ride on tether itself: each member exports a small actor under
//! [`SYNC_NAME`], and a pull is an ask to it over the members' connection
//! (opened on demand like any other). Versions ride on gossip (see
//! `engine.rs`), so nothing is polled: a member pulls when it hears of a
//! newer version, or when another member comes up.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use super::engine::Engine;
use super::records::{Change, Refused, Snapshot, Table};
use super::ClusterEvent;
use crate::node::{NodeInner, Phase};
use crate::{ActorId, Mailbox, Node, NodeId, RemoteRef, ReplyPort};

/// The name every member exports its sync actor under. Names starting with
/// `tether.` are reserved: they are not published in the registry.
pub(crate) const SYNC_NAME: &str = "tether.registry";
/// Prefix of the names kept out of the registry.
pub(crate) const RESERVED: &str = "tether.";
/// Pulls in flight at once.
const MAX_PULLS: usize = 8;
/// How long a pull may take (connecting included).
const PULL_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed pull is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What members ask each other's sync actor.
#[derive(Serialize, Deserialize)]
pub(crate) enum SyncRequest {
    /// The member's set, unless its version is still `since` (`None`).
    Pull { since: u64, reply: ReplyPort<Option<Snapshot>> },
}

/// The registry as every part of this node's membership sees it.
pub(crate) struct Replica {
    table: Mutex<Table>,
    /// The table's generation, read without the lock (group handles check
    /// it on every send).
    generation: AtomicU64,
    /// Wakes the sync task: a set to pull, or this node's to publish.
    pub(crate) wake: tokio::sync::Notify,
    /// This node's version, gossiped by the driver.
    pub(crate) version: tokio::sync::watch::Sender<u64>,
    /// Changes, for subscribers; bounded like cluster events.
    /// `None` once the membership ended: watchers hear `Closed`.
    changes: Mutex<Option<tokio::sync::broadcast::Sender<Change>>>,
    /// The winner of a unique name is told to whoever holds the claim.
    claims: Mutex<Claims>,
    /// The table's generation, for waiters on a change.
    generations: tokio::sync::watch::Sender<u64>,
}

/// Holders of this node's unique claims, by name and actor, told the winner
/// if the claim is lost.
type Claims = HashMap<(String, u64), tokio::sync::watch::Sender<Option<ActorId>>>;

impl Replica {
    pub(crate) fn new(me: NodeId, max_records: usize, buffer: usize) -> Replica {
        Replica {
            table: Mutex::new(Table::new(me, max_records)),
            generation: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            version: tokio::sync::watch::channel(0).0,
            changes: Mutex::new(Some(tokio::sync::broadcast::channel(buffer).0)),
            claims: Mutex::new(HashMap::new()),
            generations: tokio::sync::watch::channel(0).0,
        }
    }

    /// Resolves once `actor` no longer holds `key` in this replica.
    pub(crate) async fn until_gone(&self, key: &super::records::Key, actor: ActorId) {
        let mut changes = self.generations.subscribe();
        while self.read(|t| t.holders(key).iter().any(|h| h.actor() == actor)) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads the table.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Table) -> T) -> T {
        f(&self.lock())
    }

    /// Edits the table, then carries out what the edit caused: changes to
    /// subscribers, lost claims to their holders, a new own version to
    /// gossip. Under the one lock, so subscribers see changes in order.
    pub(crate) fn edit<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        let mut t = self.lock();
        let before = t.version();
        let out = f(&mut t);
        while let Some((name, actor, winner)) = t.poll_lost() {
            tracing::warn!(%name, %winner, actor, "unique name lost to an earlier claim; this node's claim withdrawn");
            if let Some(tx) = self.claims().remove(&(name, actor)) {
                let _ = tx.send(Some(winner));
            }
        }
        while let Some(change) = t.poll_change() {
            if let (super::records::Key::Unique(name), false, true) =
                (&change.key, change.added, change.actor.node == t.me())
            {
                // Ended some other way than lost (unless it was replaced by
                // the same claim): the claim's holders hear `None`.
                let still =
                    t.holders(&change.key).iter().any(|h| h.node == t.me() && h.record.actor == change.actor.id);
                if !still {
                    self.claims().remove(&(name.clone(), change.actor.id));
                }
            }
            // No subscriber is not an error.
            if let Some(tx) = self.changes.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = tx.send(change);
            }
        }
        if self.generation.swap(t.generation(), Ordering::AcqRel) != t.generation() {
            self.generations.send_replace(t.generation());
        }
        if t.version() != before {
            self.version.send_replace(t.version());
        }
        out
    }

    /// The change feed from now on; closed if the membership ended. Call
    /// under the table's lock (`read`), so that a watcher's initial state
    /// and its first change follow without a gap.
    pub(crate) fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        match self.changes.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(tx) => tx.subscribe(),
            None => tokio::sync::broadcast::channel(1).1,
        }
    }

    /// The membership ended (this node left): claims end (their holders
    /// hear `None`) and watchers of names and groups hear `Closed`.
    pub(crate) fn close(&self) {
        self.claims().clear();
        self.changes.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// A claim's holder is told when it is lost.
    /// Every handle on one claim hears the same.
    pub(crate) fn watch_claim(&self, name: &str, actor: u64) -> tokio::sync::watch::Receiver<Option<ActorId>> {
        self.claims().entry((name.to_owned(), actor)).or_insert_with(|| tokio::sync::watch::channel(None).0).subscribe()
    }

    /// Drops the watcher of a claim that was not made after all.
    pub(crate) fn unwatch_claim(&self, name: &str, actor: u64) {
        let key = (name.to_owned(), actor);
        let held = self.read(|t| {
            t.holders(&super::records::Key::Unique(key.0.clone()))
                .iter()
                .any(|h| h.node == t.me() && h.record.actor == actor)
        });
        if !held {
            self.claims().remove(&key);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claims(&self) -> MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The registry follows a membership event (the driver calls this before
/// it publishes the event): a member gone takes its records along; a member
/// up is pulled once its version is heard (it may have been already, or
/// before it went down), and this node's own version goes out again, which
/// the newcomer missed.
pub(crate) fn follow(engine: &mut Engine, table: &mut Table, event: &ClusterEvent) {
    let up = |engine: &mut Engine, table: &mut Table, node: NodeId| {
        table.member_up(node);
        if let Some(version) = engine.version_of(node) {
            table.heard(node, version);
        }
        engine.republish_version();
    };
    match event {
        ClusterEvent::NodeUp(m) => up(engine, table, m.id),
        // A member down may come back as it was (a partition healed): the
        // version heard of it is kept, so that it is pulled again at once
        // when it does. One that left or restarted never comes back.
        ClusterEvent::NodeDown { member: m, .. } => table.member_gone(m.id),
        ClusterEvent::NodeLeft(m) => {
            table.member_gone(m.id);
            engine.forget_version(m.id);
        }
        ClusterEvent::NodeRestarted { old, member } => {
            table.member_gone(*old);
            engine.forget_version(*old);
            up(engine, table, member.id);
        }
    }
}

/// The sync actor: answers pulls from this node's table.
struct SyncMailbox {
    replica: Weak<Replica>,
    stopped: futures::future::Shared<BoxFuture<'static, ()>>,
}

impl Mailbox<SyncRequest> for SyncMailbox {
    fn deliver(&self, msg: SyncRequest) -> Result<(), SyncRequest> {
        let Some(replica) = self.replica.upgrade() else { return Err(msg) };
        match msg {
            SyncRequest::Pull { since, reply } => {
                let set = replica.read(|t| (t.version() != since).then(|| t.snapshot()));
                // An asker that gave up is not an error.
                let _ = reply.send(set);
            }
        }
        Ok(())
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        Box::pin(self.stopped.clone())
    }
}

/// Exports the sync actor and starts the task that keeps the replica in
/// step; both end when the node shuts down.
pub(crate) fn start(node: &Node, replica: Arc<Replica>) -> bool {
    use futures::FutureExt;
    let inner = node.inner();
    let stopped: BoxFuture<'static, ()> = Box::pin(inner.on_shutdown(Phase::Closing));
    let mailbox = SyncMailbox { replica: Arc::downgrade(&replica), stopped: stopped.shared() };
    if let Err(e) = node.export(Some(SYNC_NAME), mailbox) {
        tracing::warn!(error = %e, "the registry's sync actor is not exported; names and groups of this node stay local");
    }
    let task =
        run(Arc::downgrade(inner), replica, inner.exports_changed.subscribe(), inner.on_shutdown(Phase::Closing));
    inner.spawn_service(task)
}

/// A pull's outcome: the member, the epoch it was pulled under, the version
/// held then, and the set (`None`: unchanged since that version) with the
/// ref to the member's sync actor, kept for the next pull.
type Pulled = (NodeId, u64, u64, Result<(Option<Snapshot>, RemoteRef<SyncRequest>), String>);

async fn run(
    node: Weak<NodeInner>,
    replica: Arc<Replica>,
    mut exports: tokio::sync::watch::Receiver<u64>,
    closing: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(closing);
    let mut pulls: FuturesUnordered<BoxFuture<'static, Pulled>> = FuturesUnordered::new();
    let mut pulling: HashSet<NodeId> = HashSet::new();
    let mut failed: HashMap<NodeId, tokio::time::Instant> = HashMap::new();
    let mut refs: HashMap<NodeId, RemoteRef<SyncRequest>> = HashMap::new();
    exports.mark_changed();
    loop {
        let woken = replica.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let Some(inner) = node.upgrade() else { return };
        // Start what is wanted, within bounds.
        let now = tokio::time::Instant::now();
        failed.retain(|_, at| now < *at + RETRY_AFTER);
        refs.retain(|n, _| replica.read(|t| t.is_up(*n)));
        for (peer, epoch, since) in replica.read(Table::wanted) {
            if pulling.len() >= MAX_PULLS {
                break;
            }
            if pulling.contains(&peer) || failed.contains_key(&peer) {
                continue;
            }
            pulling.insert(peer);
            pulls.push(Box::pin(pull(Node::from_inner(inner.clone()), refs.get(&peer).cloned(), peer, epoch, since)));
        }
        let retry = failed.values().min().map(|at| *at + RETRY_AFTER);
        drop(inner);
        tokio::select! {
            () = &mut closing => return,
            () = &mut woken => {}
            changed = exports.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Some(inner) = node.upgrade() {
                    publish_own(&inner, &replica);
                }
            }
            Some((peer, epoch, since, result)) = pulls.next(), if !pulls.is_empty() => {
                pulling.remove(&peer);
                let result = result.map(|(set, sync)| {
                    refs.insert(peer, sync);
                    set
                });
                match result {
                    Ok(None) => {
                        if !replica.edit(|t| t.unchanged(peer, epoch, since)) {
                            // Heard of a newer version than the member has:
                            // its change is on its way; asked again soon.
                            failed.insert(peer, tokio::time::Instant::now());
                        }
                    }
                    Ok(Some(set)) => {
                        match replica.edit(|t| t.apply(peer, epoch, set)) {
                            Ok(()) | Err(Refused::NotUp | Refused::Stale { .. }) => {}
                            // Its previous set stays; asked again once it
                            // publishes anew.
                            Err(why) => tracing::warn!(%peer, %why, "a member's registry set refused"),
                        }
                    }
                    Err(why) => {
                        tracing::debug!(%peer, %why, "registry pull failed; trying again shortly");
                        failed.insert(peer, tokio::time::Instant::now());
                        refs.remove(&peer);
                    }
                }
            }
            () = sleep_until(retry) => {}
        }
    }
}

/// Pulls `peer`'s set if its version is not `since`.
async fn pull(node: Node, known: Option<RemoteRef<SyncRequest>>, peer: NodeId, epoch: u64, since: u64) -> Pulled {
    let result = async {
        let r = match known {
            Some(r) => r,
            None => node.lookup::<SyncRequest>(peer, SYNC_NAME).await.map_err(|e| e.to_string())?,
        };
        let set = r.ask(|reply| SyncRequest::Pull { since, reply }, PULL_TIMEOUT).await.map_err(|e| e.to_string())?;
        Ok((set, r))
    };
    (peer, epoch, since, result.await)
}

/// Publishes this node's named exports, and drops the records of actors no
/// longer exported (stopped).
fn publish_own(inner: &Arc<NodeInner>, replica: &Replica) {
    let names: Vec<_> = inner
        .named_exports()
        .into_iter()
        .filter(|(name, ..)| !name.starts_with(RESERVED))
        .map(|(name, id, tag)| (name, id, inner.caps.token(id), tag))
        .collect();
    let own = replica.read(Table::own_actors);
    let stopped = inner.not_exported(own);
    replica.edit(|t| {
        t.set_exported(names);
        if !stopped.is_empty() {
            t.remove_own(|r| stopped.contains(&r.actor));
        }
    });
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
