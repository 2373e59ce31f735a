//! `RemoteGroup<M>`: a process group's members, on any node, behind one
//! actix-style handle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Message;
use tether::cluster::{Broadcast, Cluster, Group, GroupKey, Strategy};
use tether::{ActorId, RemoteError, RemoteMessage, RemoteRef, TellError};

use crate::envelope::Envelope;
use crate::remote_addr::Requested;
use crate::{RemoteAddr, RemoteMailboxError, DEFAULT_TIMEOUT};

/// A handle for sending to the members of a process group, wherever they
/// run, with [`RemoteAddr`]'s methods: to one member picked by the group's strategy,
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

/// The members for one send, and the order to try them in.
struct Pick<M: Message> {
    members: Arc<[RemoteAddr<M>]>,
    order: Vec<usize>,
    /// A keyed send waits for its member, never another.
    keyed: bool,
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

    /// The same group, picking members by `strategy` (round robin by
    /// default): [`Strategy::Random`], or [`Strategy::LeastLoaded`], the
    /// member with the fewest bytes outstanding from this node.
    pub fn with_strategy(self, strategy: Strategy) -> RemoteGroup<M> {
        RemoteGroup { group: self.group.with_strategy(strategy), shared: self.shared }
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

    /// Sends a message to one member, picked by the group's strategy, without waiting
    /// and without a result, as actix's `do_send`.
    ///
    /// Never blocks. If the picked member's window is full or it cannot be
    /// reached, the next one with room takes the message; if every
    /// reachable member is full, the first of them queues it in the node's
    /// outbox ([`RemoteAddr::do_send`]). Only with no member left to take
    /// it (or past the outbox's cap, or for a message that cannot be
    /// carried) is it dropped: counted in [`dropped`](Self::dropped) and
    /// logged at warn (once per episode, so that a flood does not flood the
    /// log; each message that cannot be carried at all is logged).
    pub fn do_send(&self, msg: M) {
        self.do_send_in(msg, self.turn())
    }

    /// [`do_send`](Self::do_send) to the member `key` hashes to (see
    /// [`send_keyed`](Self::send_keyed)). If that member's window is full
    /// the message is queued for it rather than sent to another, which
    /// would break the key's order.
    pub fn do_send_keyed(&self, key: &impl Hash, msg: M) {
        self.do_send_in(msg, self.keyed(key))
    }

    fn do_send_in(&self, msg: M, pick: Pick<M>) {
        let members = pick.members.clone();
        let error = match self.try_pick(msg, pick) {
            Ok(()) => Ok(()),
            // No member has room now: the first that was full queues it.
            Err((TellError::Full(msg), Some(at))) => members[at].post(msg),
            Err((e, _)) => Err(e),
        };
        let error = match error {
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
    /// member picked by the group's strategy first, else the next with room.
    ///
    /// # Errors
    ///
    /// The message comes back: [`TellError::Full`] if every reachable
    /// member's window is full; [`TellError::Unreachable`] if no member can
    /// be reached, with [`RemoteError::NotFound`] if the group has none;
    /// [`TellError::Send`] if the message cannot be carried.
    pub fn try_send(&self, msg: M) -> Result<(), TellError<M>> {
        self.try_pick(msg, self.turn()).map_err(|(e, _)| e)
    }

    /// [`try_send`](Self::try_send) to the member `key` hashes to; `Full`
    /// if its window is full.
    pub fn try_send_keyed(&self, key: &impl Hash, msg: M) -> Result<(), TellError<M>> {
        self.try_pick(msg, self.keyed(key)).map_err(|(e, _)| e)
    }

    /// Sends to a member with room now, in `order`; failing, says why and
    /// which member was the first found full.
    #[allow(clippy::type_complexity)]
    fn try_pick(&self, msg: M, Pick { members, order, keyed }: Pick<M>) -> Result<(), (TellError<M>, Option<usize>)> {
        let mut msg = msg;
        let mut full = None;
        let mut last = RemoteError::NotFound(self.key().to_string());
        for i in order {
            match members[i].try_send(msg) {
                Ok(()) => return Ok(()),
                // A keyed message waits for its member, never another.
                Err(TellError::Full(back)) if keyed => return Err((TellError::Full(back), Some(i))),
                Err(TellError::Full(back)) => {
                    msg = back;
                    full.get_or_insert(i);
                }
                Err(TellError::Unreachable { msg: back, error }) => {
                    msg = back;
                    last = error;
                }
                Err(e) => return Err((e, None)),
            }
        }
        Err(match full {
            Some(i) => (TellError::Full(msg), Some(i)),
            None => (TellError::Unreachable { msg, error: last }, None),
        })
    }

    /// Sends a message to one member, picked by the group's strategy, without a result,
    /// waiting while its window is full. A member that cannot be reached is
    /// skipped for the next.
    ///
    /// # Errors
    ///
    /// [`TellError::Unreachable`] if no member can be reached (with
    /// [`RemoteError::NotFound`] if the group has none), [`TellError::Send`]
    /// if the message cannot be carried; the message comes back.
    pub async fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        self.tell_in(msg, self.turn()).await
    }

    /// [`tell`](Self::tell) to the member `key` hashes to.
    pub async fn tell_keyed(&self, key: &impl Hash, msg: M) -> Result<(), TellError<M>> {
        self.tell_in(msg, self.keyed(key)).await
    }

    async fn tell_in(&self, msg: M, Pick { members, order, .. }: Pick<M>) -> Result<(), TellError<M>> {
        let mut msg = msg;
        let mut last = RemoteError::NotFound(self.key().to_string());
        for i in order {
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

    /// Sends a message to one member, picked by the group's strategy, and waits for its
    /// handler's result, at most [`DEFAULT_TIMEOUT`]. See
    /// [`send_timeout`](Self::send_timeout).
    pub fn send(&self, msg: M) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_in(msg, self.turn(), DEFAULT_TIMEOUT)
    }

    /// Sends a message to one member, picked by the group's strategy, and waits for its
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
        self.send_in(msg, self.turn(), timeout)
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
        self.send_in(msg, self.keyed(key), DEFAULT_TIMEOUT)
    }

    /// [`send_keyed`](Self::send_keyed) waiting at most `timeout`.
    pub fn send_keyed_timeout(
        &self,
        key: &impl Hash,
        msg: M,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
        self.send_in(msg, self.keyed(key), timeout)
    }

    fn send_in(
        &self,
        msg: M,
        Pick { members, order, .. }: Pick<M>,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static {
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
        self.current_with_refs().addrs
    }

    /// [`current`](Self::current), with the core's refs in the same order
    /// (what the core's pick order indexes).
    fn current_with_refs(&self) -> Members<M> {
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
        Members { refs: m.refs.clone(), addrs: m.addrs.clone() }
    }

    /// The members, in the order the core group picks them for the next
    /// send: by its strategy.
    fn turn(&self) -> Pick<M> {
        let Members { refs, addrs } = self.current_with_refs();
        Pick { order: self.group.pick_order(&refs), members: addrs, keyed: false }
    }

    /// [`turn`](Self::turn) for a keyed send: rendezvous hashing, as the
    /// core group does, so every node sends a key to the same member.
    fn keyed(&self, key: &impl Hash) -> Pick<M> {
        let Members { refs, addrs } = self.current_with_refs();
        Pick { order: self.group.pick_order_keyed(&refs, key), members: addrs, keyed: true }
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
        futures::future::join_all(sends).await.into_iter().collect()
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
            let pick = ours.keyed(&key);
            let mine = pick.members[pick.order[0]].id();
            assert_eq!(mine, theirs, "{key}");
            picked.insert(mine);
        }
        assert_eq!(picked.len(), 5, "keys spread over every member");
    }
}
