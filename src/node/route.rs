//! Routes: how messages reach one actor from this node. Every ref to the
//! same actor on this node shares one route (so a ref received many times
//! costs one), which opens a channel into the actor's mailbox on its owner
//! the first time it is needed, directly or through the node the ref came
//! from, and opens it again after its connection ended.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex, Weak};

use super::control::Control;
use super::error::RemoteError;
use super::inner::NodeInner;
use super::mailbox::{Local, RemoteMessage};
use super::outbox::Outbox;
use super::peers::Peer;
use super::remote_ref::ActorId;
use super::tag::tag;
use crate::auth::Token;
use crate::chan::{mpsc, oneshot, RawSender};
use crate::NodeId;

/// Type-erased route kept in the node's table.
pub(crate) type AnyRoute = Weak<dyn Any + Send + Sync>;

/// What the node's table keys a route by: the actor, the capability, and
/// the Rust type of the messages (an actor may take several).
pub(crate) type RouteKey = (ActorId, Token, TypeId);

/// How messages reach one actor from this node. Shared by every copy of a
/// ref on this node, so a ref received many times costs one route.
pub(crate) struct Route<M> {
    pub(crate) node: Weak<NodeInner>,
    pub(crate) target: ActorId,
    /// The capability token the owner checks before opening a route.
    pub(crate) token: Token,
    /// Nodes that can forward towards the owner when this node has no
    /// connection to it, nearest first: the peer the ref came from, then the
    /// ones it named (see [`Hops`]).
    pub(crate) hops: Hops,
    pub(crate) local: Option<Local<M>>,
    pub(crate) sender: tokio::sync::Mutex<Option<mpsc::Sender<M>>>,
    /// The opened sender, for `try_tell` and for `sender` without waiting on
    /// the async lock.
    pub(crate) ready: std::sync::Mutex<Option<mpsc::Sender<M>>>,
    /// Set once the owner refused the ref's token: no send will ever pass.
    pub(crate) forbidden: std::sync::atomic::AtomicBool,
    /// Messages accepted without waiting and not handed to the channel yet
    /// (see `outbox.rs`).
    pub(crate) outbox: Mutex<Outbox<M>>,
    /// Woken whenever messages of the outbox are finished with.
    pub(crate) progress: tokio::sync::Notify,
    /// Posts refused for a full outbox since it last took one, to log once
    /// per run.
    pub(crate) refusing: std::sync::atomic::AtomicU64,
    /// The runtime the route was made on, to pump its outbox from when a
    /// message is posted outside any runtime.
    pub(crate) rt: Option<tokio::runtime::Handle>,
    /// The Rust type of its messages: an actor that takes several has a
    /// route for each.
    kind: TypeId,
}

impl<M> Drop for Route<M> {
    fn drop(&mut self) {
        if let Some(node) = self.node.upgrade() {
            node.forget_route((self.target, self.token, self.kind));
        }
    }
}

impl<M: 'static> Route<M> {
    pub(crate) fn new(
        node: &Arc<NodeInner>,
        target: ActorId,
        token: Token,
        hops: Hops,
        local: Option<Local<M>>,
        forbidden: bool,
    ) -> Route<M> {
        Route {
            node: Arc::downgrade(node),
            target,
            token,
            hops,
            local,
            sender: tokio::sync::Mutex::new(None),
            ready: Mutex::new(None),
            forbidden: forbidden.into(),
            outbox: Mutex::new(Outbox::default()),
            progress: tokio::sync::Notify::new(),
            refusing: Default::default(),
            rt: tokio::runtime::Handle::try_current().ok(),
            kind: TypeId::of::<M>(),
        }
    }
}

impl<M: RemoteMessage> Route<M> {
    /// The sender to the actor's mailbox, opening it if needed.
    pub(crate) async fn sender(&self) -> Result<mpsc::Sender<M>, RemoteError> {
        if let Some(s) = self.ready.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let mut slot = self.sender.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        if self.forbidden.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RemoteError::Forbidden);
        }
        let node = self.node.upgrade().ok_or(RemoteError::NodeGone)?;
        let s = node.open_route::<M>(self.target, self.token, &self.hops).await.inspect_err(|e| {
            if *e == RemoteError::Forbidden {
                self.forbidden.store(true, std::sync::atomic::Ordering::Release);
            }
        })?;
        *slot = Some(s.clone());
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        Ok(s)
    }
}

impl NodeInner {
    pub(crate) fn forget_route(&self, key: RouteKey) {
        let mut st = self.lock();
        if st.routes.get(&key).is_some_and(|w| w.strong_count() == 0) {
            st.routes.remove(&key);
        }
    }

    /// The route to `target` for messages of type `M`, shared by every ref
    /// to it on this node.
    pub(crate) fn route<M: RemoteMessage>(
        self: &Arc<Self>,
        target: ActorId,
        token: Token,
        hops: Hops,
    ) -> Arc<Route<M>> {
        let mut st = self.lock();
        let key = (target, token, TypeId::of::<M>());
        if let Some(existing) = st.routes.get(&key).and_then(Weak::upgrade) {
            if let Ok(route) = (existing as Arc<dyn Any + Send + Sync>).downcast::<Route<M>>() {
                return route;
            }
        }
        let forged = target.node == self.id && !self.caps.check(target.id, &token);
        let local = if target.node == self.id && !forged {
            st.registry.get(target.id).and_then(|e| e.mailbox::<M>()).map(Local::new)
        } else {
            None
        };
        let hops = if target.node == self.id { Hops::default() } else { hops };
        let route = Arc::new(Route::new(self, target, token, hops, local, forged));
        st.routes.insert(key, Arc::downgrade(&route) as AnyRoute);
        drop(st);
        let rt = tokio::runtime::Handle::try_current();
        if let (true, Ok(rt)) = (route.local.is_none() && target.node != self.id, rt) {
            // Open at once, so `try_tell` works soon after the ref arrives;
            // a failure here is reported by the first tell, which retries.
            // (Outside a runtime the first send opens it.)
            let eager = Arc::downgrade(&route);
            rt.spawn(async move {
                if let Some(route) = eager.upgrade() {
                    let _ = route.sender().await;
                }
            });
        }
        route
    }

    /// Asks the owner (directly, connecting to it if it is a cluster member,
    /// or through the first of `hops` this node is connected to) for a
    /// sender into the actor's mailbox.
    pub(crate) async fn open_route<M: RemoteMessage>(
        self: &Arc<Self>,
        target: ActorId,
        token: Token,
        hops: &Hops,
    ) -> Result<mpsc::Sender<M>, RemoteError> {
        let tag = tag::<M>();
        if target.node == self.id {
            // A ref to one of ours without its mailbox: forged, stopped, or
            // of another message type. Here nothing is encoded, so the Rust
            // types must be the same; if their tags are too, the error names
            // the Rust types.
            return Err(match self.export_for(target.id, &token)? {
                Some(e) => match e.facet(&tag) {
                    Some(f) => RemoteError::TypeMismatch {
                        expected: std::any::type_name::<M>().to_owned(),
                        found: f.type_name().to_owned(),
                    },
                    None => RemoteError::TypeMismatch { expected: tag, found: e.tags().join(" | ") },
                },
                None => RemoteError::Stopped,
            });
        }
        // A member of this node's cluster is connected to on demand; else
        // the owner or a hop towards it must be connected already.
        let (hop, rest) = match self.reach(target.node).await {
            Ok(owner) => (owner, Hops::default()),
            // Why the owner itself failed says more than that no hop helps.
            Err(e) => self.next_hop(target.node, hops, None).map_err(|_| e)?,
        };
        let (reply, answer) = oneshot::channel::<Result<mpsc::Sender<M>, RemoteError>>();
        let raw = RawSender::from_oneshot(reply);
        hop.control
            .send(Control::Open { target, token, tag, reply: raw, hops: rest })
            .await
            .map_err(|_| self.why_unreachable(target.node))?;
        self.answer(answer).await?
    }

    /// The peer to send a request for an actor of `owner` to: the owner
    /// itself if connected, else the first of `hops` this node is connected
    /// to (never `from`, where the request came from); and the hops that
    /// remain after it. Without either, why the owner cannot be reached.
    pub(crate) fn next_hop(
        &self,
        owner: NodeId,
        hops: &Hops,
        from: Option<NodeId>,
    ) -> Result<(Peer, Hops), RemoteError> {
        let direct = match self.peer(owner) {
            Ok(p) if Some(owner) != from => return Ok((p, Hops::default())),
            Ok(_) => RemoteError::NoRoute(owner),
            Err(e) => e,
        };
        for (i, &hop) in hops.0.iter().enumerate() {
            if hop == self.id || Some(hop) == from || hop == owner {
                continue;
            }
            if let Ok(p) = self.peer(hop) {
                // A peer's list is bounded here too, whatever it sent.
                return Ok((p, Hops(hops.0[i + 1..].iter().take(MAX_HOPS).copied().collect())));
            }
        }
        Err(direct)
    }
}

/// Most hops a ref remembers towards its owner; a ref passed on further
/// keeps the nearest ones.
pub(crate) const MAX_HOPS: usize = 16;

/// Nodes through which an actor's owner can be reached from here, nearest
/// first, at most [`MAX_HOPS`]. A ref that travels away from its owner
/// carries them (each node adds the one it got the ref from), so a node
/// with no connection to the owner reaches it through any chain of nodes
/// the ref went along, as long as they are connected in turn.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Hops(pub(crate) Vec<NodeId>);

impl Hops {
    /// The hops of a ref received from `from`, which named `further`.
    pub(crate) fn received(from: NodeId, further: Hops) -> Hops {
        let mut hops = Vec::with_capacity((further.0.len() + 1).min(MAX_HOPS));
        hops.push(from);
        hops.extend(further.0.into_iter().filter(|h| *h != from).take(MAX_HOPS - 1));
        Hops(hops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> NodeId {
        NodeId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_received_ref_puts_its_sender_first_and_keeps_at_most_max_hops() {
        let further = Hops((1..=40).map(id).collect());
        let hops = Hops::received(id(99), further);
        assert_eq!(hops.0.len(), MAX_HOPS);
        assert_eq!(hops.0[0], id(99));
        assert_eq!(hops.0[1..], (1..MAX_HOPS as u128).map(id).collect::<Vec<_>>()[..]);
        // The sender named again further on is not repeated.
        let hops = Hops::received(id(5), Hops(vec![id(5), id(6)]));
        assert_eq!(hops.0, vec![id(5), id(6)]);
    }
}
