//! Cluster-wide names and process groups for actix actors: claim a name or
//! join a group with an actor's `Addr`, find actors by name or group as
//! [`RemoteAddr`]s from any member, and hear of changes as messages.

use actix::dev::ToEnvelope;
use actix::prelude::*;
use tether::cluster::{Claim, Cluster, EventsError, GroupEvent, GroupKey, NameEvent, RegistryError};
use tether::{LookupError, RemoteMessage};

use crate::envelope::Envelope;
use crate::export::{export_once, find_export};
use crate::RemoteAddr;

/// Claims `name` across the cluster for the actor at `addr`, which takes
/// messages of type `M`: from then on [`lookup_name`] on any member finds it
/// (once gossip has spread the claim), until the actor stops, its node
/// leaves, or [`unregister`].
///
/// The actor is exported on the cluster's node if it is not already (one
/// export per actor and message type, shared with [`join_group`] and
/// [`export`](crate::export)). Returns its remote address and the
/// [`Claim`], which tells if a claim made elsewhere at the same time won
/// ([`Claim::lost`]). Call within a tokio runtime (an actix `System` is
/// one).
///
/// # Errors
///
/// [`RegistryError::Taken`] if another actor holds the name, and the
/// other refusals of [`Cluster::register`].
pub fn register<A, M>(cluster: &Cluster, name: &str, addr: Addr<A>) -> Result<(RemoteAddr<M>, Claim), RegistryError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    let remote = export_once::<A, M>(cluster.node(), addr);
    let claim = cluster.register(name, remote.remote_ref())?;
    Ok((remote, claim))
}

/// Gives up this node's claim on `name`; false if it held none.
pub fn unregister(cluster: &Cluster, name: &str) -> bool {
    cluster.unregister(name)
}

/// Finds the actor holding `name` on any member (a claim of [`register`],
/// else an actor exported under the name), checking that it takes messages
/// of type `M`. See [`Cluster::lookup`] for which holder is found when
/// several are.
///
/// # Errors
///
/// [`RemoteError::NotFound`](tether::RemoteError::NotFound) if no member
/// holds the name, [`RemoteError::TypeMismatch`](tether::RemoteError::TypeMismatch)
/// if the actor takes another message type, and what opening the route
/// reports.
pub async fn lookup_name<M>(cluster: &Cluster, name: &str) -> Result<RemoteAddr<M>, LookupError>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    cluster.lookup::<Envelope<M>>(name).await.map(RemoteAddr::from)
}

/// Every actor holding `name` that takes messages of type `M` (see
/// [`Cluster::lookup_all`]); no round trip.
///
/// # Errors
///
/// As [`Cluster::lookup_all`].
pub fn lookup_all<M>(cluster: &Cluster, name: &str) -> Result<Vec<RemoteAddr<M>>, LookupError>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    Ok(cluster.lookup_all::<Envelope<M>>(name)?.into_iter().map(RemoteAddr::from).collect())
}

/// Joins the actor at `addr` to `group` (a name in the default scope, or a
/// [`GroupKey::scoped`]) for messages of type `M`; joining again does
/// nothing more. It leaves with [`leave_group`], when it stops, or when its
/// node leaves the cluster.
///
/// The actor is exported as [`register`] does. Call within a tokio runtime
/// (an actor's `started` is a good place).
///
/// # Errors
///
/// The refusals of [`Cluster::join_group`].
pub fn join_group<A, M>(
    cluster: &Cluster,
    group: impl Into<GroupKey>,
    addr: Addr<A>,
) -> Result<RemoteAddr<M>, RegistryError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    let remote = export_once::<A, M>(cluster.node(), addr);
    cluster.join_group(group, remote.remote_ref())?;
    Ok(remote)
}

/// Takes the actor at `addr` out of `group`, where [`join_group`] put it
/// for messages of type `M`; false if it was not in it.
pub fn leave_group<A, M>(cluster: &Cluster, group: impl Into<GroupKey>, addr: &Addr<A>) -> bool
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    // Not exported for `M` on this node: never joined (or stopped, and out
    // of every group already).
    let Some(remote) = find_export::<A, M>(cluster.node(), addr) else { return false };
    cluster.leave_group(group, remote.remote_ref())
}

/// A group's members now that take messages of type `M`, on every member
/// node, by node.
pub fn group_members<M>(cluster: &Cluster, group: impl Into<GroupKey>) -> Vec<RemoteAddr<M>>
where
    M: Message + RemoteMessage,
    M::Result: RemoteMessage,
{
    cluster.group_members::<Envelope<M>>(group).into_iter().map(RemoteAddr::from).collect()
}

/// Sent to an actor watching a group with [`watch_group`]: a member joined
/// or left, or [`EventsError::Lagged`] if the watcher fell so far behind that
/// some events were dropped for it (then [`group_members`] tells the state
/// now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupUpdate {
    /// The group watched.
    pub group: GroupKey,
    /// What happened.
    pub event: Result<GroupEvent, EventsError>,
}

impl Message for GroupUpdate {
    type Result = ();
}

/// Sent to an actor watching a name with [`watch_name`]: an actor took or
/// gave up the name, or [`EventsError::Lagged`] if some events were
/// dropped for the watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameUpdate {
    /// The name watched.
    pub name: String,
    /// What happened.
    pub event: Result<NameEvent, EventsError>,
}

impl Message for NameUpdate {
    type Result = ();
}

/// Tells `watcher` of `group`'s members joining and leaving, on any member
/// node, starting with a [`GroupEvent::Joined`] for each member now, until
/// the watcher stops or the node leaves the cluster.
///
/// Like [`subscribe`](crate::subscribe): each update waits for room in the
/// watcher's mailbox, the watcher is held weakly, and aborting the returned
/// handle stops the watch. A member's actor that stops is reported
/// [`GroupEvent::Left`] once its node has published that. Call within a
/// running actix system.
pub fn watch_group(
    cluster: &Cluster,
    group: impl Into<GroupKey>,
    watcher: impl Into<Recipient<GroupUpdate>>,
) -> tokio::task::JoinHandle<()> {
    let group = group.into();
    let watcher = watcher.into().downgrade();
    let mut events = cluster.watch_group(group.clone());
    actix::spawn(async move {
        loop {
            let event = events.recv().await;
            if event == Err(EventsError::Closed) {
                return;
            }
            let Some(to) = watcher.upgrade() else { return };
            if to.send(GroupUpdate { group: group.clone(), event }).await.is_err() {
                return;
            }
        }
    })
}

/// Tells `watcher` of actors taking and giving up `name`, on any member
/// node, starting with a [`NameEvent::Registered`] for each holder now;
/// otherwise like [`watch_group`].
pub fn watch_name(
    cluster: &Cluster,
    name: &str,
    watcher: impl Into<Recipient<NameUpdate>>,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_owned();
    let watcher = watcher.into().downgrade();
    let mut events = cluster.watch_name(&name);
    actix::spawn(async move {
        loop {
            let event = events.recv().await;
            if event == Err(EventsError::Closed) {
                return;
            }
            let Some(to) = watcher.upgrade() else { return };
            if to.send(NameUpdate { name: name.clone(), event }).await.is_err() {
                return;
            }
        }
    })
}
