//! The outbox of a route: messages accepted without waiting
//! ([`RemoteRef::post`], and [`RemoteRef::try_tell`] while the route opens)
//! that the route's channel has no room for yet. A pump task hands them to
//! the channel in order; every other send on the route waits until the
//! outbox is empty, so one sender's messages keep their order whichever way
//! each was sent.
//!
//! The node bounds what all its outboxes hold together
//! ([`Config::max_outbox`](crate::Config::max_outbox)); a post past it is
//! refused, counted in the node's and the connection's stats, and logged.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};

use super::error::RemoteError;
use super::inner::NodeInner;
use super::mailbox::RemoteMessage;
use super::remote_ref::{RemoteRef, TellError};
use super::route::Route;
use crate::chan::mpsc;

/// Most messages a `try_tell` queues on a route that is not open yet: about
/// what a port's window takes once it is.
pub(crate) const OPENING: usize = 256;

/// One route's queue.
pub(crate) struct Outbox<M> {
    queue: VecDeque<Queued<M>>,
    /// A pump task is handing the queue over; it may hold one message it
    /// took off the queue and has not handed over yet.
    pumping: bool,
}

impl<M> Default for Outbox<M> {
    fn default() -> Self {
        Outbox { queue: VecDeque::new(), pumping: false }
    }
}

impl<M> Outbox<M> {
    /// Whether anything accepted earlier is still to be handed over: a send
    /// that would overtake it must wait or queue.
    pub(crate) fn busy(&self) -> bool {
        self.pumping || !self.queue.is_empty()
    }
}

enum Queued<M> {
    Msg(M),
    /// Encoded already: it carries channel ends, which encoding moved into
    /// it (see [`mpsc::Held`]).
    Held(Box<mpsc::Held<M>>),
}

/// What a node's outboxes hold and refused, for its stats.
#[derive(Default)]
pub(crate) struct OutboxCounters {
    /// Messages held in all outboxes now.
    pub(crate) held: AtomicUsize,
    /// Posts refused because the node's outboxes were full.
    pub(crate) refused: AtomicU64,
    /// Messages accepted into an outbox that could not be delivered after
    /// all (the actor stopped, its node was lost, the message would not
    /// encode or was too large).
    pub(crate) undelivered: AtomicU64,
}

/// How a message is to join a route's outbox.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// A post: up to the node's bound.
    Post,
    /// A post whose refusal the caller handles (it waits instead).
    PostQuietly,
    /// A `try_tell` on a route still opening: up to [`OPENING`] on the route.
    Opening,
}

impl<M: RemoteMessage> RemoteRef<M> {
    /// Sends a message without waiting, queueing it if the actor's window
    /// has no room now or the route to it is still being opened: the
    /// fire-and-forget send of actix's `do_send` and ractor's `cast`.
    ///
    /// Messages posted, told and asked from this node to one actor reach it
    /// in the order they were accepted. What is queued counts against
    /// [`Config::max_outbox`](crate::Config::max_outbox), shared by every
    /// actor this node posts to; the messages stay in memory (unencoded)
    /// until their route takes them.
    ///
    /// # Errors
    ///
    /// The message comes back inside the error:
    /// - [`TellError::Full`] when the node's outboxes hold `max_outbox`
    ///   messages already. Such a refusal is counted
    ///   ([`NodeStats::outbox_refused`](crate::NodeStats::outbox_refused),
    ///   and the connection's
    ///   [`ConnectionStats::refused`](crate::ConnectionStats::refused))
    ///   and logged at warn, once per run of refusals and again with the
    ///   run's count when the outbox takes messages again;
    /// - [`TellError::Unreachable`] when the actor is known to be gone, or
    ///   its node cannot be reached;
    /// - [`TellError::Send`] when the message does not encode or is larger
    ///   than the connection carries (found at once when the route is open
    ///   and has room).
    ///
    /// A queued message that cannot be delivered later (the actor stops, its
    /// node is lost) is counted in
    /// [`NodeStats::outbox_undelivered`](crate::NodeStats::outbox_undelivered)
    /// and logged at warn.
    pub fn post(&self, msg: M) -> Result<(), TellError<M>> {
        self.post_counted(msg, true)
    }

    /// [`post`](Self::post), except that a post refused for a full outbox is
    /// neither counted nor logged: for callers that do not drop it but wait
    /// (with [`tell`](Self::tell)) instead, as actix's `send` waits for a
    /// full mailbox.
    pub fn try_post(&self, msg: M) -> Result<(), TellError<M>> {
        self.post_counted(msg, false)
    }

    fn post_counted(&self, msg: M, count: bool) -> Result<(), TellError<M>> {
        let admit = if count { Admit::Post } else { Admit::PostQuietly };
        let mut outbox = self.route.lock_outbox();
        if outbox.busy() {
            return self.enqueue(outbox, msg, admit);
        }
        if self.is_refused() {
            return Err(TellError::Unreachable { msg, error: RemoteError::Forbidden });
        }
        match self.try_now_holding(msg)? {
            mpsc::Tried::Sent => Ok(()),
            mpsc::Tried::Full(msg) => self.enqueue(outbox, msg, admit),
            mpsc::Tried::Held(held) => {
                let held = Queued::Held(Box::new(held));
                // Already encoded and its ends moved: it cannot be refused.
                self.route.node.upgrade().map(|n| n.outbox.held.fetch_add(1, Ordering::Relaxed));
                outbox.queue.push_back(held);
                self.start_pump(&mut outbox);
                Ok(())
            }
        }
    }

    /// `try_tell` on a route that is not open yet, or whose outbox is busy:
    /// queues it while the route opens (up to [`OPENING`]), `Full`
    /// otherwise. `Continue` when the route is open and idle: the caller
    /// sends it directly.
    pub(crate) fn try_queue(&self, msg: M) -> ControlFlow<Result<(), TellError<M>>, M> {
        let outbox = self.route.lock_outbox();
        let opening = self.route.local.is_none() && !self.route.is_open();
        if !opening {
            if outbox.busy() {
                // Behind messages waiting for room: full means full.
                return ControlFlow::Break(Err(TellError::Full(msg)));
            }
            return ControlFlow::Continue(msg);
        }
        if self.is_refused() {
            return ControlFlow::Break(Err(TellError::Unreachable { msg, error: RemoteError::Forbidden }));
        }
        ControlFlow::Break(self.enqueue(outbox, msg, Admit::Opening))
    }

    /// Queues a message that has no room now, within the bound `admit`
    /// names.
    fn enqueue(&self, mut outbox: MutexGuard<'_, Outbox<M>>, msg: M, admit: Admit) -> Result<(), TellError<M>> {
        let Some(node) = self.route.node.upgrade() else {
            return Err(TellError::Unreachable { msg, error: RemoteError::NodeGone });
        };
        let admitted = match admit {
            Admit::Opening => outbox.queue.len() < OPENING,
            Admit::Post | Admit::PostQuietly => {
                let limit = node.cfg.max_outbox as usize;
                let held = &node.outbox.held;
                held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
            }
        };
        if !admitted {
            if admit == Admit::Post {
                self.refused(&node);
            }
            return Err(TellError::Full(msg));
        }
        if admit == Admit::Opening {
            node.outbox.held.fetch_add(1, Ordering::Relaxed);
        }
        outbox.queue.push_back(Queued::Msg(msg));
        self.start_pump(&mut outbox);
        Ok(())
    }

    /// Counts and logs a post refused for a full outbox.
    fn refused(&self, node: &NodeInner) {
        let before = node.outbox.refused.fetch_add(1, Ordering::Relaxed);
        if let Ok(peer) = node.peer(self.route.target.node) {
            peer.conn.count_refused();
        }
        if self.route.refusing.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                actor = %self.route.target,
                limit = node.cfg.max_outbox,
                refused_before = before,
                "outbox full: refusing posted messages (Config::max_outbox)"
            );
        }
    }

    fn start_pump(&self, outbox: &mut Outbox<M>) {
        if outbox.pumping {
            return;
        }
        let rt = tokio::runtime::Handle::try_current().ok().or_else(|| self.route.rt.clone());
        let Some(rt) = rt else {
            // Nothing can hand the queue over; `post` documents that it
            // needs a runtime. Left queued, it is counted when the route goes.
            tracing::error!(actor = %self.route.target, "no tokio runtime to send posted messages from");
            return;
        };
        outbox.pumping = true;
        rt.spawn(pump(self.clone()));
    }
}

/// Hands a route's outbox to its channel in order, waiting for room; ends
/// once the outbox is empty. It holds the route (not the node), so what was
/// posted is delivered even if every ref is dropped meanwhile.
async fn pump<M: RemoteMessage>(rref: RemoteRef<M>) {
    let route: &Arc<Route<M>> = &rref.route;
    let mut failed: u64 = 0;
    let mut last_error = None;
    loop {
        let next = {
            let mut outbox = route.lock_outbox();
            match outbox.queue.pop_front() {
                Some(next) => next,
                None => {
                    outbox.pumping = false;
                    break;
                }
            }
        };
        let refused = route.refusing.swap(0, Ordering::Relaxed);
        if refused > 0 {
            tracing::warn!(actor = %route.target, refused, "outbox takes messages again; refused meanwhile");
        }
        let result = match next {
            Queued::Msg(msg) => rref.deliver(msg).await.map_err(|e| e.to_string()),
            Queued::Held(held) => held.send().await.map_err(|e| e.to_string()),
        };
        let node = route.node.upgrade();
        if let Err(error) = result {
            failed += 1;
            last_error = Some(error);
            node.as_ref().map(|n| n.outbox.undelivered.fetch_add(1, Ordering::Relaxed));
        }
        // Held until its send ended: an empty count means all were handed
        // over or counted.
        node.map(|n| n.outbox.held.fetch_sub(1, Ordering::Relaxed));
    }
    route.drained.notify_waiters();
    if failed > 0 {
        let error = last_error.unwrap_or_default();
        tracing::warn!(actor = %route.target, failed, %error, "posted messages not delivered");
    }
}

impl<M> Route<M> {
    pub(crate) fn lock_outbox(&self) -> MutexGuard<'_, Outbox<M>> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the channel to the actor is open (or was: a closed one is
    /// reopened by the next send).
    pub(crate) fn is_open(&self) -> bool {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}
