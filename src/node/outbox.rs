//! The outbox of a route: messages accepted without waiting
//! ([`RemoteRef::post`], and [`RemoteRef::try_tell`] while the route opens)
//! that the route's channel has no room for yet. A pump task hands them to
//! the channel in order; a `tell` (and so an `ask`) waits until what was
//! queued before it has been handed over, so one sender's messages keep
//! their order whichever way each was sent.
//!
//! The node bounds what all its outboxes hold together
//! ([`Config::max_outbox`](crate::Config::max_outbox)); a post past it is
//! refused, counted in the node's and the connection's stats, and logged.
//! A queued message that cannot be delivered after all is counted, logged,
//! and handed to its sender's report if it left one.

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

/// Told how the send of a queued message ended: handed over, or why not
/// (with the message).
pub(crate) type Outcome<M> = Box<dyn FnOnce(Result<(), TellError<M>>) + Send>;

/// One route's queue.
pub(crate) struct Outbox<M> {
    queue: VecDeque<Entry<M>>,
    /// A pump task is handing the queue over; it may hold one message it
    /// took off the queue and has not handed over yet.
    pumping: bool,
    /// Messages ever queued, and ever finished with (handed over, or
    /// failed): a tell waits until `finished` reaches what `queued` was
    /// when it began.
    queued: u64,
    finished: u64,
}

impl<M> Default for Outbox<M> {
    fn default() -> Self {
        Outbox { queue: VecDeque::new(), pumping: false, queued: 0, finished: 0 }
    }
}

impl<M> Outbox<M> {
    /// Whether anything accepted earlier is still to be handed over: a send
    /// that would overtake it must wait or queue.
    pub(crate) fn busy(&self) -> bool {
        self.pumping || !self.queue.is_empty()
    }

    /// How many messages were queued so far (see [`finished`](Self::finished)).
    pub(crate) fn queued(&self) -> u64 {
        self.queued
    }

    /// How many queued messages were finished with so far.
    pub(crate) fn finished(&self) -> u64 {
        self.finished
    }
}

struct Entry<M> {
    item: Queued<M>,
    /// Who hears how its send ended.
    report: Report<M>,
    /// The trace context current when it was queued, if this node
    /// propagates traces: its send carries it (boxed: most entries have
    /// none, and the outbox may hold a million).
    trace: Option<Box<crate::trace::TraceContext>>,
}

/// Who hears how a queued message's send ended.
pub(crate) enum Report<M> {
    /// Nobody: a post. A failure is counted and logged only.
    None,
    /// Its sender's callback ([`RemoteRef::try_post`]).
    Call(Outcome<M>),
    /// A `tell` waiting for its turn; once it stops waiting (dropped, timed
    /// out) the message is not sent, as a `tell` cancelled before it sent.
    Waiter(tokio::sync::oneshot::Sender<Result<(), TellError<M>>>),
}

impl<M> Report<M> {
    /// The sender stopped waiting for this message: skip it.
    fn abandoned(&self) -> bool {
        matches!(self, Report::Waiter(tx) if tx.is_closed())
    }

    fn tell(self, outcome: Result<(), TellError<M>>) {
        match self {
            Report::None => {}
            Report::Call(report) => report(outcome),
            Report::Waiter(tx) => {
                let _ = tx.send(outcome);
            }
        }
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
    /// A post: up to the node's bound; a refusal is counted and logged.
    Post,
    /// A post whose refusal the caller handles (it waits instead).
    PostQuietly,
    /// A `try_tell` on a route still opening: up to [`OPENING`] on the
    /// route, and within the node's bound.
    Opening,
    /// Encoded already, its channel ends moved into it: taken whatever the
    /// bound, as it could not be given back intact.
    Held,
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
    /// Called outside any tokio runtime, with a route made outside one too,
    /// nothing could hand a queue over: it sends what fits now, as
    /// [`try_tell`](Self::try_tell), and a refusal for a full window is
    /// counted and logged as one for a full outbox.
    ///
    /// A queued message that cannot be delivered later (the actor stops, its
    /// node is lost) is counted in
    /// [`NodeStats::outbox_undelivered`](crate::NodeStats::outbox_undelivered)
    /// and logged at warn.
    pub fn post(&self, msg: M) -> Result<(), TellError<M>> {
        self.post_counted(msg, Report::None)
    }

    /// [`post`](Self::post) for senders that handle a full outbox and a
    /// failed delivery themselves: a post refused for a full outbox is
    /// neither counted nor logged (the caller waits with
    /// [`tell`](Self::tell) instead, as actix's `send` waits for a full
    /// mailbox), and a queued message that cannot be delivered after all is
    /// handed to `undelivered` with the error (besides being counted), so
    /// that, say, the asker waiting on a reply port inside it hears why.
    pub fn try_post(
        &self,
        msg: M,
        undelivered: impl FnOnce(TellError<M>) + Send + 'static,
    ) -> Result<(), TellError<M>> {
        let report: Outcome<M> = Box::new(move |outcome| {
            if let Err(e) = outcome {
                undelivered(e)
            }
        });
        self.post_counted(msg, Report::Call(report))
    }

    /// [`tell`](Self::tell) when the outbox is busy: queued behind what is
    /// there, and waits for its turn to be sent. `Err(msg)` if there is no
    /// queue to join (the outbox is idle, or full, or there is no runtime
    /// for its pump): the caller sends it itself.
    pub(crate) async fn tell_queued(&self, msg: M) -> Result<Result<(), TellError<M>>, M> {
        let rx = {
            let outbox = self.route.lock_outbox();
            if !outbox.busy() || self.pump_runtime().is_none() {
                return Err(msg);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            match self.enqueue(outbox, Queued::Msg(msg), Report::Waiter(tx), Admit::PostQuietly) {
                Ok(()) => rx,
                Err(TellError::Full(msg)) => return Err(msg),
                Err(e) => return Ok(Err(e)),
            }
        };
        // Dropped unanswered only if the pump's runtime shut down while it
        // sent this one: counted and logged as undelivered there.
        Ok(rx.await.unwrap_or(Ok(())))
    }

    fn post_counted(&self, msg: M, report: Report<M>) -> Result<(), TellError<M>> {
        if self.pump_runtime().is_none() {
            // Nothing could hand a queue over: only what fits now goes.
            tracing::debug!(actor = %self.route.target, "posted outside a tokio runtime: not queued");
            let sent = self.try_tell(msg);
            // Refused as a full outbox would be: counted and logged.
            if let (Err(TellError::Full(_)), Report::None, Some(node)) = (&sent, &report, self.route.node.upgrade()) {
                self.refused(&node);
            }
            return sent;
        }
        let admit = if matches!(report, Report::None) { Admit::Post } else { Admit::PostQuietly };
        let outbox = self.route.lock_outbox();
        if outbox.busy() {
            return self.enqueue(outbox, Queued::Msg(msg), report, admit);
        }
        if self.is_refused() {
            return Err(TellError::Unreachable { msg, error: RemoteError::Forbidden });
        }
        match self.try_now_holding(msg) {
            Ok(mpsc::Tried::Sent) => Ok(()),
            Ok(mpsc::Tried::Full(msg)) => self.enqueue(outbox, Queued::Msg(msg), report, admit),
            // Already encoded and its ends moved: it cannot be refused.
            Ok(mpsc::Tried::Held(held)) => self.enqueue(outbox, Queued::Held(Box::new(held)), report, Admit::Held),
            // The route's channel is on a connection since replaced: the
            // pump opens it again.
            Err(TellError::Unreachable { msg, error }) => match self.route.local {
                None if self.closed_for_good().is_none() => self.enqueue(outbox, Queued::Msg(msg), report, admit),
                _ => Err(TellError::Unreachable { msg, error }),
            },
            Err(e) => Err(e),
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
        ControlFlow::Break(self.queue_opening(outbox, msg))
    }

    /// Queues a `try_tell` on a route that is not open (or whose channel
    /// closed): the pump opens it.
    pub(crate) fn queue_opening(&self, outbox: MutexGuard<'_, Outbox<M>>, msg: M) -> Result<(), TellError<M>> {
        if self.is_refused() {
            return Err(TellError::Unreachable { msg, error: RemoteError::Forbidden });
        }
        if self.pump_runtime().is_none() {
            return Err(TellError::Full(msg));
        }
        self.enqueue(outbox, Queued::Msg(msg), Report::None, Admit::Opening)
    }

    /// Queues a message that has no room now, within the bound `admit`
    /// names.
    fn enqueue(
        &self,
        mut outbox: MutexGuard<'_, Outbox<M>>,
        item: Queued<M>,
        report: Report<M>,
        admit: Admit,
    ) -> Result<(), TellError<M>> {
        let Some(node) = self.route.node.upgrade() else {
            return match item {
                Queued::Msg(msg) => Err(TellError::Unreachable { msg, error: RemoteError::NodeGone }),
                // Dropped: its encoding is discarded with it.
                Queued::Held(_) => Ok(()),
            };
        };
        let limit = node.cfg.max_outbox as usize;
        let held = &node.outbox.held;
        let within =
            || held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok();
        let admitted = match admit {
            Admit::Held => {
                held.fetch_add(1, Ordering::Relaxed);
                true
            }
            Admit::Opening => outbox.queue.len() < OPENING && within(),
            Admit::Post | Admit::PostQuietly => within(),
        };
        if !admitted {
            if admit == Admit::Post {
                self.refused(&node);
            }
            let Queued::Msg(msg) = item else { unreachable!("a held message is always admitted") };
            return Err(TellError::Full(msg));
        }
        let trace = node.cfg.trace_propagation.as_ref().and_then(|p| p.current()).map(Box::new);
        outbox.queue.push_back(Entry { item, report, trace });
        outbox.queued += 1;
        if !outbox.pumping {
            outbox.pumping = true;
            drop(outbox);
            self.start_pump();
        }
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

    /// Where the outbox's pump runs: the runtime current at the call, else
    /// the one the route was made on. Callers check there is one before
    /// they queue anything.
    fn pump_runtime(&self) -> Option<tokio::runtime::Handle> {
        tokio::runtime::Handle::try_current().ok().or_else(|| self.route.rt.clone())
    }

    /// Starts the pump of an outbox just marked `pumping`. Called without
    /// the outbox's lock: a pump its runtime drops unrun (shutting down)
    /// sets the outbox free at once, under that lock.
    fn start_pump(&self) {
        let run = Run::new(self.route.clone());
        match self.pump_runtime() {
            Some(rt) => drop(rt.spawn(pump(self.clone(), run))),
            // Callers checked there is one; dropping the run frees the outbox.
            None => drop(run),
        }
    }
}

/// Hands a route's outbox to its channel in order, waiting for room; ends
/// once the outbox is empty. It holds the route (not the node), so what was
/// posted is delivered even if every ref is dropped meanwhile. A message
/// that finds the actor unreachable fails the rest of the queue with it
/// (each would only find the same).
async fn pump<M: RemoteMessage>(rref: RemoteRef<M>, mut run: Run<M>) {
    loop {
        let Entry { item, report, trace } = {
            let mut outbox = run.route.lock_outbox();
            match outbox.queue.pop_front() {
                Some(next) => next,
                None => {
                    outbox.pumping = false;
                    break;
                }
            }
        };
        if report.abandoned() {
            // Its sender stopped waiting before it was sent: never sent.
            run.finish(1);
            continue;
        }
        run.in_flight = true;
        let refused = run.route.refusing.swap(0, Ordering::Relaxed);
        if refused > 0 {
            tracing::warn!(actor = %run.route.target, refused, "outbox takes messages again; refused meanwhile");
        }
        let send = async {
            match item {
                Queued::Msg(msg) => rref.deliver(msg).await,
                // Its ends are in its encoding: it waits for room as it is.
                Queued::Held(held) => held.send().await.map_err(|e| match e {
                    mpsc::SendError::Closed(msg) => TellError::Unreachable { msg, error: rref.lost() },
                    e => TellError::Send(e),
                }),
            }
        };
        // Not wrapped when there is no context: a post costs no more then.
        let sent = match trace {
            Some(posted) => crate::trace::posted_under(*posted, send).await,
            None => send.await,
        };
        // Finished with (so the counts hold) before anyone is told.
        run.in_flight = false;
        run.finish(1);
        match sent {
            Ok(()) => report.tell(Ok(())),
            Err(e) => {
                run.note_failure(e.to_string(), 1);
                let unreachable = match &e {
                    TellError::Unreachable { error, .. } => Some(error.clone()),
                    _ => None,
                };
                report.tell(Err(e));
                if let Some(error) = unreachable {
                    run.fail_rest(&error);
                }
            }
        }
    }
    run.ended = true;
}

/// One run of a pump: what it failed, and, if it is dropped before its end
/// (its runtime shut down, or dropped it unrun), the outbox set free:
/// everything in it fails, so nothing waits on a pump that is gone.
struct Run<M> {
    route: Arc<Route<M>>,
    failed: u64,
    last_error: Option<String>,
    /// A message was taken off the queue and is not finished with.
    in_flight: bool,
    ended: bool,
}

impl<M> Run<M> {
    fn new(route: Arc<Route<M>>) -> Self {
        Run { route, failed: 0, last_error: None, in_flight: false, ended: false }
    }

    fn note_failure(&mut self, error: String, n: u64) {
        self.failed += n;
        self.last_error = Some(error);
        if let Some(node) = self.route.node.upgrade() {
            node.outbox.undelivered.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// `n` messages are finished with: no longer held, and tells waiting
    /// behind them may go.
    fn finish(&self, n: u64) {
        self.route.lock_outbox().finished += n;
        if let Some(node) = self.route.node.upgrade() {
            node.outbox.held.fetch_sub(n as usize, Ordering::Relaxed);
        }
        self.route.progress.notify_waiters();
    }

    /// Fails everything still queued with `error`.
    fn fail_rest(&mut self, error: &RemoteError) {
        let rest: Vec<Entry<M>> = self.route.lock_outbox().queue.drain(..).collect();
        self.fail(rest, error);
    }

    fn fail(&mut self, rest: Vec<Entry<M>>, error: &RemoteError) {
        let n = rest.len() as u64;
        if n == 0 {
            return;
        }
        self.finish(n);
        self.note_failure(error.to_string(), n);
        for Entry { item, report, .. } in rest {
            let msg = match item {
                Queued::Msg(msg) => msg,
                // Its encoding (and the ends in it) discarded.
                Queued::Held(held) => held.discard(),
            };
            report.tell(Err(TellError::Unreachable { msg, error: error.clone() }));
        }
    }
}

impl<M> Drop for Run<M> {
    fn drop(&mut self) {
        if !self.ended {
            // Cancelled, or never run: what it held and what waits fail,
            // and the next message starts a pump of its own.
            if self.in_flight {
                self.finish(1);
                self.note_failure("the pump's runtime shut down".into(), 1);
            }
            let rest: Vec<Entry<M>> = {
                let mut outbox = self.route.lock_outbox();
                outbox.pumping = false;
                outbox.queue.drain(..).collect()
            };
            self.fail(rest, &RemoteError::NodeGone);
            self.route.progress.notify_waiters();
        }
        if self.failed > 0 {
            let error = self.last_error.take().unwrap_or_default();
            tracing::warn!(actor = %self.route.target, failed = self.failed, %error, "posted messages not delivered");
        }
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
