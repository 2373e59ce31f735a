//! tether-actix over real TCP on 127.0.0.1, with two or three tether nodes
//! in one process and a real actix runtime.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{Config, Node, NodeId, RemoteError, TellError, WatchEvent};
use tether_actix::{export, lookup, RemoteAddr, RemoteMailboxError, Terminated};
use tether_test_support::within;
use tokio::sync::{mpsc, Notify};

/// Upper bound on any one test; every wait inside is on an event.
const T: Duration = Duration::from_secs(30);

// ---- actors ----

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stats {
    count: u64,
    sum: u64,
    /// `Add`s whose value was below the previous one.
    out_of_order: u64,
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Stats")]
enum Op {
    Add(u64),
    Get,
    /// Handles nothing more until the test opens the actor's gate.
    Block,
    /// Answers after this many milliseconds, without blocking the actor.
    Slow(u64),
    Stop,
    /// The handler panics.
    Panic,
}

struct Counter {
    stats: Stats,
    last: u64,
    gate: Arc<Notify>,
}

impl Counter {
    fn new() -> (Counter, Arc<Notify>) {
        let gate = Arc::new(Notify::new());
        (Counter { stats: Stats::default(), last: 0, gate: gate.clone() }, gate)
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Op> for Counter {
    type Result = ActorResponse<Self, Stats>;

    fn handle(&mut self, op: Op, ctx: &mut Context<Self>) -> Self::Result {
        match op {
            Op::Add(n) => {
                if n < self.last {
                    self.stats.out_of_order += 1;
                }
                self.last = n;
                self.stats.count += 1;
                self.stats.sum += n;
            }
            Op::Get => {}
            Op::Block => {
                let gate = self.gate.clone();
                ctx.wait(async move { gate.notified().await }.into_actor(self));
            }
            Op::Slow(ms) => {
                let fut = actix::clock::sleep(Duration::from_millis(ms)).into_actor(self).map(|_, act, _| act.stats);
                return ActorResponse::r#async(fut);
            }
            Op::Stop => ctx.stop(),
            Op::Panic => panic!("counter panicked"),
        }
        ActorResponse::reply(self.stats)
    }
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ParseError {
    Empty,
    NotANumber(String),
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<u32, ParseError>")]
struct Parse(String);

struct Parser;

impl Actor for Parser {
    type Context = Context<Self>;
}

impl Handler<Parse> for Parser {
    type Result = Result<u32, ParseError>;

    fn handle(&mut self, Parse(text): Parse, _: &mut Context<Self>) -> Self::Result {
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        text.parse().map_err(|_| ParseError::NotANumber(text))
    }
}

/// Carries a counter's address to another node, whose relay adds to it
/// from inside its handler and answers with the counter's stats.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<Stats, String>")]
struct Relay {
    target: RemoteAddr<Op>,
    n: u64,
}

struct Relayer;

impl Actor for Relayer {
    type Context = Context<Self>;
}

impl Handler<Relay> for Relayer {
    type Result = ResponseActFuture<Self, Result<Stats, String>>;

    fn handle(&mut self, Relay { target, n }: Relay, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move { target.send(Op::Add(n)).await.map_err(|e| e.to_string()) }.into_actor(self))
    }
}

/// Watches a remote actor from `started` and reports to the test: first
/// the stats a `send` from its context returned, then the `Terminated`.
struct Watcher {
    target: RemoteAddr<Op>,
    report: mpsc::UnboundedSender<Report>,
}

#[derive(Debug)]
enum Report {
    Sent(Result<Stats, RemoteMailboxError>),
    Terminated(Terminated),
}

impl Actor for Watcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.target.watch(ctx.address());
        ctx.spawn(self.target.send(Op::Get).into_actor(self).map(|r, act, _| {
            let _ = act.report.send(Report::Sent(r));
        }));
    }
}

impl Handler<Terminated> for Watcher {
    type Result = ();

    fn handle(&mut self, t: Terminated, _: &mut Context<Self>) {
        let _ = self.report.send(Report::Terminated(t));
    }
}

// ---- helpers ----

async fn two_nodes() -> (Node, Node, NodeId) {
    let a = Node::new(Some("a"), Config::default()).unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    (a, b, b_id)
}

/// A counter exported on `b` as "counter", looked up from `a`.
async fn counter_on(a: &Node, b: &Node, b_id: NodeId) -> (RemoteAddr<Op>, Arc<Notify>) {
    let (counter, gate) = Counter::new();
    export(b, Some("counter"), counter.start()).unwrap();
    (lookup::<Op>(a, b_id, "counter").await.unwrap(), gate)
}

// ---- tests ----

#[actix::test]
async fn export_lookup_and_ordering() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter, _gate) = counter_on(&a, &b, b_id).await;

        // `tell` waits for room: all 10,000 arrive, in order, before the send.
        for i in 1..=10_000 {
            counter.tell(Op::Add(i)).await.unwrap();
        }
        let stats = counter.send(Op::Get).await.unwrap();
        assert_eq!(stats.count, 10_000);
        assert_eq!(stats.out_of_order, 0);

        // `do_send` never waits and, as in actix, never drops: in a loop that
        // never yields (one thread), what finds the window full waits in the
        // node's outbox. All arrive, in order, before the next send.
        for i in 10_001..=20_000 {
            counter.do_send(Op::Add(i));
        }
        assert!(a.stats().outbox_held > 0, "the window cannot take 10,000 at once");
        let stats = counter.send(Op::Get).await.unwrap();
        assert_eq!(stats.count, 20_000);
        assert_eq!(stats.out_of_order, 0);
        assert_eq!((a.stats().outbox_held, a.stats().outbox_refused), (0, 0));

        // The export's own handle reaches the actor locally, same API.
        let (local_counter, _) = Counter::new();
        let local = export::<_, Op>(&b, None, local_counter.start()).unwrap();
        local.try_send(Op::Add(7)).unwrap();
        assert_eq!(local.send(Op::Get).await.unwrap().sum, 7);
        assert_eq!(format!("{local:?}"), format!("RemoteAddr(node {}, actor {:016x})", b.id(), local.id().id));
    })
    .await;
}

#[actix::test]
async fn send_returns_handler_results_and_errors() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        export(&b, Some("parser"), Parser.start()).unwrap();
        let parser = lookup::<Parse>(&a, b_id, "parser").await.unwrap();
        assert_eq!(parser.send(Parse("42".into())).await.unwrap(), Ok(42));
        assert_eq!(parser.send(Parse("".into())).await.unwrap(), Err(ParseError::Empty));
        assert_eq!(parser.send(Parse("x".into())).await.unwrap(), Err(ParseError::NotANumber("x".into())));

        // An asynchronous response (ActorResponse::async) comes back too.
        let (counter, _gate) = counter_on(&a, &b, b_id).await;
        counter.tell(Op::Add(5)).await.unwrap();
        assert_eq!(counter.send(Op::Slow(10)).await.unwrap().sum, 5);
    })
    .await;
}

#[actix::test]
async fn send_timeout_fails_and_cancels_the_request() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter, gate) = counter_on(&a, &b, b_id).await;

        let err = counter.send_timeout(Op::Slow(2_000), Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(err, RemoteMailboxError::Timeout(Duration::from_millis(50)));
        assert_eq!(actix::MailboxError::try_from(err), Ok(actix::MailboxError::Timeout));

        // A request still waiting in the blocked actor's mailbox when its
        // asker gives up is never handled.
        counter.tell(Op::Block).await.unwrap();
        let err = counter.send_timeout(Op::Add(1_000), Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, RemoteMailboxError::Timeout(_)), "{err:?}");
        // A round trip on the same connection: the cancellation, sent
        // before it, has reached B and dropped the pending request there.
        lookup::<Op>(&a, b_id, "counter").await.unwrap();
        gate.notify_one();
        counter.tell(Op::Add(1)).await.unwrap();
        let stats = counter.send(Op::Get).await.unwrap();
        assert_eq!(stats.sum, 1, "the cancelled Add(1000) was skipped");
    })
    .await;
}

#[actix::test]
async fn lookup_errors_are_typed() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (_counter, _gate) = counter_on(&a, &b, b_id).await;
        match lookup::<Parse>(&a, b_id, "counter").await.unwrap_err() {
            RemoteError::TypeMismatch { expected, found } => {
                assert!(expected.contains("Parse"), "{expected}");
                assert!(found.contains("Op"), "{found}");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
        assert_eq!(lookup::<Op>(&a, b_id, "nobody").await.unwrap_err(), RemoteError::NotFound("nobody".into()));
        let (again, _) = Counter::new();
        assert_eq!(
            export::<_, Op>(&b, Some("counter"), again.start()).unwrap_err(),
            tether::NameTaken("counter".into())
        );
    })
    .await;
}

/// A looks up B's counter and sends its address to a relay on C, which has
/// no connection to B; the relay's handler sends to it (through A).
#[actix::test]
async fn remote_addr_travels_to_a_third_node() {
    within(T, async {
        let a = Node::new(Some("a"), Config::default()).unwrap();
        let b = Node::new(Some("b"), Config::default()).unwrap();
        let c = Node::new(Some("c"), Config::default()).unwrap();
        let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let c_id = a.connect(&c.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let (counter, _gate) = counter_on(&a, &b, b_id).await;
        export(&c, Some("relay"), Relayer.start()).unwrap();
        let relay = lookup::<Relay>(&a, c_id, "relay").await.unwrap();

        counter.tell(Op::Add(1)).await.unwrap();
        let stats = relay.send(Relay { target: counter.clone(), n: 41 }).await.unwrap().unwrap();
        assert_eq!(stats.sum, 42);
        assert_eq!(c.peers(), vec![a.id()], "C never connected to B");

        // Equal and hashing alike however they were obtained.
        let again = lookup::<Op>(&a, b_id, "counter").await.unwrap();
        assert_eq!(again, counter);
        // Eq and Hash read only the actor's identity, never the outbox.
        #[allow(clippy::mutable_key_type)]
        let set: std::collections::HashSet<_> = [again, counter].into_iter().collect();
        assert_eq!(set.len(), 1);
    })
    .await;
}

#[actix::test]
async fn death_watch_reports_a_stopped_actor() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter, _gate) = counter_on(&a, &b, b_id).await;
        let monitor = counter.monitor();
        let (report, mut reports) = mpsc::unbounded_channel();
        Watcher { target: counter.clone(), report }.start();
        match reports.recv().await.unwrap() {
            Report::Sent(r) => assert_eq!(r.unwrap().count, 0, "a send from an actor's context"),
            other => panic!("{other:?}"),
        }

        counter.tell(Op::Stop).await.unwrap();
        assert_eq!(monitor.await, WatchEvent::Stopped { reason: None });
        match reports.recv().await.unwrap() {
            Report::Terminated(t) => {
                assert_eq!(t, Terminated { actor: counter.id(), event: WatchEvent::Stopped { reason: None } })
            }
            other => panic!("{other:?}"),
        }
        let err = counter.send(Op::Get).await.unwrap_err();
        assert_eq!(err, RemoteMailboxError::Closed);
        assert!(matches!(counter.try_send(Op::Get), Err(TellError::Unreachable { .. })));
    })
    .await;
}

/// actix gives a holder of an `Addr` no way to tell a panic from a stop: a
/// handler's panic ends the actor (the task running its context unwinds,
/// and its mailbox closes), its node carries on, and the watchers hear
/// `Stopped` without a reason, as for any end of an actix actor.
#[actix::test]
async fn death_watch_reports_an_actor_whose_handler_panicked_as_stopped() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter, _gate) = counter_on(&a, &b, b_id).await;
        let mut monitor = counter.monitor();
        assert!(futures::poll!(&mut monitor).is_pending());
        // Answered once B has taken the watch (in order on its control channel).
        assert_eq!(lookup::<Op>(&a, b_id, "counter").await.unwrap(), counter);

        counter.tell(Op::Panic).await.unwrap();
        assert_eq!(monitor.await, WatchEvent::Stopped { reason: None });
        assert_eq!(counter.send(Op::Get).await.unwrap_err(), RemoteMailboxError::Closed);
    })
    .await;
}

#[actix::test]
async fn death_watch_reports_a_lost_node() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter, _gate) = counter_on(&a, &b, b_id).await;
        let monitor = counter.monitor();
        let (report, mut reports) = mpsc::unbounded_channel();
        Watcher { target: counter.clone(), report }.start();
        assert!(matches!(reports.recv().await.unwrap(), Report::Sent(Ok(_))));

        a.connection(b_id).unwrap().close().await;
        assert_eq!(monitor.await, WatchEvent::NodeLost);
        match reports.recv().await.unwrap() {
            Report::Terminated(t) => assert_eq!(t.event, WatchEvent::NodeLost),
            other => panic!("{other:?}"),
        }
        let err = counter.send(Op::Get).await.unwrap_err();
        assert!(matches!(err, RemoteMailboxError::Unreachable(_)), "{err:?}");
    })
    .await;
}

/// A blocked actor pushes back: `try_send` ends in `Full`, and what waits
/// at the sender stays bounded however long the actor stays blocked. What
/// was accepted is what the windows hold: each message counts at least 64
/// bytes against the receiver's port window and the sender's send buffer,
/// plus the handle's outbox (256), the few hundred the receiving node hands
/// to the actix mailbox before it waits (fewer than 512) and what a receiver
/// reads ahead (32).
#[actix::test]
async fn a_blocked_actor_keeps_the_sender_bounded() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (counter, gate) = counter_on(&a, &b, b_id).await;
        let conn = a.connection(b_id).unwrap();
        counter.tell(Op::Block).await.unwrap();

        let mut accepted = 0u64;
        let mut max_queued = 0;
        let mut full = false;
        for i in 0..1_000_000u64 {
            match counter.try_send(Op::Add(1)) {
                Ok(()) => accepted += 1,
                Err(TellError::Full(_)) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("try_send {i}: {e}"),
            }
            if i % 64 == 0 {
                // Let the connection and the peer run.
                tokio::task::yield_now().await;
                max_queued = max_queued.max(conn.stats().send_queued);
            }
        }
        assert!(full, "try_send never reported Full after {accepted} messages");
        let cfg = Config::default();
        let bound = (cfg.port_window + cfg.send_buffer) as u64 / 64 + 256 + 512 + 32;
        assert!(accepted <= bound, "accepted {accepted}, more than the windows hold ({bound})");
        assert!(accepted > 512, "the window holds more than the actor's mailbox ({accepted})");

        // Still full a while later, with nothing growing meanwhile.
        let waiting = tokio::spawn({
            let counter = counter.clone();
            async move { counter.tell(Op::Add(1)).await }
        });
        for _ in 0..50 {
            // The sampling pace: staying full is what is observed, and no
            // event can say that nothing more happens.
            tokio::time::sleep(Duration::from_millis(5)).await;
            max_queued = max_queued.max(conn.stats().send_queued);
            assert!(matches!(counter.try_send(Op::Add(1)), Err(TellError::Full(_))));
        }
        assert!(!waiting.is_finished(), "tell waits while the window is full");
        assert!(max_queued <= 512 * 1024, "send_queued reached {max_queued} bytes");

        // Unblocked, everything accepted arrives.
        gate.notify_one();
        waiting.await.unwrap().unwrap();
        let stats = counter.send(Op::Get).await.unwrap();
        assert_eq!(stats.count, accepted + 1);
    })
    .await;
}

#[actix::test]
async fn sends_waiting_on_one_node_are_bounded() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.max_pending_asks = 2;
        let a = Node::new(Some("a"), cfg).unwrap();
        let b = Node::new(Some("b"), Config::default()).unwrap();
        let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let (counter, gate) = counter_on(&a, &b, b_id).await;
        counter.tell(Op::Block).await.unwrap();
        // Two requests wait on the blocked actor (each polled once, so each
        // holds its place).
        let mut first = Box::pin(counter.send(Op::Add(1)));
        let mut second = Box::pin(counter.send(Op::Add(2)));
        assert!(futures::poll!(&mut first).is_pending() && futures::poll!(&mut second).is_pending());
        let third = counter.send(Op::Add(4)).await;
        assert_eq!(third.unwrap_err(), RemoteMailboxError::TooManyPending { limit: 2 });
        gate.notify_one();
        assert_eq!(first.await.unwrap().sum, 1);
        assert_eq!(second.await.unwrap().sum, 3);
        // Answered, they made room again.
        assert_eq!(counter.send(Op::Add(4)).await.unwrap().sum, 7);
    })
    .await;
}

/// Reports when it stops.
struct Quiet(Option<tokio::sync::oneshot::Sender<()>>);

impl Actor for Quiet {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Nudge;

impl Handler<Nudge> for Quiet {
    type Result = ();

    fn handle(&mut self, _: Nudge, _: &mut Context<Self>) {}
}

#[actix::test]
async fn dropping_the_node_lets_go_of_its_exported_actors() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        export(&b, Some("quiet"), Quiet(Some(stopped_tx)).start()).unwrap();
        let quiet = lookup::<Nudge>(&a, b_id, "quiet").await.unwrap();
        // A route is open now: on `b`, a task feeding the actor holds its `Addr`.
        quiet.send(Nudge).await.unwrap();
        // The connection outlives the node; the actor must not (actix stops an actor once
        // no `Addr` to it is left).
        drop(b);
        stopped.await.expect("the actor stopped");
        drop(a);
    })
    .await;
}
