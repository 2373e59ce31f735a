//! One handle for an actix actor that handles several message types:
//! [`RemoteActor`], exported with [`ActorExport`] and found with
//! [`lookup_actor`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message, Recipient};
use futures::FutureExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{
    ActorId, AnyRef, LookupError, Monitor, NameTaken, Node, NodeId, RemoteError, RemoteMessage, RemoteRef, TellError,
};
use tokio::sync::Notify;

use crate::any_msg::{any_tag, tag_of, AnyMailbox, AnyMsg};
use crate::envelope::{Envelope, Kind};
use crate::export::AddrMailbox;
use crate::remote_addr::{log_do_send, request_on, unwrap_tell, Requested, Terminated};
use crate::{RemoteAddr, RemoteMailboxError, DEFAULT_TIMEOUT};

/// The address of an actix actor that may live on another node, for every
/// message type it was exported for: what an actix `Addr<A>` is to a local
/// actor, across processes.
///
/// Each send is typed by its message: `send(Join { .. })` returns the
/// result type of `Join`. Which types the actor takes is known from the
/// lookup (it names them), so a message of another type fails at once
/// with [`RemoteError::TypeMismatch`] naming both; a handle received inside
/// a message learns it when the type's route opens. [`addr`](Self::addr)
/// gives the [`RemoteAddr`] for one type: the `Recipient`-like handle, which
/// also converts into an actix [`Recipient`]
/// ([`RemoteAddr::recipient`]).
///
/// The sending methods behave as [`RemoteAddr`]'s (its docs give the
/// windows and the outbox). Every message sent through a `RemoteActor` (and
/// its clones, and every other `RemoteActor` for the actor on this node)
/// travels on one route, so they reach the actor in the order they were
/// accepted, whatever their types, as through a local `Addr`. Messages sent
/// through a one-type [`RemoteAddr`] travel on that type's own route, and
/// keep their order only among themselves.
///
/// It is `Serialize + Deserialize`, like any ref: send it inside a message
/// and it is live on the node that decodes it. It is encoded as a
/// [`RemoteAddr`] to the same actor is, and every actix export (by
/// [`export`](crate::export) too) takes the route all types share, so any
/// ref to an actix actor decodes into a `RemoteActor` that reaches it.
#[derive(Clone)]
pub struct RemoteActor {
    any: AnyRef,
    /// The actor's one route for every type it takes, which keeps their
    /// order; made on first use.
    route: Arc<OnceLock<Result<RemoteRef<AnyMsg>, RemoteError>>>,
    /// The typed handles made so far, by message type (as many as the
    /// actor's types at most).
    addrs: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl RemoteActor {
    /// The handle for messages of type `M`, shared with every other send of
    /// `M` through this handle and its clones.
    ///
    /// # Errors
    ///
    /// [`RemoteError::TypeMismatch`] if the actor is known not to take `M`;
    /// [`RemoteError::NodeGone`] if this node is gone.
    pub fn addr<M>(&self) -> Result<RemoteAddr<M>, RemoteError>
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        let mut addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = addrs.get(&TypeId::of::<M>()).and_then(|a| a.downcast_ref::<RemoteAddr<M>>()) {
            return Ok(found.clone());
        }
        let addr = RemoteAddr::from(self.any.typed::<Envelope<M>>()?);
        addrs.insert(TypeId::of::<M>(), Box::new(addr.clone()));
        Ok(addr)
    }

    /// How a message of type `M` travels: on the route every type shares,
    /// or, for an actor exported for one type only (with
    /// [`export`](crate::export)), on that type's own.
    fn via<M>(&self) -> Result<Via<'_, M>, RemoteError>
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        if let Some(tags) = self.any.tags() {
            let expected = tag_of::<M>();
            if !tags.iter().any(|t| **t == *expected) {
                return Err(RemoteError::TypeMismatch { expected: expected.to_string(), found: tags.join(" | ") });
            }
            if !tags.iter().any(|t| **t == *any_tag()) {
                return self.addr::<M>().map(Via::Own);
            }
        }
        let shared = self.route.get_or_init(|| self.any.typed::<AnyMsg>());
        shared.as_ref().map(Via::Shared).map_err(Clone::clone)
    }

    /// Sends without waiting and without a result, as
    /// [`RemoteAddr::do_send`]; a message of a type the actor does not take
    /// is logged at warn.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        match self.via::<M>() {
            Ok(Via::Own(addr)) => addr.do_send(msg),
            Ok(Via::Shared(r)) => log_do_send(self.id(), r.post(AnyMsg::new(Envelope(Kind::Tell { msg })))),
            Err(error) => tracing::warn!(actor = %self.id(), %error, "do_send: message not sent"),
        }
    }

    /// Sends if there is room now, as [`RemoteAddr::try_send`].
    pub fn try_send<M>(&self, msg: M) -> Result<(), TellError<M>>
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        match self.via::<M>() {
            Ok(Via::Own(addr)) => addr.try_send(msg),
            Ok(Via::Shared(r)) => r.try_tell(AnyMsg::new(Envelope(Kind::Tell { msg }))).map_err(unwrap_tell),
            Err(error) => Err(TellError::Unreachable { msg, error }),
        }
    }

    /// Sends without a result, waiting for room, as [`RemoteAddr::tell`].
    pub async fn tell<M>(&self, msg: M) -> Result<(), TellError<M>>
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        match self.via::<M>() {
            Ok(Via::Own(addr)) => addr.tell(msg).await,
            Ok(Via::Shared(r)) => r.tell(AnyMsg::new(Envelope(Kind::Tell { msg }))).await.map_err(unwrap_tell),
            Err(error) => Err(TellError::Unreachable { msg, error }),
        }
    }

    /// Sends and waits for the handler's result, at most
    /// [`DEFAULT_TIMEOUT`], as [`RemoteAddr::send`].
    pub fn send<M>(&self, msg: M) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        self.send_timeout(msg, DEFAULT_TIMEOUT)
    }

    /// Sends and waits for the handler's result, at most `timeout`, as
    /// [`RemoteAddr::send_timeout`]: queued when called.
    pub fn send_timeout<M>(
        &self,
        msg: M,
        timeout: Duration,
    ) -> impl Future<Output = Result<M::Result, RemoteMailboxError>> + Send + 'static
    where
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        let requested = match self.via::<M>() {
            Ok(Via::Own(addr)) => Ok(addr.request(msg, timeout).boxed()),
            Ok(Via::Shared(r)) => Ok(request_on(r, msg, timeout).boxed()),
            Err(error) => Err(error),
        };
        async move {
            match requested?.await {
                Requested::Answered(result) => Ok(result),
                Requested::NotSent(_, e) | Requested::Failed(e) => Err(e),
            }
        }
    }

    /// The actor's identity.
    pub fn id(&self) -> ActorId {
        self.any.id()
    }

    /// The tags of the message types the actor takes, if known (see
    /// [`tether::message_tag`]).
    pub fn tags(&self) -> Option<Vec<String>> {
        let shared = any_tag();
        Some(self.any.tags()?.iter().filter(|t| ***t != *shared).cloned().collect())
    }

    /// Resolves once, with why the actor can no longer be reached.
    pub fn monitor(&self) -> Monitor {
        self.any.monitor()
    }

    /// Death watch in actix's form, as [`RemoteAddr::watch`].
    pub fn watch(&self, watcher: impl Into<Recipient<Terminated>>) -> tokio::task::JoinHandle<()> {
        crate::remote_addr::watch(self.monitor(), self.id(), watcher.into())
    }

    /// The framework-neutral ref underneath.
    pub fn any_ref(&self) -> &AnyRef {
        &self.any
    }
}

/// How one message travels (see [`RemoteActor::via`]).
enum Via<'a, M: Message> {
    Shared(&'a RemoteRef<AnyMsg>),
    Own(RemoteAddr<M>),
}

impl From<AnyRef> for RemoteActor {
    fn from(any: AnyRef) -> Self {
        RemoteActor { any, route: Arc::default(), addrs: Arc::default() }
    }
}

impl PartialEq for RemoteActor {
    fn eq(&self, other: &Self) -> bool {
        self.any == other.any
    }
}

impl Eq for RemoteActor {}

impl Hash for RemoteActor {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.any.hash(state)
    }
}

impl fmt::Debug for RemoteActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id();
        write!(f, "RemoteActor(node {}, actor {:016x})", id.node, id.id)
    }
}

/// Serializes exactly as a [`RemoteAddr`] to the same actor.
impl Serialize for RemoteActor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.any.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RemoteActor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AnyRef::deserialize(d).map(RemoteActor::from)
    }
}

/// Finds the actor exported as `name` on the connected node `peer`, for
/// whatever message types it takes.
pub async fn lookup_actor(node: &Node, peer: NodeId, name: &str) -> Result<RemoteActor, LookupError> {
    node.lookup_any(peer, name).await.map(RemoteActor::from)
}

/// Exports an actix actor for several message types under one id and one
/// name: start with [`ActorExport::new`], add each type with
/// [`handles`](ActorExport::handles), then [`finish`](ActorExporter::finish).
///
/// ```
/// # use actix::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Message, Serialize, Deserialize)] #[rtype(result = "()")] struct Join(String);
/// # #[derive(Message, Serialize, Deserialize)] #[rtype(result = "usize")] struct Count;
/// # struct Room(Vec<String>);
/// # impl Actor for Room { type Context = Context<Self>; }
/// # impl Handler<Join> for Room { type Result = (); fn handle(&mut self, j: Join, _: &mut Context<Self>) { self.0.push(j.0) } }
/// # impl Handler<Count> for Room { type Result = usize; fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize { self.0.len() } }
/// # #[actix::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let node = tether::Node::new(None, tether::Config::default())?;
/// let room = Room(Vec::new()).start();
/// let remote = tether_actix::ActorExport::new(&node, Some("room"), room)
///     .handles::<Join>()
///     .handles::<Count>()
///     .finish()?;
/// remote.do_send(Join("ann".into()));
/// assert_eq!(remote.send(Count).await?, 1);
/// # Ok(()) }
/// ```
///
/// The export holds the actor's `Addr`, as [`export`](crate::export)
/// does, and ends when the actor stops.
pub struct ActorExport<'a, A: Actor> {
    node: &'a Node,
    name: Option<String>,
    addr: Addr<A>,
}

/// An [`ActorExport`] with at least one message type; [`finish`](Self::finish)
/// exports it.
#[must_use = "nothing is exported until `finish`"]
pub struct ActorExporter<'a, A: Actor> {
    exporter: tether::Exporter<'a>,
    addr: Addr<A>,
    /// Woken when a delivery of any of the types finds the actor gone.
    stopped: Arc<Notify>,
    /// The mailbox of the one route every type travels on.
    any: AnyMailbox,
}

impl<'a, A: Actor> ActorExport<'a, A> {
    /// Starts an export of `addr` on `node`, under `name` if given. Must be
    /// called within a tokio runtime (an actix `System` is one).
    pub fn new(node: &'a Node, name: Option<&str>, addr: Addr<A>) -> Self {
        ActorExport { node, name: name.map(str::to_owned), addr }
    }

    /// Adds the message type `M`, which the actor handles.
    pub fn handles<M>(self) -> ActorExporter<'a, A>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        let stopped = Arc::new(Notify::new());
        let mailbox = AddrMailbox::<A, M>::new(self.addr.clone(), stopped.clone());
        let mut any = AnyMailbox::new(Box::new(AddrMailbox::<A, M>::new(self.addr.clone(), stopped.clone())));
        any.add(AddrMailbox::<A, M>::new(self.addr.clone(), stopped.clone()));
        let exporter = self.node.export_many(self.name.as_deref(), mailbox);
        ActorExporter { exporter, addr: self.addr, stopped, any }
    }
}

impl<'a, A: Actor> ActorExporter<'a, A> {
    /// Adds the message type `M`, which the actor handles.
    pub fn handles<M>(self) -> Self
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + RemoteMessage,
        M::Result: RemoteMessage,
    {
        let ActorExporter { exporter, addr, stopped, mut any } = self;
        any.add(AddrMailbox::<A, M>::new(addr.clone(), stopped.clone()));
        let exporter = exporter.mailbox(AddrMailbox::<A, M>::new(addr.clone(), stopped.clone()));
        ActorExporter { exporter, addr, stopped, any }
    }

    /// Exports the actor for the types added.
    ///
    /// # Errors
    ///
    /// [`NameTaken`] if another export on the node holds the name.
    pub fn finish(self) -> Result<RemoteActor, NameTaken> {
        self.exporter.mailbox(self.any).finish().map(RemoteActor::from)
    }
}
