//! `RemoteGroup<M>`: a process group's members, on any node, behind one
//! actix-style handle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Message;
use tether::cluster::{Cluster, Group, GroupKey};
use tether::{ActorId, RemoteError, RemoteMessage, RemoteRef, TellError};

use crate::envelope::Envelope;
use crate::remote_addr::Requested;
use crate::{RemoteAddr, RemoteMailboxError, DEFAULT_TIMEOUT};

/// A handle for sending to the members of a process group, wherever they
/// run, with [`RemoteAddr`]'s methods: to one member picked round robin,
/// to the member a key hashes to, or to all ([`broadcast`](Self::broadcast)).
///
/// Get one with [`group`](crate::group). It follows the group's membership
/// as the cluster's registry does: members that join are picked once this
/// node has heard of them; one whose actor stopped or whose node is gone is
/// not. Clones share the members' outboxes, so messages from one handle to
/// one member arrive in the order they were accepted.
///
/// A message goes to one member at most: a member that cannot take it at
/// once (its actor stopped, its node gone; for the unkeyed non-waiting
/// sends, also its window full) is skipped for the next, but once a message
/// is handed over it is not sent again, whatever happens to it.
///
/// | method | waits for | if no member can take it |
/// |---|---|---|
/// | [`do_send`](Self::do_send) | nothing | dropped, logged at warn, [counted](Self::dropped) |
/// | [`try_send`](Self::try_send) | nothing | `Err`, with the message |
/// | [`tell`](Self::tell) | room | `Err`, with the message |
/// | [`send`](Self::send) | room and the result | `Err` |
pub struct RemoteGroup<M: Message> {
    group: Group<Envelope<M>>,
    shared: Arc<Shared<M>>,
}

/// What clones of a handle share.
struct Shared<M: Message> {
    /// The next round-robin turn.
    next: AtomicUsize,
    /// Messages `do_send` dropped.
    dropped: AtomicU64,
    /// Why `do_send` is dropping now: an episode of full windows or of no
    /// reachable member is logged once.
    dropping: Mutex<Dropping>,
    members: Mutex<Members<M>>,
}

/// Whether, and why, `do_send` is dropping messages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dropping {
    No,
    /// Every reachable member's window is full.
    Full,
    /// No member can be reached (or there is none).
    Unreachable,
}

/// The members as the core last listed them, each with its handle.
struct Members<M: Message> {
    refs: Arc<[RemoteRef<Envelope<M>>]>,
    addrs: Arc<[RemoteAddr<M>]>,
}

/// What a [`RemoteGroup::broadcast`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Broadcast {
    /// Members the message was handed to.
    pub sent: usize,
    /// Members it could not be sent to, and why.
    pub failed: Vec<(ActorId, TellError<()>)>,
}

/// A handle for sending messages of type `M` to the members of `group` (a
/// name in the default scope, or a [`GroupKey::scoped`]) that take them.
pub fn group<M>(cluster: &Cluster, group: impl Into<GroupKey>) -> RemoteGroup<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    RemoteGroup {
        group: cluster.group::<Envelope<M>>(group),
        shared: Arc::new(Shared {
            next: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            dropping: Mutex::new(Dropping::No),
            members: Mutex::new(Members { refs: Arc::new([]), addrs: Arc::new([]) }),
        }),
    }
}

impl<M> RemoteGroup<M>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    /// The group's key.
    pub fn key(&self) -> &GroupKey {
        self.group.key()
    }

    /// The members now that take messages of type `M`, by node.
    pub fn members(&self) -> Vec<RemoteAddr<M>> {
        self.current().to_vec()
    }

    /// How many messages [`do_send`](Self::do_send) (and
    /// [`do_send_keyed`](Self::do_send_keyed)) dropped through this handle
    /// and its clones.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Sends a message to one member, picked round robin, without waiting
    /// and without a result.
    ///
    /// Never blocks. If the picked member's window is full or it cannot be
    /// reached, the next one with room takes the message. If none can, the
    /// message is dropped: counted in [`dropped`](Self::dropped) and logged
    /// at warn (once per episode of full windows or of no reachable member,
    /// so that a flood does not flood the log; each message that cannot be
    /// carried at all, e.g. too large, is logged). [`RemoteAddr::do_send`]
    /// drops in the same cases, but says nothing of a stopped actor, as
    /// actix does; a group with no member left to take a message is worth
    /// a warning.
    pub fn do_send(&self, msg: M) {
        self.do_send_in(msg, None)
    }

    /// [`do_send`](Self::do_send) to the member `key` hashes to (see
    /// [`send_keyed`](Self::send_keyed)). If that member's window is full
    /// the message is dropped rather than sent to another, which would
    /// break the key's order.
    pub fn do_send_keyed(&self, key: &impl Hash, msg: M) {
        self.do_send_in(msg, Some(hash_key(key)))
    }

    fn do_send_in(&self, msg: M, key: Option<u64>) {
        let error = match self.try_send_in(msg, key) {
            Ok(()) => {
                *self.dropping() = Dropping::No;
                return;
            }
            Err(e) => e,
        };
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        let group = self.key();
        let episode = match &error {
            TellError::Full(_) => Dropping::Full,
            TellError::Unreachable { .. } => Dropping::Unreachable,
            _ => {
                tracing::warn!(%group, %error, "do_send to a group: message not sent");
                return;
            }
        };
        if std::mem::replace(&mut *self.dropping(), episode) != episode {
            tracing::warn!(%group, %error, "do_send to a group drops messages");
        }
    }

    fn dropping(&self) -> std::sync::MutexGuard<'_, Dropping> {
        self.shared.dropping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a message to one member if one has room now; never waits. The
    /// member picked round robin first, else the next with room.
    ///
    /// # Errors
    ///
    /// The message comes back: [`TellError::Full`] if every reachable
    /// member's window is full; [`TellError::Unreachable`] if no member can
    /// be reached, with [`RemoteError::NotFound`] if the group has none;
    /// [`TellError::Send`] if the message cannot be carried.
    pub fn try_send(&self, msg: M) -> Result<(), TellError<M>> {
        self.try_send_in(msg, None)
    }

    /// [`try_send`](Self::try_send) to the member `key` hashes to; `Full`
    /// if its window is full.
    pub fn try_send_keyed(&self, key: &impl Hash, msg: M) -> Result<(), TellError<M>> {
        self.try_send_in(msg, Some(hash_key(key)))
    }

    fn try_send_in(&self, msg: M, key: Option<u64>) -> Result<(), TellError<M>> {
        let members = self.current();
        let mut msg = msg;
        let mut full = false;
        let mut last = RemoteError::NotFound(self.key().to_string());
        for i in order(&members, key, &self.shared.next) {
            match members[i].try_send(msg) {
                Ok(()) => return Ok(()),
                // A keyed message waits for its member, never another.
                Err(TellError::Full(back)) if key.is_some() => return Err(TellError::Full(back)),
                Err(TellError::Full(back)) => {
                    msg = back;
                    full = true;
                }
                Err(TellError::Unreachable { msg: back, error }) => {
                    msg = back;
                    last = error;
                }
                Err(e) => return Err(e),
            }
        }
        Err(if full { TellError::Full(msg) } else { TellError::Unreachable { msg, error: last } })
    }

    /// Sends a message to one member, picked round robin, without a result,
    /// waiting while its window is full. A member that cannot be reached is
    /// skipped for the next.
    ///
    /// # Errors
    ///
    /// [`TellError::Unreachable`] if no member can be reached (with
    /// [`RemoteError::NotFound`] if the group has none), [`TellError::Send`]
    /// if the message cannot be carried; the message comes back.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        self.tell_in(msg, None).await
    }

    /// [`tell`](Self::tell) to the member `key` hashes to.
    pub async fn tell_keyed(&self, key: &impl Hash, msg: M) -> Result<(), TellError<M>> {
        self.tell_in(msg, Some(hash_key(key))).await
    }

    async fn tell_in(&self, msg: M, key: Option<u64>) -> Result<(), TellError<M>> {
        let members = self.current();
        let mut msg = msg;
        let mut last = RemoteError::NotFound(self.key().to_string());
        for i in order(&members, key, &self.shared.next) {
            match members[i].tell(msg).await {
                Ok(()) => return Ok(()),
                Err(TellError::Unreachable { msg: back, error }) => {
                    msg = back;
                    last = error;
                }
                Err(e) => return Err(e),
            }
        }
        Err(TellError::Unreachable { msg, error: last })
    }

    /// Sends a message to one member, picked round robin, and waits for its
    /// handler's result, at most [`DEFAULT_TIMEOUT`]. See
    /// [`send_timeout`](Self::send_timeout).
    pub fn send(&self, msg: M) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_in(msg, None, DEFAULT_TIMEOUT)
    }

    /// Sends a message to one member, picked round robin, and waits for its
    /// handler's result, at most `timeout` in all.
    ///
    /// A member that cannot take the request (its actor stopped, its node
    /// unreachable, too many requests pending on its node) is skipped for
    /// the next. Once one has it, the request is not sent again: a timeout
    /// or a lost node is the result. Like [`RemoteAddr::send_timeout`], it
    /// needs no actix context, and dropping the future cancels the request.
    ///
    /// # Errors
    ///
    /// [`RemoteMailboxError::Unreachable`] with [`RemoteError::NotFound`]
    /// if the group has no member, else the last member's error.
    pub fn send_timeout(
        &self,
        msg: M,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_in(msg, None, timeout)
    }

    /// [`send`](Self::send) to the member `key` hashes to: the same member
    /// for the same key while the group is unchanged, on every node (the
    /// one [`tether::cluster::Group::tell_keyed`] picks), and a member
    /// joining or leaving moves only its own keys. If that member cannot
    /// take the request, the key's next member does.
    pub fn send_keyed(
        &self,
        key: &impl Hash,
        msg: M,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_in(msg, Some(hash_key(key)), DEFAULT_TIMEOUT)
    }

    /// [`send_keyed`](Self::send_keyed) waiting at most `timeout`.
    pub fn send_keyed_timeout(
        &self,
        key: &impl Hash,
        msg: M,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_in(msg, Some(hash_key(key)), timeout)
    }

    fn send_in(
        &self,
        msg: M,
        key: Option<u64>,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        let members = self.current();
        let order = order(&members, key, &self.shared.next);
        let none = RemoteMailboxError::Unreachable(RemoteError::NotFound(self.key().to_string()));
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut msg = msg;
            let mut last = none;
            for i in order {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(RemoteMailboxError::Timeout(timeout));
                }
                match members[i].request(msg, left).await {
                    Requested::Answered(result) => return Ok(result),
                    Requested::NotSent(back, error) => {
                        msg = back;
                        last = error;
                    }
                    Requested::Failed(RemoteMailboxError::Timeout(_)) => {
                        return Err(RemoteMailboxError::Timeout(timeout))
                    }
                    Requested::Failed(error) => return Err(error),
                }
            }
            Err(last)
        }
    }

    /// The members now, each with one handle kept across membership changes
    /// (so that its outbox, and the order it keeps, lasts).
    fn current(&self) -> Arc<[RemoteAddr<M>]> {
        let refs = self.group.members();
        let mut m = self.shared.members.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&m.refs, &refs) {
            let mut kept: HashMap<ActorId, RemoteAddr<M>> = m.addrs.iter().map(|a| (a.id(), a.clone())).collect();
            let addrs = refs
                .iter()
                .map(|r| match kept.remove(&r.id()) {
                    Some(a) if a.remote_ref() == r => a,
                    _ => RemoteAddr::from(r.clone()),
                })
                .collect();
            *m = Members { refs, addrs };
        }
        m.addrs.clone()
    }
}

impl<M> RemoteGroup<M>
where
    M: Message + RemoteMessage + Clone,
    M::Result: RemoteMessage,
{
    /// Sends a message to every member, all at once, waiting for each
    /// member's window as [`RemoteAddr::tell`] does. Returns once each has
    /// it queued (or cannot), saying to whom it could not be sent.
    pub async fn broadcast(&self, msg: M) -> Broadcast {
        let members = self.current();
        let sends = members.iter().map(|m| {
            let msg = msg.clone();
            async move { (m.id(), m.tell(msg).await) }
        });
        let mut report = Broadcast { sent: 0, failed: Vec::new() };
        for (id, result) in futures::future::join_all(sends).await {
            match result {
                Ok(()) => report.sent += 1,
                Err(e) => report.failed.push((id, without_msg(e))),
            }
        }
        report
    }
}

impl<M: Message> Clone for RemoteGroup<M> {
    fn clone(&self) -> Self {
        RemoteGroup { group: self.group.clone(), shared: self.shared.clone() }
    }
}

impl<M: Message> fmt::Debug for RemoteGroup<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteGroup").field(&self.group).finish()
    }
}

/// Members in the order to try them: for a key, by rendezvous hashing (each
/// member scores the key, the highest first: a member joining or leaving
/// moves only its own keys); else the next round-robin turn first, then the
/// others round from it.
///
/// The same order as `tether::cluster::Group` uses, which keeps its own
/// private; see the crate's tests for the keyed case.
fn order<M>(members: &[RemoteAddr<M>], key: Option<u64>, next: &AtomicUsize) -> Vec<usize>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    let n = members.len();
    if n == 0 {
        return Vec::new();
    }
    if let Some(key) = key {
        let mut scored: Vec<(u64, usize)> = members.iter().enumerate().map(|(i, m)| (score(key, m.id()), i)).collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        return scored.into_iter().map(|(_, i)| i).collect();
    }
    let start = next.fetch_add(1, Ordering::Relaxed) % n;
    (0..n).map(|k| (start + k) % n).collect()
}

fn without_msg<M>(e: TellError<M>) -> TellError<()> {
    match e {
        TellError::Full(_) => TellError::Full(()),
        TellError::Unreachable { error, .. } => TellError::Unreachable { msg: (), error },
        TellError::Send(e) => TellError::Send(e.split().1),
        // Nothing else comes from `tell`; kept as not sent.
        _ => TellError::Send(tether::mpsc::SendError::Closed(())),
    }
}

/// A key's hash, the same on every node and build: FNV-1a through `Hasher`
/// (std's hasher is randomly keyed), as tether's groups hash keys.
fn hash_key(key: &impl Hash) -> u64 {
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

#[cfg(test)]
mod tests {
    use actix::prelude::*;
    use serde::{Deserialize, Serialize};
    use tether::cluster::{Cluster, ClusterConfig};
    use tether::{Config, Node};

    use super::*;
    use crate::envelope::Kind;

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "()")]
    struct Ping;

    struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<Ping> for Sink {
        type Result = ();
        fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
    }

    /// A keyed send here and one through tether's own `Group` pick the same
    /// member, so actix and ractor nodes agree on where a key goes.
    #[actix::test]
    async fn keyed_order_is_the_one_tether_groups_use() {
        let node = Node::new(Some("keys"), Config::default()).unwrap();
        let addr = node.listen("127.0.0.1:0").await.unwrap();
        let cluster = Cluster::join(&node, addr, ClusterConfig::default()).await.unwrap();
        for _ in 0..5 {
            crate::join_group::<_, Ping>(&cluster, "g", Sink.start()).unwrap();
        }
        let ours = crate::group::<Ping>(&cluster, "g");
        let members = ours.current();
        assert_eq!(members.len(), 5);
        let core = cluster.group::<Envelope<Ping>>("g");
        let mut picked = std::collections::HashSet::new();
        for k in 0..64u32 {
            let key = format!("key-{k}");
            let theirs = core.tell_keyed(&key, Envelope(Kind::Tell { msg: Ping })).await.unwrap();
            let mine = members[order(&members, Some(hash_key(&key)), &AtomicUsize::new(0))[0]].id();
            assert_eq!(mine, theirs, "{key}");
            picked.insert(mine);
        }
        assert_eq!(picked.len(), 5, "keys spread over every member");
    }
}
