//! Nodes, the registry and RemoteRef over real TCP, with a minimal actor
//! (a tokio task) so that the core is tested without either framework.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, within, TaskMailbox};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tether::{AskError, Config, Node, RemoteError, RemoteRef, ReplyPort, TellError, WatchEvent};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch, Notify};

const T: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize, Debug)]
enum Counter {
    Add(u64),
    Get(ReplyPort<u64>),
    /// A ref travelling inside a message.
    Forward(RemoteRef<Counter>, u64),
    Stop,
}

/// Spawns a counter actor; returns its mailbox end.
fn counter() -> TaskMailbox<Counter> {
    counter_watched().0
}

/// Spawns a counter actor; returns its mailbox end and its running total,
/// for tests that wait until a total is reached.
fn counter_watched() -> (TaskMailbox<Counter>, watch::Receiver<u64>) {
    let (tx, mut rx): (UnboundedSender<Counter>, UnboundedReceiver<Counter>) = unbounded_channel();
    let (total_tx, total_rx) = watch::channel(0);
    tokio::spawn(async move {
        let mut total = 0;
        while let Some(msg) = rx.recv().await {
            match msg {
                Counter::Add(n) => {
                    total += n;
                    total_tx.send_replace(total);
                }
                Counter::Get(reply) => {
                    let _ = reply.send(total);
                }
                Counter::Forward(target, n) => {
                    if let Err(e) = target.tell(Counter::Add(n)).await {
                        panic!("forwarding to {target:?} failed: {e:?}");
                    }
                }
                Counter::Stop => break,
            }
        }
    });
    (TaskMailbox(tx), total_rx)
}

async fn two_nodes() -> (Node, Node, tether::NodeId) {
    let a = Node::new(Some("a"), Config::default()).unwrap();
    let b = Node::new(Some("b"), Config::default()).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    assert_eq!(b_id, b.id());
    (a, b, b_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_tell_and_ask() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        b.export(Some("counter"), counter()).unwrap();
        let r: RemoteRef<Counter> = a.lookup(b_id, "counter").await.unwrap();
        for _ in 0..1000 {
            r.tell(Counter::Add(1)).await.unwrap();
        }
        let total = r.ask(Counter::Get, Duration::from_secs(5)).await.unwrap();
        assert_eq!(total, 1000, "every tell arrived before the ask, in order");
        assert_eq!(format!("{r:?}"), format!("RemoteRef(node {}, actor {:016x})", b_id, r.id().id));

        // A second connect to the same node reuses the connection.
        let again = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        assert_eq!(again, b_id);
        eventually("a duplicate connection is dropped", Duration::from_secs(5), || a.peers().len() == 1).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_errors_are_typed() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        b.export(Some("counter"), counter()).unwrap();
        assert_eq!(b.export(Some("counter"), counter()).unwrap_err(), tether::NameTaken("counter".into()));
        let err = a.lookup::<Counter>(b_id, "nobody").await.unwrap_err();
        assert_eq!(err, RemoteError::NotFound("nobody".into()));
        let err = a.lookup::<String>(b_id, "counter").await.unwrap_err();
        match err {
            RemoteError::TypeMismatch { expected, found } => {
                assert_eq!(expected, "String");
                assert_eq!(found, "Counter{Add|Get|Forward|Stop}");
            }
            other => panic!("expected a type mismatch, got {other:?}"),
        }
        assert!(b.unexport("counter"));
        assert_eq!(a.lookup::<Counter>(b_id, "counter").await.unwrap_err(), RemoteError::NotFound("counter".into()));
    })
    .await;
}

/// A sends B's ref to C, which has no connection to B; C asks B through A,
/// and the reply reaches C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_forwarded_to_a_third_node_reaches_its_actor() {
    within(T, async {
        let a = Node::new(Some("a"), Config::default()).unwrap();
        let b = Node::new(Some("b"), Config::default()).unwrap();
        let c = Node::new(Some("c"), Config::default()).unwrap();
        let a_addr = a.listen("127.0.0.1:0").await.unwrap().to_string();
        let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let a_id = c.connect(&a_addr).await.unwrap();

        let (b_sink, mut b_total) = counter_watched();
        b.export(Some("counter"), b_sink).unwrap();
        a.export(Some("relay"), counter()).unwrap();
        let c_sink = c.export(Some("sink"), counter()).unwrap();
        let b_counter: RemoteRef<Counter> = a.lookup(b_id, "counter").await.unwrap();
        // C gets B's ref inside a message from A: C's own counter forwards to it.
        let c_counter: RemoteRef<Counter> = a.lookup(c.id(), "sink").await.unwrap();
        c_counter.tell(Counter::Forward(b_counter.clone(), 5)).await.unwrap();
        // C's tell goes C -> A -> B.
        b_total.wait_for(|&total| total == 5).await.unwrap();
        assert_eq!(b_counter.ask(Counter::Get, Duration::from_secs(5)).await.unwrap(), 5);
        assert_eq!(c.peers(), vec![a_id], "C never connected to B");
        drop(c_sink);
    })
    .await;
}

/// The same ref sent 100,000 times costs one route on the receiving node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_a_ref_many_times_does_not_grow_ports() {
    within(Duration::from_secs(120), async {
        let (a, b, b_id) = two_nodes().await;
        let (sink, mut total) = counter_watched();
        let target = a.export(Some("target"), sink).unwrap();
        b.export(Some("hub"), counter()).unwrap();
        let hub: RemoteRef<Counter> = a.lookup(b_id, "hub").await.unwrap();
        let conn = a.connection(b_id).unwrap();
        // Sampled while the refs flow, so that routes opened per ref and
        // closed later would show too.
        let mut peak = 0;
        for i in 0..100_000 {
            hub.tell(Counter::Forward(target.clone(), 1)).await.unwrap();
            if i % 1000 == 0 {
                peak = peak.max(conn.stats().open_ports);
            }
        }
        total.wait_for(|&total| total == 100_000).await.unwrap();
        assert_eq!(target.ask(Counter::Get, Duration::from_secs(5)).await.unwrap(), 100_000);
        // Control ports, the hub route, and one route back to `target`.
        let end = conn.stats().open_ports;
        assert!(peak.max(end) < 16, "ports: {peak} at most while sending, {end} at the end");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reply_port_fails_the_ask_and_a_monitor_sees_the_stop() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        b.export(Some("counter"), counter()).unwrap();
        let r: RemoteRef<Counter> = a.lookup(b_id, "counter").await.unwrap();
        let watch = r.monitor();

        // A reply port dropped unanswered fails the ask at once.
        let (tx, mut rx) = unbounded_channel::<Counter>();
        b.export(Some("silent"), TaskMailbox(tx)).unwrap();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                drop(m)
            }
        });
        let silent: RemoteRef<Counter> = a.lookup(b_id, "silent").await.unwrap();
        // `NoReply`, not `Timeout`: the ask ended because the port was
        // dropped, before its timeout (longer than the test's bound).
        let err = silent.ask(Counter::Get, 2 * T).await.unwrap_err();
        assert!(matches!(err, AskError::NoReply), "{err:?}");

        r.tell(Counter::Stop).await.unwrap();
        assert_eq!(within(Duration::from_secs(5), watch).await, WatchEvent::Stopped { reason: None });
        let err = r.ask(Counter::Get, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, AskError::Unreachable(RemoteError::Stopped)), "{err:?}");
    })
    .await;
}

/// `connect` to a restarted named node returns only once the restart is
/// noted: a monitor of a ref to the old incarnation made right after says
/// `NodeRestarted`, never `NodeLost` (it raced on a multi-threaded runtime
/// when the hello was signalled before it was handled).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_is_known_when_connect_returns() {
    within(T, async {
        for _ in 0..50 {
            let a = Node::new(Some("a"), Config::default()).unwrap();
            let first = Node::new(Some("b"), Config::default()).unwrap();
            let addr = first.listen("127.0.0.1:0").await.unwrap();
            first.export(Some("counter"), counter()).unwrap();
            let old_id = a.connect(&addr.to_string()).await.unwrap();
            let old: RemoteRef<Counter> = a.lookup(old_id, "counter").await.unwrap();
            let watch = old.monitor();
            a.connection(old_id).unwrap().close().await;
            assert_eq!(watch.await, WatchEvent::NodeLost);

            let second = Node::new(Some("b"), Config::default()).unwrap();
            let addr = second.listen("127.0.0.1:0").await.unwrap();
            a.connect(&addr.to_string()).await.unwrap();
            assert_eq!(old.monitor().await, WatchEvent::NodeRestarted);
        }
    })
    .await;
}

/// A peer that never answers (here a listener whose queue is full, so the
/// kernel drops further SYNs) fails `connect` with a timeout once
/// `handshake_timeout` has passed, not after the operating system's connect
/// timeout of minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_peer_that_never_answers_times_out() {
    within(T, async {
        let (_listener, _queued, addr) = common::silent_listener().await;
        let mut cfg = Config::default();
        cfg.handshake_timeout = Duration::from_millis(300);
        let a = Node::new(Some("a"), cfg).unwrap();
        match a.connect(&addr.to_string()).await {
            Err(e) => {
                assert!(
                    matches!(e.cause(), tether::ConnectError::Timeout(l) if *l == Duration::from_millis(300)),
                    "{e}"
                );
                assert!(e.to_string().contains(&addr.to_string()), "the error names the address: {e}");
            }
            other => panic!("expected the connect timeout, got {other:?}"),
        }
    })
    .await;
}

/// A mailbox whose actor handles nothing until its gate opens, and which can
/// say when a message was handled: how a framework with bounded mailboxes
/// plugs into the node's backpressure.
struct GatedMailbox {
    tx: UnboundedSender<(u64, Option<oneshot::Sender<()>>)>,
    delivered: Arc<AtomicU64>,
}

/// The gated actor's side: its gate, how many messages it handled, and
/// whether each was the next in order.
struct Gated {
    gate: Arc<Notify>,
    handled: Arc<AtomicU64>,
    in_order: Arc<AtomicBool>,
}

impl GatedMailbox {
    fn spawn() -> (GatedMailbox, Gated) {
        let (tx, mut rx) = unbounded_channel::<(u64, Option<oneshot::Sender<()>>)>();
        let gated = Gated { gate: Default::default(), handled: Default::default(), in_order: Arc::new(true.into()) };
        let (gate, handled, in_order) = (gated.gate.clone(), gated.handled.clone(), gated.in_order.clone());
        tokio::spawn(async move {
            gate.notified().await;
            while let Some((n, done)) = rx.recv().await {
                if n != handled.fetch_add(1, SeqCst) {
                    in_order.store(false, SeqCst);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        });
        (GatedMailbox { tx, delivered: Default::default() }, gated)
    }
}

impl tether::Mailbox<u64> for GatedMailbox {
    fn deliver(&self, msg: u64) -> Result<(), u64> {
        self.delivered.fetch_add(1, SeqCst);
        self.tx.send((msg, None)).map_err(|e| e.0 .0)
    }

    fn deliver_tracked(&self, msg: u64) -> Result<Option<BoxFuture<'static, ()>>, u64> {
        self.delivered.fetch_add(1, SeqCst);
        let (done, handled) = oneshot::channel();
        self.tx.send((msg, Some(done))).map_err(|e| e.0 .0)?;
        Ok(Some(Box::pin(async move {
            let _ = handled.await;
        })))
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        let tx = self.tx.clone();
        Box::pin(async move { tx.closed().await })
    }
}

/// An actor that handles nothing gets 511 of a route's messages (the 256th
/// tracked, and 255 more until the next one is due); the rest wait in the
/// route's window, and then the sender is told `Full`. Once the actor runs
/// again, everything arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_actor_pushes_back_on_its_senders() {
    within(T, async {
        // The pump reads about 40 KB before it stops, less than the quarter
        // of the window after which credit would go back: once full, the
        // window stays full.
        let mut cfg = Config::default();
        cfg.port_window = 256 * 1024;
        cfg.send_buffer = 16 * 1024;
        let a = Node::new(Some("a"), cfg.clone()).unwrap();
        let b = Node::new(Some("b"), cfg.clone()).unwrap();
        let b_id = a.connect(&b.listen("127.0.0.1:0").await.unwrap().to_string()).await.unwrap();
        let (mailbox, gated) = GatedMailbox::spawn();
        let delivered = mailbox.delivered.clone();
        b.export(Some("stalled"), mailbox).unwrap();
        let r: RemoteRef<u64> = a.lookup(b_id, "stalled").await.unwrap();

        const N: u64 = 100_000;
        let sender = tokio::spawn({
            let r = r.clone();
            async move {
                for i in 0..N {
                    r.tell(i).await.unwrap();
                }
            }
        });
        let (at_a, at_b) = (a.connection(b_id).unwrap(), b.connection(a.id()).unwrap());
        eventually("the actor, the window and then the sender's buffer fill", Duration::from_secs(10), || {
            delivered.load(SeqCst) == 511
                && at_b.stats().recv_buffered > cfg.port_window as usize / 2
                && at_a.stats().send_queued >= cfg.send_buffer as usize
        })
        .await;
        let refused = r.try_tell(N).unwrap_err();
        assert!(matches!(refused, TellError::Full(n) if n == N), "{refused:?}");
        assert!(!sender.is_finished());
        assert_eq!(gated.handled.load(SeqCst), 0);

        gated.gate.notify_one();
        sender.await.unwrap();
        eventually("everything is handled", Duration::from_secs(10), || gated.handled.load(SeqCst) == N).await;
        assert_eq!(delivered.load(SeqCst), N);
        assert!(gated.in_order.load(SeqCst), "messages handled out of order");
    })
    .await;
}

/// Posts queued by a runtime that then shuts down, its pump never run: the
/// outbox is set free. What it held fails, counted, and a `tell` from
/// another runtime afterwards goes through instead of waiting forever
/// behind a pump that is gone.
#[test]
fn an_outbox_whose_runtime_shut_down_sets_its_senders_free() {
    let main = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (a, _b, r, gated) = main.block_on(async {
        let (a, b, b_id) = two_nodes().await;
        let (mailbox, gated) = GatedMailbox::spawn();
        b.export(Some("stalled"), mailbox).unwrap();
        let r: RemoteRef<u64> = a.lookup(b_id, "stalled").await.unwrap();
        (a, b, r, gated)
    });

    // The loop never yields, so the pump it starts on this runtime never
    // runs before the runtime goes.
    let posting = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    const N: u64 = 100_000;
    posting.block_on(async {
        for i in 0..N {
            r.post(i).unwrap();
        }
    });
    let queued = a.stats().outbox_held as u64;
    assert!(queued > 0, "the window took all {N}: nothing was queued");
    drop(posting);

    let stats = a.stats();
    assert_eq!(stats.outbox_held, 0, "the outbox still holds messages of a pump that is gone");
    assert_eq!(stats.outbox_undelivered, queued, "each message it held is counted as undelivered");
    main.block_on(within(T, async {
        gated.gate.notify_one();
        r.tell(N).await.unwrap();
        eventually("the sent ones and the tell are handled", T, || gated.handled.load(SeqCst) == N - queued + 1).await;
    }));
}

/// Sends to an actor of the same node are paced alike: `try_tell` is `Full`
/// after 511 unhandled messages, and `tell` waits until the actor catches
/// up: it is still pending after another actor of the node answered an ask
/// meanwhile, and returns once the gate opens and the actor handled some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_local_actor_pushes_back_too() {
    within(T, async {
        let node = Node::new(Some("solo"), Config::default()).unwrap();
        let (mailbox, gated) = GatedMailbox::spawn();
        let delivered = mailbox.delivered.clone();
        let r = node.export(None, mailbox).unwrap();
        let mut accepted = 0;
        let refused = loop {
            match r.try_tell(accepted) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted <= 511, "more than the actor's share");
        };
        assert!(matches!(refused, TellError::Full(511)), "{refused:?}");
        assert_eq!(delivered.load(SeqCst), 511);

        let other = node.export(None, counter()).unwrap();
        let mut waiting = std::pin::pin!(r.tell(511));
        assert!(futures::poll!(&mut waiting).is_pending(), "tell waits while the actor is stalled");
        // The node goes on meanwhile: another actor's round trip completes,
        // and the tell still waits.
        tokio::select! {
            biased;
            done = &mut waiting => panic!("tell returned while the actor was stalled: {done:?}"),
            total = other.ask(Counter::Get, T) => assert_eq!(total.unwrap(), 0),
        }
        assert_eq!(delivered.load(SeqCst), 511, "the waiting tell delivered nothing yet");
        assert_eq!(gated.handled.load(SeqCst), 0);

        gated.gate.notify_one();
        waiting.await.unwrap();
        assert!(gated.handled.load(SeqCst) > 0, "tell returned before the actor handled anything");
        r.tell(512).await.unwrap();
        eventually("everything is handled", Duration::from_secs(10), || gated.handled.load(SeqCst) == 513).await;
        assert!(gated.in_order.load(SeqCst), "messages handled out of order");
    })
    .await;
}

/// A ref passed along a chain of five nodes, each connected only to its
/// neighbours, still reaches its actor from the fifth: the ref remembers the
/// nodes it came through, and each forwards the request one step back,
/// though none of them holds the ref any more. A monitor goes the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_passed_along_five_nodes_reaches_its_actor() {
    within(T, async {
        let nodes: Vec<Node> = (1..=5).map(|i| Node::new(Some(&format!("n{i}")), Config::default()).unwrap()).collect();
        let mut ids = vec![nodes[0].id()];
        for pair in nodes.windows(2) {
            let addr = pair[1].listen("127.0.0.1:0").await.unwrap();
            ids.push(pair[0].connect(addr).await.unwrap());
        }
        // Each of nodes 2 to 5 keeps what it is handed in a slot.
        let mut slots = Vec::new();
        for node in &nodes[1..] {
            let slot = Arc::new(std::sync::Mutex::new(None::<RemoteRef<Counter>>));
            let (tx, mut rx) = unbounded_channel::<Counter>();
            let (arrived_tx, arrived) = watch::channel(0u32);
            let keep = slot.clone();
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    if let Counter::Forward(r, _) = msg {
                        *keep.lock().unwrap() = Some(r);
                        arrived_tx.send_modify(|n| *n += 1);
                    }
                }
            });
            node.export(Some("hold"), TaskMailbox(tx)).unwrap();
            slots.push((slot, arrived));
        }
        let (sink, mut total) = counter_watched();
        let mut next = nodes[0].export(Some("counter"), sink).unwrap();
        // 1 -> 2 -> 3 -> 4 -> 5, each node handing on what it was handed.
        for i in 0..4 {
            let hold: RemoteRef<Counter> = nodes[i].lookup(ids[i + 1], "hold").await.unwrap();
            hold.tell(Counter::Forward(next, 0)).await.unwrap();
            let (slot, arrived) = &mut slots[i];
            arrived.wait_for(|&n| n == 1).await.unwrap();
            next = slot.lock().unwrap().take().expect("the ref arrived");
        }
        // Only node 5 holds the ref now; nodes 2 to 4 dropped theirs.
        let far = next;
        assert_eq!(nodes[4].peers(), vec![ids[3]], "node 5 knows only node 4");
        far.tell(Counter::Add(7)).await.unwrap();
        total.wait_for(|&t| t == 7).await.unwrap();
        assert_eq!(far.ask(Counter::Get, Duration::from_secs(5)).await.unwrap(), 7);
        // The watch travels the chain too; whether it reaches node 1 before
        // the stop or after, it reports `Stopped`.
        let watching = tokio::spawn(far.monitor());
        far.tell(Counter::Stop).await.unwrap();
        assert_eq!(watching.await.unwrap(), WatchEvent::Stopped { reason: None });
    })
    .await;
}

/// A mailbox that takes `limit` messages and refuses the rest, as an actor
/// that has just stopped does: its first refusal is its stop.
struct Refusing {
    limit: u64,
    taken: Arc<AtomicU64>,
    stopped: Arc<Notify>,
}

impl tether::Mailbox<u64> for Refusing {
    fn deliver(&self, msg: u64) -> Result<(), u64> {
        if self.taken.fetch_update(SeqCst, SeqCst, |n| (n < self.limit).then_some(n + 1)).is_ok() {
            return Ok(());
        }
        self.stopped.notify_one();
        Err(msg)
    }

    fn stopped(&self) -> BoxFuture<'static, ()> {
        let stopped = self.stopped.clone();
        Box::pin(async move { stopped.notified().await })
    }
}

/// Messages for an actor that stopped are not lost silently: each is
/// either taken by the actor or counted as unread, once — on the node of
/// the actor (the one in the route's hands when the actor refused it, those
/// read ahead, those still in the mux, those that arrive after the route
/// closed) or on the sender's (those queued when it heard of the close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_an_actor_that_stopped_are_counted_unread() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let taken = Arc::new(AtomicU64::new(0));
        b.export(Some("brief"), Refusing { limit: 3, taken: taken.clone(), stopped: Default::default() }).unwrap();
        let r: RemoteRef<u64> = a.lookup(b_id, "brief").await.unwrap();
        let at_b = b.connection(a.id()).unwrap();
        assert_eq!(at_b.stats().unread, 0);

        let mut sent = 0;
        while r.tell(sent).await.is_ok() {
            sent += 1;
            assert!(sent < 1_000_000, "the sender hears the actor stopped");
        }
        assert!(sent > 3, "sent {sent}: the first refusal came after the tells went out");
        let at_a = a.connection(b_id).unwrap();
        eventually("every message is taken or counted unread once", Duration::from_secs(10), || {
            taken.load(SeqCst) + at_b.stats().unread + at_a.stats().unread == sent
        })
        .await;
        assert_eq!(taken.load(SeqCst), 3);
        assert!(at_b.stats().unread > 0, "the message the actor refused");
    })
    .await;
}

/// A connection closed and dialed again at once is taken, even when the
/// dial reaches the peer before the close did and the peer, deciding
/// between the two, keeps the closed one: the dialer dials again instead of
/// waiting for a connection it knows is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_and_dialed_again_at_once_is_taken() {
    within(T, async {
        let (a, b, b_id) = two_nodes().await;
        let addr = b.listen("127.0.0.1:0").await.unwrap();
        for round in 0..40 {
            let old = a.connection(b_id).unwrap();
            old.close().await;
            drop(old);
            eventually("a forgets the closed connection", T, || a.peers().is_empty()).await;
            let again = tokio::time::timeout(Duration::from_secs(5), a.connect(addr)).await;
            assert!(matches!(again, Ok(Ok(id)) if id == b_id), "round {round}: {again:?}");
        }
    })
    .await;
}
