//! Process groups across a cluster, in the shape of ractor's `pg` (the
//! module ractor_cluster users know): the same functions, taking the
//! [`Cluster`] first, with members on every member node.
//!
//! | `ractor::pg` | here | |
//! |---|---|---|
//! | `join(group, vec![actor.get_cell()])` | [`join(&cluster, group, vec![actor])`](join) | returns the members' [`RemoteActorRef`]s |
//! | `join_scoped`, `leave`, `leave_scoped` | [`join_scoped`], [`leave`], [`leave_scoped`] | |
//! | `get_members(&group)` | [`get_members::<M>(&cluster, &group)`](get_members) | every node's members, typed |
//! | `get_local_members`, `get_scoped_members`, `get_scoped_local_members` | the same names | |
//! | `monitor(group, actor.get_cell())` | [`monitor(&cluster, group, actor, Msg::Changed)`](monitor) | changes arrive as the actor's own message |
//! | `demonitor(group, actor.get_id())` | [`demonitor(&cluster, group, actor.get_id())`](demonitor) | |
//! | upcast a member, then `cast!` | [`group::<M>(&cluster, group)`](group) | round robin, keyed or broadcast sends: [`RemoteGroup`] |
//!
//! Members are typed: a group may hold actors of several message types,
//! and [`get_members::<M>`](get_members) lists those that take `M`. Joining
//! exports the actor on the cluster's node unless it already is (one export
//! per actor and message type, shared with
//! [`registry::register`](crate::registry::register) and
//! [`export`](crate::export)/[`export_paced`](crate::export_paced)), so an
//! actor joined twice is one member. A member leaves when its actor stops,
//! when its node goes down or leaves, or with [`leave`]; every member node
//! sees joins and leaves once gossip has spread them (about the time a
//! join takes), and a member node reported down has left every group by
//! the time its [`ClusterEvent`](tether::cluster::ClusterEvent) is out.
//!
//! ractor's `which_groups`, `which_scopes` and `monitor_scope` (every group
//! of a scope) have no counterpart yet: the cluster's registry lists
//! members by group, not groups.
//!
//! ```
//! # use std::time::Duration;
//! # use ractor::{Actor, ActorProcessingErr, ActorRef};
//! # use serde::{Deserialize, Serialize};
//! # use tether::cluster::{Cluster, ClusterConfig};
//! # use tether::{Config, Node, ReplyPort};
//! use tether_ractor::pg;
//!
//! #[derive(Serialize, Deserialize)]
//! enum Work {
//!     Square(u64, ReplyPort<u64>),
//! }
//! # struct Worker;
//! # impl Actor for Worker {
//! #     type Msg = Work;
//! #     type State = ();
//! #     type Arguments = ();
//! #     async fn pre_start(&self, _: ActorRef<Work>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) }
//! #     async fn handle(&self, _: ActorRef<Work>, Work::Square(n, reply): Work, _: &mut ()) -> Result<(), ActorProcessingErr> {
//! #         let _ = reply.send(n * n);
//! #         Ok(())
//! #     }
//! # }
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::new(Some("one"), Config::default())?;
//! let addr = node.listen("127.0.0.1:0").await?;
//! let cluster = Cluster::join(&node, addr, ClusterConfig::default()).await?;
//!
//! let (worker, _) = Actor::spawn(None, Worker, ()).await?;
//! pg::join(&cluster, "workers", vec![worker])?;
//!
//! // On this member or any other:
//! assert_eq!(pg::get_members::<Work>(&cluster, "workers").len(), 1);
//! let workers = pg::group::<Work>(&cluster, "workers");
//! let nine = workers.ask(|reply| Work::Square(3, reply), Duration::from_secs(5)).await?;
//! assert_eq!(nine, 9);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use ractor::{ActorRef, GroupName, ScopeName};
use tether::cluster::{Cluster, EventsError, GroupEvent, GroupKey, RegistryError};
use tether::{ActorId, NodeId, RemoteMessage};

use crate::export::{export_once, find_export};
use crate::{RemoteActorRef, RemoteGroup};

/// The scope of [`join`], [`get_members`] and the other functions without
/// `_scoped`: tether's default scope (ractor's is named
/// `"__default_scope__"`; here a group's key is `(scope, group)` alike on
/// every framework's nodes).
pub const DEFAULT_SCOPE: &str = "";

/// A change in a group's membership, as [`monitor`] delivers it (ractor's
/// `GroupChangeMessage`, with the members' tether [`ActorId`]s: compare
/// them with [`RemoteActorRef::id`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChangeMessage {
    /// Actors joined the group.
    Join(ScopeName, GroupName, Vec<ActorId>),
    /// Actors left the group: taken out, stopped, or their node went down
    /// or left.
    Leave(ScopeName, GroupName, Vec<ActorId>),
}

impl GroupChangeMessage {
    /// The group that changed.
    pub fn get_group(&self) -> GroupName {
        match self {
            Self::Join(_, group, _) | Self::Leave(_, group, _) => group.clone(),
        }
    }

    /// The scope of the group that changed.
    pub fn get_scope(&self) -> ScopeName {
        match self {
            Self::Join(scope, _, _) | Self::Leave(scope, _, _) => scope.clone(),
        }
    }
}

/// Joins `actors` to `group` in the [`DEFAULT_SCOPE`]; see [`join_scoped`].
///
/// # Errors
///
/// As [`join_scoped`].
pub fn join<M>(
    cluster: &Cluster,
    group: impl Into<GroupName>,
    actors: Vec<ActorRef<M>>,
) -> Result<Vec<RemoteActorRef<M>>, RegistryError>
where
    M: ractor::Message + RemoteMessage,
{
    join_scoped(cluster, DEFAULT_SCOPE, group, actors)
}

/// Joins `actors`, which run on the cluster's node, to `group` in `scope`,
/// exporting each unless it already is; an actor already in the group stays
/// in it once. Returns their remote refs, in order. Call within a tokio
/// runtime (any ractor handler is; `pre_start` is a good place, as with
/// ractor's `pg`).
///
/// # Errors
///
/// The refusals of [`Cluster::join_group`]: [`RegistryError::Stopped`] for
/// an actor that stopped, [`RegistryError::TooMany`],
/// [`RegistryError::TooLong`]. The actors before the refused one stay
/// joined.
pub fn join_scoped<M>(
    cluster: &Cluster,
    scope: impl Into<ScopeName>,
    group: impl Into<GroupName>,
    actors: Vec<ActorRef<M>>,
) -> Result<Vec<RemoteActorRef<M>>, RegistryError>
where
    M: ractor::Message + RemoteMessage,
{
    let key = GroupKey::scoped(scope, group);
    actors
        .iter()
        .map(|actor| {
            let remote = export_once(cluster.node(), actor);
            cluster.join_group(key.clone(), &remote)?;
            Ok(remote.into())
        })
        .collect()
}

/// Takes `actors` out of `group` in the [`DEFAULT_SCOPE`]; see
/// [`leave_scoped`].
pub fn leave<M>(cluster: &Cluster, group: impl Into<GroupName>, actors: Vec<ActorRef<M>>) -> usize
where
    M: ractor::Message + RemoteMessage,
{
    leave_scoped(cluster, DEFAULT_SCOPE, group, actors)
}

/// Takes `actors` out of `group` in `scope`, where [`join_scoped`] put
/// them; returns how many were in it. (An actor that stops leaves its
/// groups by itself.)
pub fn leave_scoped<M>(
    cluster: &Cluster,
    scope: impl Into<ScopeName>,
    group: impl Into<GroupName>,
    actors: Vec<ActorRef<M>>,
) -> usize
where
    M: ractor::Message + RemoteMessage,
{
    let key = GroupKey::scoped(scope, group);
    actors
        .iter()
        .filter(|actor| find_export(cluster.node(), actor).is_some_and(|r| cluster.leave_group(key.clone(), &r)))
        .count()
}

/// The members of `group` in the [`DEFAULT_SCOPE`] that take messages of
/// type `M`, on every member node, by node.
pub fn get_members<M: RemoteMessage>(cluster: &Cluster, group: &str) -> Vec<RemoteActorRef<M>> {
    get_scoped_members(cluster, DEFAULT_SCOPE, group)
}

/// The members of `group` in `scope` that take messages of type `M`, on
/// every member node, by node.
pub fn get_scoped_members<M: RemoteMessage>(cluster: &Cluster, scope: &str, group: &str) -> Vec<RemoteActorRef<M>> {
    cluster.group_members::<M>(GroupKey::scoped(scope, group)).into_iter().map(RemoteActorRef::from).collect()
}

/// The members of `group` in the [`DEFAULT_SCOPE`] that take messages of
/// type `M` and run on the cluster's own node.
pub fn get_local_members<M: RemoteMessage>(cluster: &Cluster, group: &str) -> Vec<RemoteActorRef<M>> {
    get_scoped_local_members(cluster, DEFAULT_SCOPE, group)
}

/// The members of `group` in `scope` that take messages of type `M` and
/// run on the cluster's own node.
pub fn get_scoped_local_members<M: RemoteMessage>(
    cluster: &Cluster,
    scope: &str,
    group: &str,
) -> Vec<RemoteActorRef<M>> {
    let me = cluster.node().id();
    let mut members = get_scoped_members(cluster, scope, group);
    members.retain(|m| m.id().node == me);
    members
}

/// A handle for sending messages of type `M` to the members of `group` in
/// the [`DEFAULT_SCOPE`], round robin unless told otherwise.
pub fn group<M: RemoteMessage>(cluster: &Cluster, group: impl Into<GroupName>) -> RemoteGroup<M> {
    group_scoped(cluster, DEFAULT_SCOPE, group)
}

/// A handle for sending messages of type `M` to the members of `group` in
/// `scope`.
pub fn group_scoped<M: RemoteMessage>(
    cluster: &Cluster,
    scope: impl Into<ScopeName>,
    group: impl Into<GroupName>,
) -> RemoteGroup<M> {
    RemoteGroup::new(cluster.group::<M>(GroupKey::scoped(scope, group)))
}

/// Tells `actor` of members joining and leaving `group` in the
/// [`DEFAULT_SCOPE`]; see [`monitor_scoped`].
pub fn monitor<W>(
    cluster: &Cluster,
    group: impl Into<GroupName>,
    actor: ActorRef<W>,
    to_msg: impl Fn(Result<GroupChangeMessage, EventsError>) -> W + Send + 'static,
) where
    W: ractor::Message,
{
    monitor_scoped(cluster, DEFAULT_SCOPE, group, actor, to_msg)
}

/// Tells `actor` of members joining and leaving `group` in `scope`, on
/// every member node, as messages of its own type built by `to_msg`,
/// starting with a [`GroupChangeMessage::Join`] for each member now. It
/// lasts until the actor stops or [`demonitor_scoped`]; monitoring a group
/// again does nothing more.
///
/// ```
/// # use ractor::ActorRef;
/// use tether::cluster::{Cluster, EventsError};
/// use tether_ractor::pg::{self, GroupChangeMessage};
///
/// enum Dispatcher {
///     Workers(Result<GroupChangeMessage, EventsError>),
///     // ..
/// }
///
/// // In the actor's `pre_start`, or wherever a tokio runtime runs:
/// fn follow(cluster: &Cluster, myself: ActorRef<Dispatcher>) {
///     pg::monitor(cluster, "workers", myself, Dispatcher::Workers);
/// }
/// ```
///
/// ractor tells a monitor through its supervision port; a group here spans
/// nodes, so the change arrives as an ordinary message, as with
/// [`subscribe`](crate::subscribe). A member whose actor stops is reported
/// [`Leave`](GroupChangeMessage::Leave) once its node has published that.
/// ractor's mailboxes are unbounded, so changes are handed over as they
/// come and none is missed unless this task itself is starved for more than
/// [`ClusterConfig::event_buffer`](tether::cluster::ClusterConfig::event_buffer)
/// registry changes; then the actor gets [`EventsError::Lagged`] with how
/// many, and [`get_scoped_members`] tells the state now. Call within a
/// tokio runtime.
pub fn monitor_scoped<W>(
    cluster: &Cluster,
    scope: impl Into<ScopeName>,
    group: impl Into<GroupName>,
    actor: ActorRef<W>,
    to_msg: impl Fn(Result<GroupChangeMessage, EventsError>) -> W + Send + 'static,
) where
    W: ractor::Message,
{
    let key = GroupKey::scoped(scope, group);
    let at = (cluster.node().id(), key.clone(), actor.get_id());
    let mut monitors = MONITORS.lock().unwrap_or_else(|e| e.into_inner());
    if monitors.get(&at).is_some_and(|(_, task)| !task.is_finished()) {
        return;
    }
    let token = NEXT_MONITOR.fetch_add(1, Ordering::Relaxed);
    let events = cluster.watch_group(key.clone());
    let forget = at.clone();
    // Spawned under the lock, so that its end (which takes the lock) comes
    // after its entry is in.
    let task = tokio::spawn(async move {
        follow(events, key, actor, to_msg).await;
        let mut monitors = MONITORS.lock().unwrap_or_else(|e| e.into_inner());
        if monitors.get(&forget).is_some_and(|(t, _)| *t == token) {
            monitors.remove(&forget);
        }
    });
    monitors.insert(at, (token, task.abort_handle()));
}

/// Stops telling the actor `actor` of changes to `group` in the
/// [`DEFAULT_SCOPE`]; see [`demonitor_scoped`].
pub fn demonitor(cluster: &Cluster, group: impl Into<GroupName>, actor: ractor::ActorId) {
    demonitor_scoped(cluster, DEFAULT_SCOPE, group, actor)
}

/// Stops telling the actor `actor` of changes to `group` in `scope`; a
/// message already sent stays in its mailbox.
pub fn demonitor_scoped(
    cluster: &Cluster,
    scope: impl Into<ScopeName>,
    group: impl Into<GroupName>,
    actor: ractor::ActorId,
) {
    let at = (cluster.node().id(), GroupKey::scoped(scope, group), actor);
    let removed = MONITORS.lock().unwrap_or_else(|e| e.into_inner()).remove(&at);
    if let Some((_, task)) = removed {
        task.abort();
    }
}

/// Forwards a group's changes to `actor` until it stops or cannot be told.
async fn follow<W: ractor::Message>(
    mut events: tether::cluster::GroupWatch,
    key: GroupKey,
    actor: ActorRef<W>,
    to_msg: impl Fn(Result<GroupChangeMessage, EventsError>) -> W,
) {
    let gone = actor.get_cell();
    let (scope, group) = (key.scope().to_owned(), key.name().to_owned());
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = gone.wait(None) => return,
        };
        let change = match event {
            Ok(GroupEvent::Joined(id)) => Ok(GroupChangeMessage::Join(scope.clone(), group.clone(), vec![id])),
            Ok(GroupEvent::Left(id)) => Ok(GroupChangeMessage::Leave(scope.clone(), group.clone(), vec![id])),
            Ok(_) => continue,
            Err(EventsError::Closed) => return,
            Err(e) => Err(e),
        };
        if actor.cast(to_msg(change)).is_err() {
            return;
        }
    }
}

/// The monitors running, by node, group and watching actor: a token naming
/// the task (so that a task ending removes only its own entry) and the
/// task. Process-wide, like ractor's `pg` state, because a `Node` has no
/// room for an adapter's state; an entry goes when its task ends.
type Monitors = HashMap<(NodeId, GroupKey, ractor::ActorId), (u64, tokio::task::AbortHandle)>;

static MONITORS: LazyLock<Mutex<Monitors>> = LazyLock::new(Default::default);

static NEXT_MONITOR: AtomicU64 = AtomicU64::new(0);
