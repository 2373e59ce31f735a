//! The registry: the actors this node exports, by id and by name, and what
//! each export needs to serve peers (its mailbox, its routes' pumps, its
//! watchers).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::control::{Exported, Watcher};
use super::error::{NameTaken, RemoteError};
use super::mailbox::{pump, ActorExit, Mailbox, RemoteMessage};
use super::tag::shared_tag;
use crate::auth::{CapabilityKey, Token};
use crate::chan::{mpsc, RawSender};

/// How a new route delivers: inside its span, and continuing the senders'
/// traces if this node propagates them (with the actor's id).
pub(crate) struct Delivery {
    pub(crate) span: tracing::Span,
    pub(crate) trace: Option<(crate::trace::TracePropagation, u64)>,
}

/// One message type an export takes.
pub(crate) struct Facet {
    /// The tag of the message type, which lookups and `Open`s must match;
    /// shared by every export of the type.
    pub(crate) tag: std::sync::Arc<str>,
    /// The mailbox and what the registry does with it, for this type: one
    /// allocation per facet, the mailbox inside it (a closure each cost one
    /// more per export, and so did a mailbox of its own).
    typed: Arc<dyn Typed>,
}

/// What the registry does with one facet's mailbox, whatever its type.
trait Typed: Send + Sync {
    /// The Rust type behind the tag: within one process a message is handed
    /// over unencoded, so there the Rust types must agree, and an error says
    /// which they are when the tags do.
    fn type_name(&self) -> &'static str;
    /// The mailbox as a boxed `Arc<dyn Mailbox<M>>` if it takes messages of
    /// the type `want` (`M`), for refs to it that come back here.
    fn mailbox(self: Arc<Self>, want: TypeId) -> Option<Box<dyn Any>>;
    /// Whether the actor has stopped, asked without waiting.
    fn stopped(&self) -> bool;
    /// How the actor ended, once it has stopped ([`Mailbox::exit`]).
    fn exit(&self) -> BoxFuture<'static, ActorExit>;
    /// Answers an `Open` with a fresh sender into the actor's mailbox.
    fn open(self: Arc<Self>, export: &Export, raw: RawSender, delivery: Delivery);
}

/// The mailbox `Mb` of a facet for messages of type `M`.
struct Of<M, Mb> {
    mailbox: Mb,
    _takes: PhantomData<fn(M)>,
}

// Every method forwards (a method added to `Mailbox` must be forwarded here
// too, or exported actors would get its default).
impl<M: RemoteMessage, Mb: Mailbox<M>> Mailbox<M> for Of<M, Mb> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        self.mailbox.deliver(msg)
    }

    fn deliver_tracked(&self, msg: M) -> Result<Option<BoxFuture<'static, ()>>, M> {
        self.mailbox.deliver_tracked(msg)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        self.mailbox.stopped()
    }

    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        self.mailbox.exit()
    }
}

impl<M: RemoteMessage, Mb: Mailbox<M>> Typed for Of<M, Mb> {
    fn type_name(&self) -> &'static str {
        std::any::type_name::<M>()
    }

    fn mailbox(self: Arc<Self>, want: TypeId) -> Option<Box<dyn Any>> {
        (want == TypeId::of::<M>()).then(|| Box::new(self as Arc<dyn Mailbox<M>>) as Box<dyn Any>)
    }

    fn stopped(&self) -> bool {
        use futures::FutureExt;
        self.mailbox.stopped().now_or_never().is_some()
    }

    fn exit(&self) -> BoxFuture<'static, ActorExit> {
        self.mailbox.exit()
    }

    fn open(self: Arc<Self>, export: &Export, raw: RawSender, delivery: Delivery) {
        let Some(reply) = raw.into_oneshot::<Result<mpsc::Sender<M>, RemoteError>>() else { return };
        // A stopped actor gets no new route, even before its node has
        // noticed (a route refused a message and closed, and its sender
        // opens it again).
        if export.has_stopped() {
            let _ = reply.send(Err(RemoteError::Stopped));
            return;
        }
        let mut guard = export.pumps.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pumps) = guard.as_mut() else {
            drop(guard);
            let _ = reply.send(Err(RemoteError::Stopped));
            return;
        };
        let (tx, rx) = mpsc::channel::<M>(64);
        // Owned by the export: aborted when the actor stops or the export is
        // dropped, and ends with its route.
        let mb: Arc<dyn Mailbox<M>> = self;
        #[cfg(feature = "metrics")]
        let mb = super::metrics::counted(mb, &export.delivered);
        let pump = tokio::spawn(pump(rx, mb, delivery));
        pumps.retain(|p| !p.is_finished());
        pumps.push(pump);
        drop(guard);
        let _ = reply.send(Ok(tx));
    }
}

impl Facet {
    /// The message type `M`, delivered to `mailbox`.
    pub(crate) fn new<M: RemoteMessage>(mailbox: impl Mailbox<M>) -> Facet {
        Facet { tag: shared_tag::<M>(), typed: Arc::new(Of { mailbox, _takes: PhantomData }) }
    }

    /// The Rust type of its messages.
    pub(crate) fn type_name(&self) -> &'static str {
        self.typed.type_name()
    }

    /// Whether the actor has stopped, asked without waiting.
    pub(crate) fn stopped(&self) -> bool {
        self.typed.stopped()
    }
}

/// An exported actor: one id for every message type it takes.
pub(crate) struct Export {
    /// The message types it takes, at least one.
    facets: Facets,
    /// The tasks feeding the actor from its routes; `None` once the actor
    /// stopped (its routes are closed, and no new one opens).
    pumps: Mutex<Option<Vec<tokio::task::JoinHandle<()>>>>,
    /// Who waits to hear how the actor ended, or how it did.
    watchers: Mutex<Watchers>,
    /// Messages its pumps handed to the actor (feature `metrics`).
    #[cfg(feature = "metrics")]
    delivered: Arc<std::sync::atomic::AtomicU64>,
}

/// An export's facets: most actors take one message type, kept inline
/// (a separate allocation for it was a fifth of an idle export).
enum Facets {
    One(Facet),
    Many(Box<[Facet]>),
}

/// An export's watchers.
enum Watchers {
    /// The actor runs, or its routes are still closing: told once they are.
    Waiting(Vec<Watcher>),
    /// Told: a watcher that comes later is told this at once.
    Told(ActorExit),
}

impl Drop for Export {
    /// Pumps still running (the node went away with the actor alive) stop
    /// too, releasing the mailbox they hold.
    fn drop(&mut self) {
        let pumps = self.pumps.get_mut().unwrap_or_else(|e| e.into_inner());
        for p in pumps.take().into_iter().flatten() {
            p.abort();
        }
    }
}

impl Export {
    /// An export taking the message types of `facets` (at least one), not
    /// yet registered.
    pub(crate) fn new(mut facets: Vec<Facet>) -> Arc<Export> {
        debug_assert!(!facets.is_empty());
        let facets = match facets.len() {
            1 => Facets::One(facets.pop().expect("one facet")),
            _ => Facets::Many(facets.into_boxed_slice()),
        };
        Arc::new(Export {
            facets,
            watchers: Mutex::new(Watchers::Waiting(Vec::new())),
            pumps: Mutex::new(Some(Vec::new())),
            #[cfg(feature = "metrics")]
            delivered: Default::default(),
        })
    }

    /// The message types it takes.
    fn facets(&self) -> &[Facet] {
        match &self.facets {
            Facets::One(f) => std::slice::from_ref(f),
            Facets::Many(all) => all,
        }
    }

    /// The facet for messages tagged `tag`.
    pub(crate) fn facet(&self, tag: &str) -> Option<&Facet> {
        self.facets().iter().find(|f| *f.tag == *tag)
    }

    /// The mailbox for messages of the Rust type `M`, for refs that come
    /// back here.
    pub(crate) fn mailbox<M: 'static>(&self) -> Option<Arc<dyn Mailbox<M>>> {
        let want = TypeId::of::<M>();
        let found = self.facets().iter().find_map(|f| f.typed.clone().mailbox(want))?;
        found.downcast::<Arc<dyn Mailbox<M>>>().ok().map(|mailbox| *mailbox)
    }

    /// The tags of every message type it takes.
    pub(crate) fn tags(&self) -> Vec<String> {
        self.facets().iter().map(|f| f.tag.to_string()).collect()
    }

    /// Answers an `Open` for messages tagged `tag` with a fresh route into
    /// the actor (`TypeMismatch` if it takes no such type).
    pub(crate) fn open(&self, tag: String, raw: RawSender, delivery: Delivery) {
        match self.facet(&tag) {
            Some(f) => f.typed.clone().open(self, raw, delivery),
            None => refuse(raw, RemoteError::TypeMismatch { expected: tag, found: self.tags().join(" | ") }),
        }
    }

    /// Whether the actor has stopped (its node may not have heard yet).
    pub(crate) fn has_stopped(&self) -> bool {
        self.facets()[0].stopped()
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Watchers> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a watcher: told how the actor ended once it has stopped and its
    /// routes are closed (at once if that is so already).
    pub(crate) fn add_watcher(&self, w: Watcher) {
        match &mut *self.watchers() {
            Watchers::Waiting(waiting) => waiting.push(w),
            Watchers::Told(exit) => {
                let _ = w.send(Ok(exit.clone()));
            }
        }
    }

    /// Whether [`stop`](Self::stop) has run to its end.
    fn is_stopped(&self) -> bool {
        matches!(*self.watchers(), Watchers::Told(_))
    }

    /// The actor stopped: closes every route into it (their receivers drop
    /// and senders see `Closed`), learns from the adapter how the actor
    /// ended, then tells the watchers that, so that a tell after the event
    /// fails instead of vanishing.
    pub(crate) async fn stop(self: Arc<Self>) {
        let pumps = self.pumps.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        for p in &pumps {
            p.abort();
        }
        for p in pumps {
            let _ = p.await;
        }
        // Cut here, so that local watchers see what remote ones do.
        let exit = self.facets()[0].typed.exit().await.bounded();
        let told = std::mem::replace(&mut *self.watchers(), Watchers::Told(exit.clone()));
        if let Watchers::Waiting(told) = told {
            for w in told {
                let _ = w.send(Ok(exit.clone()));
            }
        }
    }
}

/// This node's exports.
#[derive(Default)]
pub(crate) struct Registry {
    exports: HashMap<u64, Arc<Export>>,
    names: HashMap<String, u64>,
    /// Exports whose actor stopped, until their routes are closed and their
    /// watchers told: a watch that comes meanwhile waits for that too, so a
    /// tell after its `Stopped` fails rather than vanishes. Swept at each
    /// removal, so at most the actors stopping at once (and those since).
    stopping: HashMap<u64, Arc<Export>>,
}

impl Registry {
    /// A fresh id, not in use.
    pub(crate) fn fresh_id(&self) -> u64 {
        loop {
            let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
            let id = hi ^ lo;
            if !self.exports.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers `export` as `id`, under `name` if given.
    pub(crate) fn insert(&mut self, id: u64, name: Option<&str>, export: Arc<Export>) -> Result<(), NameTaken> {
        if let Some(name) = name {
            if self.names.contains_key(name) {
                return Err(NameTaken(name.to_owned()));
            }
            self.names.insert(name.to_owned(), id);
        }
        self.stopping.retain(|_, e| !e.is_stopped());
        self.exports.insert(id, export);
        Ok(())
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Arc<Export>> {
        self.exports.get(&id)
    }

    /// Removes a name; the actor stays exported.
    pub(crate) fn unname(&mut self, name: &str) -> bool {
        self.names.remove(name).is_some()
    }

    /// Removes the export `id` and its names; it is still found by
    /// [`get_stopping`](Self::get_stopping) until it has stopped.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Arc<Export>> {
        self.names.retain(|_, v| *v != id);
        self.stopping.retain(|_, e| !e.is_stopped());
        let export = self.exports.remove(&id)?;
        self.stopping.insert(id, export.clone());
        Some(export)
    }

    /// The export `id`, also while its actor is stopping.
    pub(crate) fn get_stopping(&self, id: u64) -> Option<&Arc<Export>> {
        self.exports.get(&id).or_else(|| self.stopping.get(&id).filter(|e| !e.is_stopped()))
    }

    /// Exports whose actor stopped without the node hearing yet.
    pub(crate) fn stopped_unheard(&self) -> Vec<u64> {
        self.exports.iter().filter(|(_, e)| e.has_stopped()).map(|(id, _)| *id).collect()
    }

    /// The answer to a `Lookup` of `name`.
    pub(crate) fn lookup(&self, name: &str, caps: &CapabilityKey) -> Result<Exported, RemoteError> {
        let actor = *self.names.get(name).ok_or_else(|| RemoteError::NotFound(name.to_owned()))?;
        let e = self.exports.get(&actor).ok_or_else(|| RemoteError::NotFound(name.to_owned()))?;
        Ok(Exported { actor, token: caps.token(actor), tags: e.tags() })
    }

    pub(crate) fn len(&self) -> usize {
        self.exports.len()
    }

    /// Every named export's name and the count of messages its pumps
    /// delivered, for the metrics; at most one row per export (an export
    /// has one name).
    #[cfg(feature = "metrics")]
    pub(crate) fn delivered(&self) -> Vec<(String, Arc<std::sync::atomic::AtomicU64>)> {
        let count = |id: &u64| self.exports.get(id).map(|e| e.delivered.clone());
        self.names.iter().filter_map(|(name, id)| Some((name.clone(), count(id)?))).collect()
    }

    /// Every name, with its actor and the tags of the actor's message
    /// types, one per line (an actor may take several).
    pub(crate) fn named(&self) -> Vec<(String, u64, String)> {
        let tags = |id: &u64| self.exports.get(id).map(|e| e.tags().join("\n"));
        self.names.iter().filter_map(|(name, id)| Some((name.clone(), *id, tags(id)?))).collect()
    }
}

/// Answers an `Open` with an error.
pub(crate) fn refuse(reply: RawSender, e: RemoteError) {
    // `Err(e)` encodes the same whatever the `Ok` type is.
    if let Some(tx) = reply.into_oneshot::<Result<(), RemoteError>>() {
        let _ = tx.send(Err(e));
    }
}

/// Checks a capability before anything about the actor is revealed:
/// `Forbidden` for a token this node did not mint.
pub(crate) fn check(caps: &CapabilityKey, actor: u64, token: &Token) -> Result<(), RemoteError> {
    if caps.check(actor, token) {
        Ok(())
    } else {
        Err(RemoteError::Forbidden)
    }
}
