//! Names across the cluster: actors exported by name on any member
//! ([`Node::export`](crate::Node::export)), names claimed cluster-wide
//! ([`Cluster::register`]), and finding either from any member.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::records::{Change, Held, InsertError, Key, Record, MAX_KEY};
use super::sync::RESERVED;
use super::{Cluster, EventsError};
use crate::{ActorId, LookupError, RemoteError, RemoteMessage, RemoteRef};

/// Refs kept for lookups to come.
const FOUND_MAX: usize = 1024;

/// Why a name or group membership was not registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another actor holds the unique name (as far as this node knows).
    #[error("the name {name:?} is held by {holder}")]
    Taken {
        /// The name.
        name: String,
        /// Who holds it.
        holder: ActorId,
    },
    /// Only this node's own actors can be registered here; register on the
    /// actor's node.
    #[error("{0} is not an actor of this node")]
    NotLocal(ActorId),
    /// The actor has stopped.
    #[error("the actor has stopped")]
    Stopped,
    /// This node publishes [`ClusterConfig::max_records`](super::ClusterConfig::max_records)
    /// records already.
    #[error("this node publishes {max} registry records already")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// A name, group or scope longer than [`MAX_KEY`] bytes.
    #[error("name longer than {MAX_KEY} bytes")]
    TooLong,
    /// Names starting with `tether.` are tether's own.
    #[error("names starting with \"tether.\" are reserved")]
    Reserved,
}

impl From<InsertError> for RegistryError {
    fn from(e: InsertError) -> Self {
        match e {
            InsertError::Taken { name, holder } => RegistryError::Taken { name, holder },
            InsertError::Full(max) => RegistryError::TooMany { max },
            InsertError::KeyTooLong => RegistryError::TooLong,
        }
    }
}

/// A unique name held by one of this node's actors ([`Cluster::register`]).
#[derive(Debug)]
pub struct Claim {
    name: String,
    lost: tokio::sync::watch::Receiver<Option<ActorId>>,
}

impl Claim {
    /// The name claimed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves when the claim ends: with the winner if another member
    /// claimed the name earlier (both claims were made before either member
    /// heard of the other, e.g. on two sides of a partition; this node
    /// withdrew its claim), or `None` if it ended otherwise (the actor
    /// stopped, [`Cluster::unregister`], the node left).
    pub async fn lost(&mut self) -> Option<ActorId> {
        loop {
            if let Some(winner) = *self.lost.borrow_and_update() {
                return Some(winner);
            }
            if self.lost.changed().await.is_err() {
                return *self.lost.borrow();
            }
        }
    }
}

/// A name's holders arriving and leaving, as [`Cluster::watch_name`]
/// reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameEvent {
    /// An actor took the name (exported under it, or claimed it).
    Registered(ActorId),
    /// An actor no longer holds the name: it stopped, was unexported or
    /// unregistered, lost a claim, or its node went down or left.
    Unregistered(ActorId),
}

/// Events about one name; see [`Cluster::watch_name`].
#[derive(Debug)]
pub struct NameWatch {
    name: String,
    initial: VecDeque<NameEvent>,
    rx: tokio::sync::broadcast::Receiver<Change>,
}

impl NameWatch {
    /// The next event.
    pub async fn recv(&mut self) -> Result<NameEvent, EventsError> {
        if let Some(e) = self.initial.pop_front() {
            return Ok(e);
        }
        loop {
            let change = super::groups::next_change(&mut self.rx).await?;
            if change.key.name() == Some(&self.name) {
                let event = if change.added {
                    NameEvent::Registered(change.actor)
                } else {
                    NameEvent::Unregistered(change.actor)
                };
                return Ok(event);
            }
        }
    }
}

/// Refs found by name, kept so that finding the name again needs no round
/// trip. Bounded: emptied when full.
#[derive(Default)]
pub(crate) struct Found(Mutex<HashMap<(ActorId, TypeId), Box<dyn Any + Send + Sync>>>);

impl Cluster {
    /// Claims `name` for `actor` across the cluster: from then on a lookup
    /// of `name` on any member finds `actor` (once gossip has spread it, in
    /// about the time a join takes), until the actor stops, its node goes
    /// down or leaves, or [`Cluster::unregister`].
    ///
    /// A claim is unique: if another actor holds the name as far as this
    /// node knows, [`RegistryError::Taken`]. Two members that claim a name
    /// before hearing of each other both hold it for a moment; every member
    /// ranks the claims alike (earliest first, by the claimant's clock, then
    /// by node id), lookups find the first, and the other withdraws and is
    /// told ([`Claim::lost`], and a warning in its log).
    ///
    /// `actor` must be one of this node's exports.
    pub fn register<M: RemoteMessage>(&self, name: &str, actor: &RemoteRef<M>) -> Result<Claim, RegistryError> {
        if name.starts_with(RESERVED) {
            return Err(RegistryError::Reserved);
        }
        if name.len() > MAX_KEY {
            return Err(RegistryError::TooLong);
        }
        let id = self.own_actor(actor)?;
        let key = Key::Unique(name.to_owned());
        // Claimed again: the claim keeps its rank.
        let me = self.node.id();
        let before = self
            .replica
            .read(|t| t.holders(&key).iter().find(|h| h.node == me && h.record.actor == id).map(|h| h.record.claimed));
        let claimed = before.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
        });
        let record = Record { key, actor: id, token: actor.token(), tag: crate::node::tag::<M>(), claimed };
        let lost = self.replica.watch_claim(name, id);
        if let Err(e) = self.publish(record) {
            self.replica.unwatch_claim(name, id);
            return Err(e);
        }
        Ok(Claim { name: name.to_owned(), lost })
    }

    /// Gives up this node's claim on `name`; false if it held none.
    pub fn unregister(&self, name: &str) -> bool {
        let key = Key::Unique(name.to_owned());
        self.replica.edit(|t| t.remove_own(|r| r.key == key))
    }

    /// Finds the actor holding `name` on any member, checking that it takes
    /// messages of type `M`: the claim of [`Cluster::register`] if there is
    /// one, else an actor exported under `name` (this node's own first, else
    /// the same one on every member). See [`Cluster::lookup_all`] for every
    /// holder.
    ///
    /// The name is looked up in this node's replica of the registry: no
    /// round trip. The first lookup of an actor opens the route to it (one
    /// round trip, after connecting to its node if needed); the ref is kept,
    /// so later lookups of the name cost none.
    ///
    /// # Errors
    ///
    /// [`RemoteError::NotFound`] if no member (this node knows of) holds
    /// the name; [`RemoteError::TypeMismatch`] naming both message tags if
    /// the actor takes another type; what opening the route reports.
    pub async fn lookup<M: RemoteMessage>(&self, name: &str) -> Result<RemoteRef<M>, LookupError> {
        let held = self.replica.read(|t| t.resolve(name).cloned());
        let held = held.ok_or_else(|| RemoteError::NotFound(name.to_owned()))?;
        check_tag::<M>(&held)?;
        let r = self.referent::<M>(&held);
        if let Err(e) = r.open().await {
            self.forget_found::<M>(held.actor());
            return Err(e);
        }
        Ok(r)
    }

    /// Every actor holding `name` that takes messages of type `M`: the
    /// winning claim first, then the exports under `name` on every member,
    /// by node. Routes open in the background; sends wait for them.
    ///
    /// # Errors
    ///
    /// [`RemoteError::NotFound`] if none holds it;
    /// [`RemoteError::TypeMismatch`] if every holder takes another type.
    pub fn lookup_all<M: RemoteMessage>(&self, name: &str) -> Result<Vec<RemoteRef<M>>, LookupError> {
        let held: Vec<Held> = self.replica.read(|t| t.resolve_all(name).into_iter().cloned().collect());
        let Some(first) = held.first() else { return Err(RemoteError::NotFound(name.to_owned())) };
        let refs: Vec<RemoteRef<M>> =
            held.iter().filter(|h| check_tag::<M>(h).is_ok()).map(|h| self.referent::<M>(h)).collect();
        if refs.is_empty() {
            check_tag::<M>(first)?;
        }
        Ok(refs)
    }

    /// Events about `name` from now on, starting with a
    /// [`NameEvent::Registered`] for each actor holding it now. Bounded like
    /// [`Cluster::subscribe`]: one that falls more than
    /// [`ClusterConfig::event_buffer`](super::ClusterConfig::event_buffer)
    /// registry changes behind is told how many it missed.
    pub fn watch_name(&self, name: &str) -> NameWatch {
        // Under the table's lock, changes are sent in order: the initial
        // state and the first event follow without a gap.
        self.replica.read(|t| {
            let initial = t.resolve_all(name).into_iter().map(|h| NameEvent::Registered(h.actor())).collect();
            NameWatch { name: name.to_owned(), initial, rx: self.replica.subscribe_changes() }
        })
    }

    /// Checks that `actor` is one of this node's exports, and gives its id.
    pub(super) fn own_actor<M>(&self, actor: &RemoteRef<M>) -> Result<u64, RegistryError> {
        let id = actor.route.target;
        if id.node != self.node.id() {
            return Err(RegistryError::NotLocal(id));
        }
        if !self.node.inner().is_exported(id.id) {
            return Err(RegistryError::Stopped);
        }
        Ok(id.id)
    }

    /// Publishes an own record; withdrawn at once if its actor stopped
    /// meanwhile (the registry's own cleanup may have run before it).
    pub(super) fn publish(&self, record: Record) -> Result<(), RegistryError> {
        let actor = record.actor;
        self.replica.edit(|t| t.insert(record))?;
        if !self.node.inner().is_exported(actor) {
            self.replica.edit(|t| t.remove_own(|r| r.actor == actor));
            return Err(RegistryError::Stopped);
        }
        Ok(())
    }

    /// A ref to a holder: one found before, or a new one (kept for later).
    pub(super) fn referent<M: RemoteMessage>(&self, held: &Held) -> RemoteRef<M> {
        let at = (held.actor(), TypeId::of::<M>());
        let mut found = self.found.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = found.get(&at).and_then(|r| r.downcast_ref::<RemoteRef<M>>()) {
            if r.token() == held.record.token && !r.is_refused() {
                return r.clone();
            }
        }
        let r = RemoteRef::<M>::from_parts(self.node.inner(), held.actor(), held.record.token);
        if found.len() >= FOUND_MAX {
            found.clear();
        }
        found.insert(at, Box::new(r.clone()));
        r
    }

    fn forget_found<M: 'static>(&self, actor: ActorId) {
        self.found.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&(actor, TypeId::of::<M>()));
    }
}

/// Whether a holder takes messages of type `M`.
pub(super) fn check_tag<M: RemoteMessage>(held: &Held) -> Result<(), RemoteError> {
    let expected = crate::node::tag::<M>();
    // An actor exported for several types lists their tags, one per line.
    if !held.record.tag.split('\n').any(|t| t == expected) {
        return Err(RemoteError::TypeMismatch { expected, found: held.record.tag.replace('\n', " | ") });
    }
    Ok(())
}
