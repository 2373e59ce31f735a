//! Process groups across the cluster (Erlang's `pg` is the model), sending
//! to a group's members, and topics (publish/subscribe) built on groups.
//!
//! Any member can join its own actors to a group, under a scope; every
//! member sees every group's members; a member whose actor stops, or whose
//! node goes down or leaves, is out of its groups everywhere. A [`Group`]
//! handle sends to one member chosen by a [`Strategy`], to the member a key
//! hashes to, or to all.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use super::names::check_tag;
use super::records::{Change, Key, Record};
use super::{Cluster, EventsError, RegistryError};
use crate::chan::mpsc::{self, Tried};
use crate::{ActorId, AskError, RemoteError, RemoteMessage, RemoteRef, ReplyPort, TellError};

/// The scope of topics' groups ([`Cluster::topic`]).
const TOPICS: &str = "tether.topic";

/// A group's name within its scope. From a `&str` or `String`: that group
/// in the default scope (`""`); [`GroupKey::scoped`] for another. Scopes
/// keep independent sets of groups apart, as Erlang's `pg` scopes do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    scope: String,
    name: String,
}

impl GroupKey {
    /// The group `name` in `scope`.
    pub fn scoped(scope: impl Into<String>, name: impl Into<String>) -> GroupKey {
        GroupKey { scope: scope.into(), name: name.into() }
    }

    /// The group's scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(&self) -> Key {
        Key::Group { scope: self.scope.clone(), group: self.name.clone() }
    }
}

impl From<&str> for GroupKey {
    fn from(name: &str) -> GroupKey {
        GroupKey::scoped("", name)
    }
}

impl From<String> for GroupKey {
    fn from(name: String) -> GroupKey {
        GroupKey::scoped("", name)
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.scope.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.scope, self.name)
        }
    }
}

/// A group's members joining and leaving, as [`Cluster::watch_group`]
/// reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// An actor joined.
    Joined(ActorId),
    /// An actor left: it was taken out, stopped, or its node went down or
    /// left.
    Left(ActorId),
}

/// Events about one group; see [`Cluster::watch_group`].
#[derive(Debug)]
pub struct GroupWatch {
    key: Key,
    initial: VecDeque<GroupEvent>,
    rx: tokio::sync::broadcast::Receiver<Change>,
}

impl GroupWatch {
    /// The next event.
    pub async fn recv(&mut self) -> Result<GroupEvent, EventsError> {
        if let Some(e) = self.initial.pop_front() {
            return Ok(e);
        }
        loop {
            let change = next_change(&mut self.rx).await?;
            if change.key == self.key {
                return Ok(if change.added {
                    GroupEvent::Joined(change.actor)
                } else {
                    GroupEvent::Left(change.actor)
                });
            }
        }
    }
}

/// The next registry change, or why none.
pub(super) async fn next_change(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Result<Change, EventsError> {
    use tokio::sync::broadcast::error::RecvError;
    match rx.recv().await {
        Ok(c) => Ok(c),
        Err(RecvError::Lagged(n)) => Err(EventsError::Lagged(n)),
        Err(RecvError::Closed) => Err(EventsError::Closed),
    }
}

/// How a [`Group`] picks the member a message goes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// A member drawn at random for each message.
    Random,
    /// The member with the fewest bytes outstanding from this node: sent
    /// (or queued) and not yet taken in by the member's node, as its flow
    /// control reports back. A member that falls behind grants credit back
    /// slower and gets less; ties go round robin. What this node alone sent
    /// counts (not other senders' traffic); a member whose route is not open
    /// yet, and one on this node, count as having nothing outstanding.
    LeastLoaded,
}

/// Members' indices in the order a send tries them.
enum Order {
    /// `n` members from `start` round; `k` tried so far.
    Ring { start: usize, n: usize, k: usize },
    /// By rendezvous score, highest first.
    Ranked(std::vec::IntoIter<(u64, usize)>),
}

impl Iterator for Order {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Order::Ring { start, n, k } => {
                if *k >= *n {
                    return None;
                }
                *k += 1;
                Some((*start + *k - 1) % *n)
            }
            Order::Ranked(it) => it.next().map(|(_, i)| i),
        }
    }
}

/// What a [`Group::broadcast`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Broadcast {
    /// Members the message was handed to.
    pub sent: usize,
    /// Members it could not be sent to, and why.
    pub failed: Vec<(ActorId, TellError<()>)>,
}

/// A report gathered from each member's tell (framework adapters that send
/// by other means build theirs so).
impl<M> FromIterator<(ActorId, Result<(), TellError<M>>)> for Broadcast {
    fn from_iter<I: IntoIterator<Item = (ActorId, Result<(), TellError<M>>)>>(results: I) -> Broadcast {
        let mut report = Broadcast { sent: 0, failed: Vec::new() };
        for (id, result) in results {
            match result {
                Ok(()) => report.sent += 1,
                Err(e) => report.failed.push((id, without_msg(e))),
            }
        }
        report
    }
}

/// A handle for sending to a group's members. Cheap to clone; its view of
/// the members follows the registry (a member on a node reported down is
/// not picked once the [`ClusterEvent`](super::ClusterEvent) is out).
///
/// Failover happens before a message is handed over, never after: a member
/// whose route was refused, or whose send fails at once (its actor stopped,
/// its node gone), is skipped and the next one tried, so a message goes to
/// one member at most. A send waiting for room on a member that leaves the
/// group (its node reported down) goes to another; except a message that
/// carries channel ends (a `Receiver`, a `Sender`, a reply port): once it
/// is encoded its ends are in it, so it stays with the member it was
/// encoded for. An ask is tried on another member after it was
/// delivered (no reply in time, reply lost) only with
/// [`Group::ask_retrying`]; [`Group::ask`] is at most once.
pub struct Group<M> {
    cluster: Cluster,
    key: GroupKey,
    /// `key` as the registry knows it.
    rkey: Key,
    strategy: Strategy,
    next: Arc<AtomicUsize>,
    /// Seeds [`Strategy::Random`], drawn per handle.
    seed: u64,
    members: Arc<ArcSwap<Members<M>>>,
}

impl<M> Clone for Group<M> {
    fn clone(&self) -> Self {
        Group {
            cluster: self.cluster.clone(),
            key: self.key.clone(),
            rkey: self.rkey.clone(),
            strategy: self.strategy,
            next: self.next.clone(),
            seed: self.seed,
            members: self.members.clone(),
        }
    }
}

impl<M> std::fmt::Debug for Group<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("key", &self.key).field("strategy", &self.strategy).finish()
    }
}

/// The members as of a registry generation.
struct Members<M> {
    generation: u64,
    refs: Arc<[RemoteRef<M>]>,
}

/// The members as a send reads them: no lock, no reference count (see
/// `arc_swap::Guard`).
type Current<M> = arc_swap::Guard<Arc<Members<M>>>;

/// What offering a message to a group's members came to.
enum Offered<M> {
    /// A member with room took it.
    Taken(ActorId),
    /// None had room: the message back, the first member found full (if
    /// any) and why the last unreachable one was.
    Missed { msg: M, full: Option<usize>, last: Option<RemoteError> },
    /// It cannot be carried to any member (it does not encode, say).
    Failed(TellError<M>),
}

impl<M: RemoteMessage> Group<M> {
    /// The group's key.
    pub fn key(&self) -> &GroupKey {
        &self.key
    }

    /// The same group, picking members by `strategy`.
    pub fn with_strategy(mut self, strategy: Strategy) -> Group<M> {
        self.strategy = strategy;
        self
    }

    /// The members now that take messages of type `M`, by node. The same
    /// `Arc` while the registry has not changed.
    pub fn members(&self) -> Arc<[RemoteRef<M>]> {
        self.current().refs.clone()
    }

    /// The members as of the registry's generation now: those already made
    /// if it has not changed (every send checks), else made again.
    fn current(&self) -> Current<M> {
        let generation = self.cluster.replica.generation();
        let m = self.members.load();
        if m.generation == generation {
            return m;
        }
        drop(m);
        let refs = self.cluster.group_refs::<M>(&self.key).into();
        self.members.store(Arc::new(Members { generation, refs }));
        self.members.load()
    }

    /// Why a send found nobody: the group has no member taking `M`.
    fn empty(&self) -> RemoteError {
        RemoteError::NotFound(self.key.to_string())
    }

    /// Indices into `members` (as [`Group::members`] returned them) in the
    /// order a send tries them: the strategy's pick first, then the others
    /// round from it. For framework adapters that send by other means and
    /// pick as the group does; each call is the next turn.
    pub fn pick_order(&self, members: &[RemoteRef<M>]) -> Vec<usize> {
        self.order(members, None).collect()
    }

    /// [`Group::pick_order`] for a keyed send: the member `key` hashes to
    /// first (see [`Group::tell_keyed`]).
    pub fn pick_order_keyed(&self, members: &[RemoteRef<M>], key: &impl Hash) -> Vec<usize> {
        self.order(members, Some(hash_key(key))).collect()
    }

    /// Members in the order to try them: the strategy's pick first, then
    /// the others round from it. Allocates only for a keyed send.
    fn order(&self, members: &[RemoteRef<M>], key: Option<u64>) -> Order {
        let n = members.len();
        if n == 0 {
            return Order::Ring { start: 0, n: 0, k: 0 };
        }
        if let Some(key) = key {
            // Rendezvous hashing: each member scores the key, the highest
            // wins; a member joining or leaving moves only its own keys.
            let mut scored: Vec<(u64, usize)> =
                members.iter().enumerate().map(|(i, r)| (score(key, r.id()), i)).collect();
            scored.sort_unstable_by(|a, b| b.cmp(a));
            return Order::Ranked(scored.into_iter());
        }
        let start = match self.strategy {
            Strategy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::Random => {
                // splitmix64 over a shared counter: cheap, and fair enough
                // to spread load.
                let mut x = (self.next.fetch_add(1, Ordering::Relaxed) as u64).wrapping_add(self.seed);
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((x ^ (x >> 31)) % n as u64) as usize
            }
            Strategy::LeastLoaded => {
                let turn = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (turn + k) % n).min_by_key(|&i| members[i].backlog().unwrap_or(0)).unwrap_or(0)
            }
        };
        Order::Ring { start, n, k: 0 }
    }

    /// Sends `msg` to one member picked by the strategy, failing over to
    /// the next while a send fails at once (see [`Group`]); waits while the
    /// picked member's window is full.
    ///
    /// # Errors
    ///
    /// [`TellError::Unreachable`] with [`RemoteError::NotFound`] if the
    /// group has no member taking `M`; else the last member's error. The
    /// message is handed back.
    pub async fn tell(&self, msg: M) -> Result<ActorId, TellError<M>> {
        self.tell_in(msg, None).await
    }

    /// Sends `msg` to the member `key` hashes to (consistent hashing: the
    /// same member for the same key while the group is unchanged, and a
    /// change of members moves only the keys of the members that came or
    /// went), failing over like [`Group::tell`].
    pub async fn tell_keyed(&self, key: &impl Hash, msg: M) -> Result<ActorId, TellError<M>> {
        self.tell_in(msg, Some(hash_key(key))).await
    }

    async fn tell_in(&self, msg: M, key: Option<u64>) -> Result<ActorId, TellError<M>> {
        let mut msg = msg;
        // Why the last member tried failed (made only then: no allocation
        // on a send that goes through).
        let mut last = None;
        // Members tried and failed (no allocation unless one fails).
        let mut tried: Vec<ActorId> = Vec::new();
        'fresh: loop {
            let members = self.current();
            for i in self.order(&members.refs, key) {
                let r = &members.refs[i];
                if r.is_refused() || tried.contains(&r.id()) {
                    continue;
                }
                // Room now is the common case, and needs no waiting. A
                // message that carries channel ends and finds no room stays
                // with this member (its ends are in its encoding); any other
                // waits for room unless its member leaves the group (its
                // node went down: its window will not free up), and then
                // comes back, to go to another.
                msg = match r.try_tell_holding(msg) {
                    Ok(Tried::Sent) => return Ok(r.id()),
                    Ok(Tried::Held(held)) => {
                        return held.send().await.map(|()| r.id()).map_err(|e| match e {
                            mpsc::SendError::Closed(msg) => TellError::Unreachable { msg, error: r.lost() },
                            e => TellError::Send(e),
                        })
                    }
                    Ok(Tried::Full(msg)) | Err(TellError::Unreachable { msg, .. }) => msg,
                    Err(e) => return Err(e),
                };
                let sent = r.tell_unless(msg, self.cluster.replica.until_gone(&self.rkey, r.id())).await;
                match sent {
                    Ok(None) => return Ok(r.id()),
                    Ok(Some(back)) => {
                        tracing::debug!(group = %self.key, member = %r.id(), "group member gone while a send waited");
                        msg = back;
                        tried.push(r.id());
                        continue 'fresh;
                    }
                    Err(TellError::Unreachable { msg: back, error }) => {
                        tracing::debug!(group = %self.key, member = %r.id(), %error, "group member skipped");
                        msg = back;
                        last = Some(error);
                        tried.push(r.id());
                    }
                    Err(e) => return Err(e),
                }
            }
            return Err(self.unreachable(msg, last));
        }
    }

    /// Sends `msg` to one member if one has room now, never waiting: the
    /// strategy's pick, else the next with room. `Full` if a reachable
    /// member had no room, `Unreachable` if none could be reached.
    pub fn try_tell(&self, msg: M) -> Result<ActorId, TellError<M>> {
        let members = self.current();
        match self.offer(&members.refs, msg) {
            Offered::Taken(id) => Ok(id),
            Offered::Missed { msg, full: Some(_), .. } => Err(TellError::Full(msg)),
            Offered::Missed { msg, full: None, last } => Err(self.unreachable(msg, last)),
            Offered::Failed(e) => Err(e),
        }
    }

    /// Sends `msg` to one member without waiting and without dropping it
    /// for a full window: a member with room now, as
    /// [`try_tell`](Self::try_tell), else queued for the first reachable
    /// member in the strategy's order with [`RemoteRef::post`] (the
    /// fire-and-forget send of actix's `do_send` and ractor's `cast`).
    ///
    /// # Errors
    ///
    /// As [`RemoteRef::post`]: `Full` only past
    /// [`Config::max_outbox`](crate::Config::max_outbox); `Unreachable` if
    /// no member can be reached.
    pub fn post(&self, msg: M) -> Result<ActorId, TellError<M>> {
        let members = self.current();
        let members = &members.refs;
        match self.offer(members, msg) {
            Offered::Taken(id) => Ok(id),
            Offered::Missed { msg, full: Some(i), .. } => members[i].post(msg).map(|()| members[i].id()),
            Offered::Missed { msg, full: None, last } => Err(self.unreachable(msg, last)),
            Offered::Failed(e) => Err(e),
        }
    }

    /// Offers `msg` to the members in the strategy's order until one has
    /// room now.
    fn offer(&self, members: &[RemoteRef<M>], msg: M) -> Offered<M> {
        let (mut msg, mut full, mut last) = (msg, None, None);
        for i in self.order(members, None) {
            let r = &members[i];
            match r.try_tell(msg) {
                Ok(()) => return Offered::Taken(r.id()),
                Err(TellError::Full(back)) => {
                    msg = back;
                    full.get_or_insert(i);
                }
                Err(TellError::Unreachable { msg: back, error }) => {
                    msg = back;
                    last = Some(error);
                }
                Err(e) => return Offered::Failed(e),
            }
        }
        Offered::Missed { msg, full, last }
    }

    /// `msg` reached no member: why the last one tried could not be
    /// reached, or that there is none.
    fn unreachable(&self, msg: M, last: Option<RemoteError>) -> TellError<M> {
        TellError::Unreachable { msg, error: last.unwrap_or_else(|| self.empty()) }
    }

    /// Asks one member picked by the strategy, failing over while the
    /// request cannot be handed over (see [`Group`]). At most once: a
    /// request delivered is not sent again, whatever happens to the reply.
    pub async fn ask<R: RemoteMessage>(
        &self,
        make: impl Fn(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        self.ask_in(&make, timeout, None, 1).await
    }

    /// [`Group::ask`] to the member `key` hashes to (see
    /// [`Group::tell_keyed`]).
    pub async fn ask_keyed<R: RemoteMessage>(
        &self,
        key: &impl Hash,
        make: impl Fn(ReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        self.ask_in(&make, timeout, Some(hash_key(key)), 1).await
    }

    /// [`Group::ask`], trying up to `attempts` members in all when a request
    /// was delivered and got no answer (timed out, reply lost, member
    /// stopped or its node gone meanwhile). The request may then be handled
    /// by more than one member: for idempotent requests only. `timeout`
    /// bounds each attempt.
    pub async fn ask_retrying<R: RemoteMessage>(
        &self,
        make: impl Fn(ReplyPort<R>) -> M,
        timeout: Duration,
        attempts: usize,
    ) -> Result<R, AskError> {
        self.ask_in(&make, timeout, None, attempts.max(1)).await
    }

    async fn ask_in<R: RemoteMessage>(
        &self,
        make: &impl Fn(ReplyPort<R>) -> M,
        timeout: Duration,
        key: Option<u64>,
        attempts: usize,
    ) -> Result<R, AskError> {
        let members = self.current();
        let members = &members.refs;
        let mut last = None;
        let mut delivered = 0;
        for i in self.order(members, key) {
            let r = &members[i];
            if r.is_refused() {
                continue;
            }
            match r.ask(make, timeout).await {
                Ok(reply) => return Ok(reply),
                // Not handed over: the next member may take it.
                Err(e @ (AskError::Unreachable(_) | AskError::TooManyPending { .. })) => last = Some(e),
                Err(e) => {
                    delivered += 1;
                    if delivered >= attempts {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| AskError::Unreachable(self.empty())))
    }
}

impl<M: RemoteMessage + Clone> Group<M> {
    /// Sends `msg` to every member, all at once; each member's window is
    /// waited for as [`RemoteRef::tell`] does.
    pub async fn broadcast(&self, msg: M) -> Broadcast {
        let members = self.members();
        let sends = members.iter().map(|r| {
            let msg = msg.clone();
            async move { (r.id(), r.tell(msg).await) }
        });
        futures::future::join_all(sends).await.into_iter().collect()
    }
}

/// A topic: publish to every subscriber on every member. Subscribers are
/// actors; each receives every message published after its subscription
/// reached the publisher's node (within the time gossip takes), once, in
/// the order each publisher published.
pub struct Topic<M> {
    group: Group<M>,
}

impl<M> Clone for Topic<M> {
    fn clone(&self) -> Self {
        Topic { group: self.group.clone() }
    }
}

impl<M: RemoteMessage + Clone> Topic<M> {
    /// Subscribes one of this node's actors.
    pub fn subscribe(&self, actor: &RemoteRef<M>) -> Result<(), RegistryError> {
        self.group.cluster.join_group(self.group.key.clone(), actor)
    }

    /// Unsubscribes an actor; false if it was not subscribed here.
    pub fn unsubscribe(&self, actor: &RemoteRef<M>) -> bool {
        self.group.cluster.leave_group(self.group.key.clone(), actor)
    }

    /// The subscribers now.
    pub fn subscribers(&self) -> Arc<[RemoteRef<M>]> {
        self.group.members()
    }

    /// Publishes `msg` to every subscriber. Returns once each has it
    /// queued (in the order of this publisher's earlier messages), saying
    /// to whom it could not be sent.
    pub async fn publish(&self, msg: M) -> Broadcast {
        self.group.broadcast(msg).await
    }
}

impl Cluster {
    /// Joins one of this node's actors to a group; joining again does
    /// nothing more. It leaves with [`Cluster::leave_group`], when it stops,
    /// or when this node goes down or leaves.
    pub fn join_group<M: RemoteMessage>(
        &self,
        group: impl Into<GroupKey>,
        actor: &RemoteRef<M>,
    ) -> Result<(), RegistryError> {
        let group = group.into();
        if group.scope.len() > super::MAX_KEY || group.name.len() > super::MAX_KEY {
            return Err(RegistryError::TooLong);
        }
        let id = self.own_actor(actor)?;
        let record =
            Record { key: group.key(), actor: id, token: actor.token(), tag: crate::node::tag::<M>(), claimed: 0 };
        self.publish(record)
    }

    /// Takes one of this node's actors out of a group; false if it was not
    /// in it.
    pub fn leave_group<M>(&self, group: impl Into<GroupKey>, actor: &RemoteRef<M>) -> bool {
        let key = group.into().key();
        let id = actor.route.target;
        id.node == self.node.id() && self.replica.edit(|t| t.remove_own(|r| r.key == key && r.actor == id.id))
    }

    /// A group's members now that take messages of type `M`, by node.
    pub fn group_members<M: RemoteMessage>(&self, group: impl Into<GroupKey>) -> Vec<RemoteRef<M>> {
        self.group_refs(&group.into())
    }

    /// A handle for sending to a group's members (round robin unless
    /// [`Group::with_strategy`] says otherwise).
    pub fn group<M: RemoteMessage>(&self, group: impl Into<GroupKey>) -> Group<M> {
        let key: GroupKey = group.into();
        Group {
            cluster: self.clone(),
            rkey: key.key(),
            key,
            strategy: Strategy::default(),
            next: Arc::default(),
            seed: uuid::Uuid::new_v4().as_u64_pair().0,
            members: Arc::new(ArcSwap::from_pointee(Members { generation: u64::MAX, refs: Arc::new([]) })),
        }
    }

    /// Events about a group from now on, starting with a
    /// [`GroupEvent::Joined`] for each member now; bounded like
    /// [`Cluster::watch_name`].
    pub fn watch_group(&self, group: impl Into<GroupKey>) -> GroupWatch {
        let key = group.into().key();
        self.replica.read(|t| {
            let initial = t.holders(&key).iter().map(|h| GroupEvent::Joined(h.actor())).collect();
            GroupWatch { key, initial, rx: self.replica.subscribe_changes() }
        })
    }

    /// The topic `name`: its subscribers form a group in a scope of their
    /// own.
    pub fn topic<M: RemoteMessage + Clone>(&self, name: &str) -> Topic<M> {
        Topic { group: self.group(GroupKey::scoped(TOPICS, name)) }
    }

    fn group_refs<M: RemoteMessage>(&self, group: &GroupKey) -> Vec<RemoteRef<M>> {
        let mut held = self.replica.read(|t| t.holders(&group.key()).to_vec());
        held.sort_by_key(|h| (h.node, h.record.actor));
        held.iter()
            .filter(|h| {
                let ok = check_tag::<M>(h);
                if let Err(e) = &ok {
                    tracing::debug!(%group, member = %h.actor(), error = %e, "group member of another type left out");
                }
                ok.is_ok()
            })
            .map(|h| self.referent::<M>(h))
            .collect()
    }
}

fn without_msg<M>(e: TellError<M>) -> TellError<()> {
    match e {
        TellError::Full(_) => TellError::Full(()),
        TellError::Unreachable { error, .. } => TellError::Unreachable { msg: (), error },
        TellError::Send(e) => TellError::Send(e.split().1),
    }
}

fn hash_key(key: &impl Hash) -> u64 {
    // FNV-1a through `Hasher`: the same on every node and build, unlike
    // std's randomly keyed hasher.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    key.hash(&mut h);
    h.finish()
}

fn score(key: u64, member: ActorId) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    key.hash(&mut h);
    member.hash(&mut h);
    // Mixed once more: FNV's last bytes otherwise dominate the order.
    let x = h.finish();
    (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
