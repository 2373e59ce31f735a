//! `do_send` keeps actix's meaning across nodes: it never waits, and it
//! loses nothing the node's outbox can hold; past that documented cap each
//! drop is counted and logged. And a handle just received in a message
//! works at once: its first `try_send` and `do_send` are not refused while
//! its route opens.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tether::{Config, Node, NodeId};
use tether_actix::{export, lookup, RemoteAddr};
use tether_test_support::within;
use tokio::sync::Notify;

const T: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    count: u64,
    out_of_order: u64,
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Seen")]
enum Op {
    Item(u64),
    Get,
    /// Handles nothing more until the test opens the gate.
    Block,
    /// Blocks like `Block`, then stops the actor.
    BlockThenStop,
}

struct Sink {
    seen: Seen,
    next: u64,
    gate: Arc<Notify>,
    /// Work per item, so that the actor is slower than its sender.
    work: u32,
    /// Told the count of items seen, if set.
    counted: Option<tokio::sync::watch::Sender<u64>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Op> for Sink {
    type Result = ActorResponse<Self, Seen>;

    fn handle(&mut self, op: Op, ctx: &mut Context<Self>) -> Self::Result {
        match op {
            Op::Item(n) => {
                if n != self.next {
                    self.seen.out_of_order += 1;
                }
                self.next = n + 1;
                self.seen.count += 1;
                if let Some(counted) = &self.counted {
                    counted.send_replace(self.seen.count);
                }
                let mut x = n;
                for _ in 0..self.work {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            }
            Op::Get => {}
            Op::Block => {
                let gate = self.gate.clone();
                ctx.wait(async move { gate.notified().await }.into_actor(self));
            }
            Op::BlockThenStop => {
                let gate = self.gate.clone();
                ctx.wait(async move { gate.notified().await }.into_actor(self).map(|_, _, ctx| ctx.stop()));
            }
        }
        ActorResponse::reply(self.seen)
    }
}

fn sink(work: u32) -> (Sink, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    (Sink { seen: Seen::default(), next: 0, gate: gate.clone(), work, counted: None }, gate)
}

async fn two_nodes(cfg: Config) -> (Node, Node, NodeId) {
    let a = Node::new(Some("a"), cfg.clone()).unwrap();
    let b = Node::new(Some("b"), cfg).unwrap();
    let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
    (a, b, b_id)
}

/// The acceptance test: a million `do_send`s to a slow remote actor with
/// the default `Config`, from a loop that never yields, all arrive, in
/// order; the sender holds them in its outbox within the documented cap.
#[actix::test]
async fn a_million_do_sends_to_a_slow_actor_all_arrive_in_order() {
    within(T, async {
        let (a, b, b_id) = two_nodes(Config::default()).await;
        let (actor, _gate) = sink(200);
        export(&b, Some("sink"), actor.start()).unwrap();
        let remote = lookup::<Op>(&a, b_id, "sink").await.unwrap();

        const N: u64 = 1_000_000;
        let mut peak = 0;
        for i in 0..N {
            remote.do_send(Op::Item(i));
            if i % 1024 == 0 {
                peak = peak.max(a.stats().outbox_held);
            }
        }
        let held = a.stats().outbox_held;
        assert!(held > N as usize / 2, "the window took {} of {N} at once: the actor was not slow", N as usize - held);
        assert!(peak.max(held) <= Config::default().max_outbox as usize);

        let seen = remote.send_timeout(Op::Get, T).await.unwrap();
        assert_eq!(seen, Seen { count: N, out_of_order: 0 }, "all {N} arrived, in order");
        let stats = a.stats();
        assert_eq!((stats.outbox_held, stats.outbox_refused, stats.outbox_undelivered), (0, 0, 0));
    })
    .await;
}

/// A log sink for the test's thread.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<u8>>>);

impl Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Past `max_outbox`, `do_send` drops: each drop is counted in the node's
/// and the connection's stats and the run is logged at warn with its count.
/// What was accepted still arrives, in order.
#[actix::test]
async fn do_send_past_the_cap_is_counted_and_logged() {
    let logged = Logged::default();
    let writer = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    within(T, async {
        let mut cfg = Config::default();
        cfg.max_outbox = 1_000;
        let (a, b, b_id) = two_nodes(cfg).await;
        let (actor, gate) = sink(0);
        export(&b, Some("sink"), actor.start()).unwrap();
        let remote: RemoteAddr<Op> = lookup(&a, b_id, "sink").await.unwrap();
        remote.send(Op::Block).await.unwrap();

        const N: u64 = 10_000;
        for i in 0..N {
            remote.do_send(Op::Item(i));
        }
        let refused = a.stats().outbox_refused;
        assert!(refused > 0, "the outbox and the window took all {N}");
        assert_eq!(a.stats().outbox_held, 1_000, "the outbox is full");
        assert_eq!(a.connection(b_id).unwrap().stats().refused, refused, "the connection counts them too");

        gate.notify_one();
        let seen = remote.send(Op::Get).await.unwrap();
        assert_eq!(seen.count + refused, N, "every item arrived or was counted as refused");
        // The first `seen.count` items were accepted; the refused ones come
        // after them (a full outbox stays full while the loop runs).
        assert_eq!(seen.out_of_order, 0);
    })
    .await;
    let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("outbox full: refusing posted messages"), "{text}");
    let again = text.lines().find(|l| l.contains("outbox takes messages again")).unwrap_or_else(|| panic!("{text}"));
    assert!(again.contains("refused="), "the count is logged: {again}");
}

// ---- a ref just received works at once ----

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Forward {
    sink: RemoteAddr<Op>,
    n: u64,
}

/// How many first sends the relay saw refused.
#[derive(Message)]
#[rtype(result = "u64")]
struct Failures;

struct Relay {
    failures: u64,
    /// Told how many `Forward`s it handled.
    handled: tokio::sync::watch::Sender<u64>,
}

impl Actor for Relay {
    type Context = Context<Self>;
}

impl Handler<Forward> for Relay {
    type Result = ();

    /// Sends at once on the handle just decoded: `try_send`, then `do_send`.
    fn handle(&mut self, Forward { sink, n }: Forward, _: &mut Context<Self>) {
        if let Err(e) = sink.try_send(Op::Item(2 * n)) {
            eprintln!("try_send on a fresh handle: {e}");
            self.failures += 1;
        }
        sink.do_send(Op::Item(2 * n + 1));
        self.handled.send_modify(|h| *h += 1);
    }
}

impl Handler<Failures> for Relay {
    type Result = u64;

    fn handle(&mut self, _: Failures, _: &mut Context<Self>) -> u64 {
        self.failures
    }
}

/// The first `try_send` and `do_send` on a handle just decoded, 1,000
/// times, each on a handle to a new export (so a route the relay's node has
/// never opened): none is refused, and every message arrives.
#[actix::test]
async fn the_first_sends_on_a_handle_just_received_arrive() {
    within(T, async {
        let (a, b, b_id) = two_nodes(Config::default()).await;
        let (handled, mut forwarded) = tokio::sync::watch::channel(0);
        let relay_addr = Relay { failures: 0, handled }.start();
        export::<_, Forward>(&b, Some("relay"), relay_addr.clone()).unwrap();
        let relay = lookup::<Forward>(&a, b_id, "relay").await.unwrap();
        let (mut actor, _gate) = sink(0);
        let (counted, mut count) = tokio::sync::watch::channel(0);
        actor.counted = Some(counted);
        let addr = actor.start();

        const N: u64 = 1_000;
        let mut sinks = Vec::new();
        for n in 0..N {
            // A new export: a new actor id, so a new route on B.
            let sink = export::<_, Op>(&a, None, addr.clone()).unwrap();
            relay.tell(Forward { sink: sink.clone(), n }).await.unwrap();
            sinks.push(sink);
        }
        forwarded.wait_for(|h| *h == N).await.unwrap();
        assert_eq!(relay_addr.send(Failures).await.unwrap(), 0, "no first send was refused");
        count.wait_for(|c| *c == 2 * N).await.unwrap();
        assert_eq!(b.stats().outbox_held, 0);
    })
    .await;
}

/// Posted messages that can no longer be delivered once accepted (here the
/// sending node shuts down while they wait in its outbox) are counted, not
/// dropped silently.
#[actix::test]
async fn posted_messages_left_undelivered_are_counted() {
    within(T, async {
        let (a, b, b_id) = two_nodes(Config::default()).await;
        let (actor, _gate) = sink(0);
        export(&b, Some("sink"), actor.start()).unwrap();
        let remote = lookup::<Op>(&a, b_id, "sink").await.unwrap();
        remote.send(Op::Block).await.unwrap();
        // Far more than the window takes while the actor is blocked.
        for i in 0..100_000 {
            remote.do_send(Op::Item(i));
        }
        let held = a.stats().outbox_held as u64;
        a.shutdown().await;
        tether_test_support::eventually("the outbox is emptied", T, || a.stats().outbox_held == 0).await;
        let undelivered = a.stats().outbox_undelivered;
        // What the window took meanwhile went out; the rest is counted.
        assert!(undelivered > held / 2 && undelivered <= held, "{undelivered} of {held} held counted");
    })
    .await;
}

/// A `tell` or `send` waits only for what was queued before it, not for the
/// outbox to empty: another sender that keeps posting does not hold it back.
#[actix::test]
async fn a_send_is_not_held_back_by_another_senders_stream_of_do_sends() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    within(T, async {
        let (a, b, b_id) = two_nodes(Config::default()).await;
        let (actor, _gate) = sink(2_000);
        export(&b, Some("sink"), actor.start()).unwrap();
        let remote = lookup::<Op>(&a, b_id, "sink").await.unwrap();

        const CAP: u64 = 2_000_000;
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicU64::new(0));
        let poster = {
            let (remote, stop, posted) = (remote.clone(), stop.clone(), posted.clone());
            actix::spawn(async move {
                let mut i = 0;
                while i < CAP && !stop.load(Ordering::Relaxed) {
                    remote.do_send(Op::Item(i));
                    i += 1;
                    posted.store(i, Ordering::Relaxed);
                    if i % 1024 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                i
            })
        };
        tether_test_support::eventually("the poster is well ahead of the sink", T, || a.stats().outbox_held > 10_000)
            .await;
        // `tell` (as `ask` in the core) waits its turn, then goes; `send`
        // is queued in turn when called.
        remote.tell(Op::Get).await.unwrap();
        let seen = remote.send(Op::Get).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        let total = poster.await.unwrap();
        assert!(total < CAP, "the tell or send waited until the poster gave up ({total} posted)");
        assert!(seen.count < total, "answered while the stream went on ({} seen, {total} posted)", seen.count);
    })
    .await;
}

/// A `tell` dropped while it waits its turn behind posted messages is never
/// sent, as a `tell` cancelled before it left (a timed-out `send` the same).
#[actix::test]
async fn a_tell_dropped_while_queued_is_never_sent() {
    within(T, async {
        let (a, b, b_id) = two_nodes(Config::default()).await;
        let (actor, gate) = sink(0);
        export(&b, Some("sink"), actor.start()).unwrap();
        let remote = lookup::<Op>(&a, b_id, "sink").await.unwrap();

        remote.do_send(Op::Block);
        const N: u64 = 10_000;
        for i in 0..N {
            remote.do_send(Op::Item(i));
        }
        assert!(a.stats().outbox_held > 0, "nothing was queued");
        let mut late = Box::pin(remote.tell(Op::Item(N + 7)));
        assert!(futures::poll!(&mut late).is_pending(), "queued behind the posts");
        drop(late);

        gate.notify_one();
        let seen = remote.send_timeout(Op::Get, T).await.unwrap();
        assert_eq!(seen, Seen { count: N, out_of_order: 0 }, "the dropped tell was not sent");
        assert_eq!(a.stats().outbox_undelivered, 0, "a cancelled tell is not a failed delivery");
    })
    .await;
}
