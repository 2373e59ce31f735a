//! Trace propagation through the core, without a tracing backend: a
//! propagator that names a span by its `tracing` id stands in for
//! OpenTelemetry (tests/trace_processes.rs runs the real one across
//! processes). Two nodes over real TCP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tether::trace::{Propagator, TraceContext, TracePropagation};
use tether::{Config, Mailbox, Node, RemoteRef};
use tether_test_support::within;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(20);

/// The trace id every context of these tests carries.
const TRACE: [u8; 16] = *b"tether-trace-id!";

/// Calls its current span's `tracing` id the span id, and records which
/// span it was asked to make the child of which context.
#[derive(Clone, Default)]
struct ById {
    parents: Arc<Mutex<Vec<(u64, TraceContext)>>>,
}

impl Propagator for ById {
    fn current(&self) -> Option<TraceContext> {
        let id = tracing::Span::current().id()?;
        Some(TraceContext { trace_id: TRACE, span_id: id.into_u64().to_be_bytes(), flags: 1 })
    }

    fn set_parent(&self, span: &tracing::Span, parent: &TraceContext) {
        let id = span.id().expect("the receive span is enabled").into_u64();
        self.parents.lock().unwrap().push((id, *parent));
    }
}

impl ById {
    /// The context the span `child` was made a child of.
    fn parent_of(&self, child: u64) -> Option<TraceContext> {
        self.parents.lock().unwrap().iter().find(|(id, _)| *id == child).map(|(_, p)| *p)
    }
}

#[derive(Serialize, Deserialize)]
enum Msg {
    Small(u32),
    /// Far larger than a chunk: its context must survive reassembly.
    Large(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Carries a channel end: the context follows the port table.
    WithReply(tether::oneshot::Sender<u32>),
}

/// What the actor saw of each message: the span current at delivery (its
/// `tracing` id and name), if any.
type Seen = (Msg, Option<(u64, &'static str)>);

/// Hands what it sees to the test; a message it tracks counts as handled
/// only once the gate is open, so a closed gate stalls the route.
struct Probe(UnboundedSender<Seen>, watch::Receiver<bool>);

impl Mailbox<Msg> for Probe {
    fn deliver(&self, msg: Msg) -> Result<(), Msg> {
        let span = tracing::Span::current();
        let seen = span.id().map(|id| (id.into_u64(), span.metadata().map_or("", |m| m.name())));
        self.0.send((msg, seen)).map_err(|e| e.0 .0)
    }
    fn deliver_tracked(&self, msg: Msg) -> Result<Option<futures::future::BoxFuture<'static, ()>>, Msg> {
        self.deliver(msg)?;
        let mut gate = self.1.clone();
        Ok(Some(Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
        })))
    }
    fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
        let tx = self.0.clone();
        Box::pin(async move { tx.closed().await })
    }
}

struct Pair {
    a: Node,
    b: Node,
    r: RemoteRef<Msg>,
    seen: UnboundedReceiver<Seen>,
    on_a: ById,
    on_b: ById,
    gate: watch::Sender<bool>,
}

/// Node A sends, node B owns the probe; each propagates or not.
async fn pair(a_propagates: bool, b_propagates: bool) -> Pair {
    let (on_a, on_b) = (ById::default(), ById::default());
    let cfg = |on: bool, p: &ById| {
        let mut cfg = Config::default();
        cfg.trace_propagation = on.then(|| TracePropagation::new(p.clone()));
        cfg
    };
    let a = Node::new(Some("a"), cfg(a_propagates, &on_a)).unwrap();
    let b = Node::new(Some("b"), cfg(b_propagates, &on_b)).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let (tx, seen) = unbounded_channel();
    let (gate, open) = watch::channel(true);
    b.export(Some("probe"), Probe(tx, open)).unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    let r = a.lookup::<Msg>(b_id, "probe").await.unwrap();
    Pair { a, b, r, seen, on_a, on_b, gate }
}

fn subscriber() {
    // Spans need a subscriber to have ids; this binary's tests share it.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
}

/// Every kind of send carries the sender's span: the actor gets each
/// message inside a `receive` span made the child of that span's context.
#[test]
fn the_senders_span_is_the_parent_of_the_delivery() {
    subscriber();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(within(T, async {
        let mut p = pair(true, true).await;
        let request = tracing::info_span!("request");
        let request_id = request.id().unwrap().into_u64();
        // Posts to an actor that stalls its route wait in the outbox, and
        // are sent later from the outbox's task: still in this span. Eight
        // MiB is more than the route's window and send buffer take.
        p.gate.send_replace(false);
        request.in_scope(|| {
            for _ in 0..8 {
                p.r.post(Msg::Large(vec![1; 1024 * 1024])).map_err(|_| "post").unwrap();
            }
            p.r.post(Msg::Small(0)).map_err(|_| "post").unwrap();
        });
        assert!(p.a.stats().outbox_held >= 1, "the last post waits in the outbox");
        p.gate.send_replace(true);
        let (reply, answer) = tether::oneshot::channel();
        tracing::Instrument::instrument(
            async {
                p.r.tell(Msg::Small(1)).await.map_err(|_| "tell").unwrap();
                p.r.tell(Msg::Large(vec![7; 300 * 1024])).await.map_err(|_| "tell").unwrap();
                p.r.tell(Msg::WithReply(reply)).await.map_err(|_| "tell").unwrap();
            },
            request.clone(),
        )
        .await;
        let posted = std::iter::repeat_n("posted", 8).chain(["queued"]);
        for expect in posted.chain(["small", "large", "with a reply"]) {
            let (msg, span) = p.seen.recv().await.unwrap();
            let (id, name) = span.unwrap_or_else(|| panic!("the {expect} message was delivered outside any span"));
            assert_eq!(name, "receive", "{expect}");
            let parent = p.on_b.parent_of(id).unwrap_or_else(|| panic!("no parent set for the {expect} message"));
            assert_eq!(parent.trace_id, TRACE);
            assert_eq!(parent.span_id, request_id.to_be_bytes(), "the {expect} message's parent is the request span");
            if let Msg::WithReply(reply) = msg {
                reply.send(5).unwrap();
            }
        }
        assert_eq!(answer.await.unwrap(), 5, "the reply port carried with a context works");
        assert!(p.on_a.parents.lock().unwrap().is_empty(), "A received no message of an actor");
        p.a.shutdown().await;
        p.b.shutdown().await;
    }));
}

/// A sender outside any span sends no context; a node that does not
/// propagate sends none and ignores the ones it gets.
#[test]
fn without_a_span_or_with_propagation_off_nothing_is_continued() {
    subscriber();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(within(T, async {
        for (a_on, b_on, in_span) in [(true, true, false), (false, true, true), (true, false, true)] {
            let mut p = pair(a_on, b_on).await;
            let request = if in_span { tracing::info_span!("request") } else { tracing::Span::none() };
            tracing::Instrument::instrument(p.r.tell(Msg::Small(1)), request).await.map_err(|_| "tell").unwrap();
            let (_, span) = p.seen.recv().await.unwrap();
            let name = span.map(|(_, name)| name);
            assert_ne!(name, Some("receive"), "A on {a_on}, B on {b_on}, in a span {in_span}");
            assert!(p.on_b.parents.lock().unwrap().is_empty());
            p.a.shutdown().await;
            p.b.shutdown().await;
        }
    }));
}
