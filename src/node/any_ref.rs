//! [`AnyRef`]: a ref to an actor for every message type it takes, and
//! [`Exporter`], which exports one actor for several.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{NameTaken, RemoteError};
use super::inner::NodeInner;
use super::mailbox::{Mailbox, RemoteMessage};
use super::registry::{Export, Facet};
use super::remote_ref::{ActorId, Monitor, RefWire, RemoteRef};
use super::route::Hops;
use super::tag::tag;
use super::Node;
use crate::auth::Token;

/// A ref to an actor that takes messages of several types: one identity,
/// and a typed [`RemoteRef`] for each type, from [`typed`](Self::typed).
///
/// Get one from [`Node::export_many`], [`Node::lookup_any`], or inside a
/// message: it serializes exactly as a [`RemoteRef`] to the same actor, so
/// either can be decoded as the other. Found by name, it knows the
/// [tags](crate::message_tag) of the types the actor takes and checks them
/// in [`typed`](Self::typed); received in a message it does not, and the
/// actor's node checks when the typed ref's route opens.
#[derive(Clone)]
pub struct AnyRef {
    node: Weak<NodeInner>,
    target: ActorId,
    token: Token,
    hops: Hops,
    /// The tags of the types the actor takes, if known.
    tags: Option<Arc<[String]>>,
}

impl AnyRef {
    /// The actor `target`, found by name with the tags of its types.
    pub(crate) fn found(node: &Arc<NodeInner>, target: ActorId, token: Token, tags: Vec<String>) -> AnyRef {
        AnyRef { node: Arc::downgrade(node), target, token, hops: Hops::default(), tags: Some(tags.into()) }
    }

    /// The actor's identity.
    pub fn id(&self) -> ActorId {
        self.target
    }

    /// The [tags](crate::message_tag) of the message types the actor
    /// takes, if this ref knows them (it was found by name or made here).
    pub fn tags(&self) -> Option<&[String]> {
        self.tags.as_deref()
    }

    /// The typed ref for messages of type `M`, sharing the route every
    /// other ref to the actor for `M` on this node uses.
    ///
    /// # Errors
    ///
    /// [`RemoteError::TypeMismatch`] if the ref knows the actor's types and
    /// `M` is not one of them (naming `M`'s tag and the actor's);
    /// [`RemoteError::NodeGone`] if the node is gone.
    pub fn typed<M: RemoteMessage>(&self) -> Result<RemoteRef<M>, RemoteError> {
        if let Some(tags) = &self.tags {
            let expected = tag::<M>();
            if !tags.contains(&expected) {
                return Err(RemoteError::TypeMismatch { expected, found: tags.join(" | ") });
            }
        }
        let node = self.node.upgrade().ok_or(RemoteError::NodeGone)?;
        Ok(RemoteRef { route: node.route::<M>(self.target, self.token, self.hops.clone()) })
    }

    /// Watches the actor: resolves once with why it can no longer be
    /// reached.
    pub fn monitor(&self) -> Monitor {
        Monitor::of(&self.node, self.target, self.token, self.hops.clone())
    }
}

impl<M: RemoteMessage> From<RemoteRef<M>> for AnyRef {
    fn from(r: RemoteRef<M>) -> AnyRef {
        AnyRef::from(&r)
    }
}

impl<M: RemoteMessage> From<&RemoteRef<M>> for AnyRef {
    fn from(r: &RemoteRef<M>) -> AnyRef {
        let route = &r.route;
        // The actor may take more types than `M`: its tags are not known.
        AnyRef {
            node: route.node.clone(),
            target: route.target,
            token: route.token,
            hops: route.hops.clone(),
            tags: None,
        }
    }
}

impl PartialEq for AnyRef {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target && self.token == other.token
    }
}

impl Eq for AnyRef {}

impl Hash for AnyRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.target.hash(state)
    }
}

impl fmt::Debug for AnyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnyRef(node {}, actor {:016x})", self.target.node, self.target.id)
    }
}

impl Serialize for AnyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RefWire { node: self.target.node, actor: self.target.id, token: self.token, hops: self.hops.clone() }
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for AnyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (node, target, token, hops) = RefWire::decode(d)?;
        Ok(AnyRef { node: Arc::downgrade(&node), target, token, hops, tags: None })
    }
}

/// Exports one actor for several message types under one id (and name):
/// one mailbox per type. Made by [`Node::export_many`].
///
/// ```
/// # use tether::{Config, Mailbox, Node, RemoteMessage};
/// # fn demo<A, B>(node: &Node, a: impl Mailbox<A>, b: impl Mailbox<B>) -> Result<(), Box<dyn std::error::Error>>
/// # where A: RemoteMessage, B: RemoteMessage {
/// let actor = node.export_many(Some("chat"), a).mailbox(b).finish()?;
/// let for_a = actor.typed::<A>()?;
/// # let _ = for_a; Ok(()) }
/// ```
#[must_use = "nothing is exported until `finish`"]
pub struct Exporter<'a> {
    node: &'a Node,
    name: Option<String>,
    /// At least one.
    facets: Vec<Facet>,
    /// The first mailbox's stop, which ends the export.
    stopped: futures::future::BoxFuture<'static, ()>,
}

impl<'a> Exporter<'a> {
    pub(crate) fn new<M: RemoteMessage>(node: &'a Node, name: Option<&str>, first: impl Mailbox<M>) -> Exporter<'a> {
        let stopped = first.stopped();
        Exporter { node, name: name.map(str::to_owned), facets: vec![Facet::new(first)], stopped }
    }

    /// Adds the message type `M`, delivered to `mailbox`. All mailboxes
    /// must reach the same actor: the export ends when the first one
    /// reports it stopped. A type added twice keeps its first mailbox; so
    /// does a tag: a second type with the tag of one added before is left
    /// out, with an error logged (its messages would decode as the first).
    pub fn mailbox<M: RemoteMessage>(mut self, mailbox: impl Mailbox<M>) -> Self {
        let tag = tag::<M>();
        match self.facets.iter().find(|f| *f.tag == *tag) {
            None => self.facets.push(Facet::new(mailbox)),
            Some(f) if f.type_name() != std::any::type_name::<M>() => tracing::error!(
                %tag,
                first = f.type_name(),
                second = std::any::type_name::<M>(),
                "two message types of one export share a tag: the second is not exported"
            ),
            Some(_) => {}
        }
        self
    }

    /// Exports the actor for the types added.
    ///
    /// # Errors
    ///
    /// [`NameTaken`] if another export holds the name.
    pub fn finish(self) -> Result<AnyRef, NameTaken> {
        let Exporter { node, name, facets, stopped } = self;
        let tags: Arc<[String]> = facets.iter().map(|f| f.tag.to_string()).collect();
        let inner = node.inner();
        let id = {
            let mut st = inner.lock();
            let id = st.registry.fresh_id();
            st.registry.insert(id, name.as_deref(), Export::new(facets))?;
            id
        };
        inner.watch_export(id, stopped);
        if name.is_some() {
            inner.registry_changed();
        }
        let target = ActorId { node: inner.id, id };
        let token = inner.caps.token(id);
        Ok(AnyRef { node: Arc::downgrade(inner), target, token, hops: Hops::default(), tags: Some(tags) })
    }
}
