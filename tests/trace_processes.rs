//! A trace across two OS processes, through OpenTelemetry: the sender's
//! span is the parent of the span that delivers its message on the owner's
//! node, and, through ractor's own span propagation, of the handler's.
//!
//! Each process is this test binary run again (see tests/processes.rs for
//! the pattern) with a `tracing` subscriber whose `tracing-opentelemetry`
//! layer records into OpenTelemetry's in-memory exporter; at the end each
//! prints its finished spans, one `SPAN <name> <trace id> <span id>
//! <parent span id>` line each, and the parent test compares them.

use std::io::{Read, Write};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tether::trace::TracePropagation;
use tether::{Config, Node};
use tether_test_support::process::{rerun, Child};
use tether_test_support::within;
use tracing_subscriber::layer::SubscriberExt;

const ROLE: &str = "TETHER_TRACE_ROLE";
const ADDR: &str = "TETHER_TRACE_ADDR";
const CHILD_TEST: &str = "child_process";
const T: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
enum Work {
    Do(u32),
    Ask(u32, #[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<u32>),
}

struct Worker;

impl Actor for Worker {
    type Msg = Work;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Work>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Work>, msg: Work, _: &mut ()) -> Result<(), ActorProcessingErr> {
        // The handler's own span: ractor runs this inside the span current
        // when the message was cast, tether's `receive`.
        let _handle = tracing::info_span!("handle").entered();
        if let Work::Ask(n, reply) = msg {
            let _ = reply.send(n + 1);
        }
        Ok(())
    }
}

/// A subscriber that records spans in memory through OpenTelemetry; the
/// provider, to flush and read at the end.
fn install(service: &'static str) -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();
    (provider, exporter)
}

/// Prints every finished span as a `SPAN` line.
fn print_spans(provider: &SdkTracerProvider, exporter: &InMemorySpanExporter) {
    provider.force_flush().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out).unwrap();
    for s in exporter.get_finished_spans().unwrap() {
        let cx = &s.span_context;
        writeln!(out, "SPAN {} {} {} {}", s.name, cx.trace_id(), cx.span_id(), s.parent_span_id).unwrap();
    }
    writeln!(out, "DONE").unwrap();
    out.flush().unwrap();
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.trace_propagation = Some(TracePropagation::opentelemetry());
    cfg
}

/// The owner: exports the worker, serves until stdin closes, prints its
/// spans.
async fn owner() {
    let (provider, exporter) = install("owner");
    let node = Node::new(Some("owner"), config()).unwrap();
    let addr = node.listen("127.0.0.1:0").await.unwrap();
    let (worker, handle) = Actor::spawn(None, Worker, ()).await.unwrap();
    tether_ractor::export(&node, Some("worker"), worker.clone()).unwrap();
    println!("\nLISTENING {addr}");
    tokio::task::spawn_blocking(|| {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
    })
    .await
    .unwrap();
    worker.stop(None);
    handle.await.unwrap();
    node.shutdown().await;
    print_spans(&provider, &exporter);
}

/// The sender: inside one span, casts and calls the worker; prints its
/// spans.
async fn sender(addr: String) {
    let (provider, exporter) = install("sender");
    let node = Node::new(Some("sender"), config()).unwrap();
    let owner = node.connect(&addr).await.unwrap();
    let worker = tether_ractor::lookup::<Work>(&node, owner, "worker").await.unwrap();
    let request = tracing::info_span!("request");
    tracing::Instrument::instrument(
        async {
            worker.cast(Work::Do(1)).unwrap();
            let answer = ractor::call_t!(worker, Work::Ask, 10_000, 41).unwrap();
            assert_eq!(answer, 42);
        },
        request,
    )
    .await;
    node.shutdown().await;
    print_spans(&provider, &exporter);
}

#[test]
#[ignore = "a child process of the tests below"]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match role.as_str() {
        "owner" => rt.block_on(owner()),
        "sender" => rt.block_on(sender(std::env::var(ADDR).unwrap())),
        other => panic!("unknown role {other}"),
    }
}

/// A span as a child printed it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace: String,
    id: String,
    parent: String,
}

/// Reads a child's lines up to `DONE`, returning its spans; `on_line` sees
/// every line first.
async fn spans(lines: &mut tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, String)>) -> Vec<Span> {
    let mut spans = Vec::new();
    while let Some((_, line)) = lines.recv().await {
        if line == "DONE" {
            return spans;
        }
        if let Some(rest) = line.strip_prefix("SPAN ") {
            let f: Vec<&str> = rest.split(' ').collect();
            let [name, trace, id, parent] = f[..] else { panic!("bad span line {line:?}") };
            spans.push(Span { name: name.into(), trace: trace.into(), id: id.into(), parent: parent.into() });
        }
    }
    panic!("the child ended before printing its spans: {spans:?}");
}

#[tokio::test]
async fn a_handler_on_another_process_is_a_child_of_the_senders_span() {
    within(T, async {
        let (mut owner, mut owner_lines) = Child::with_lines(rerun(CHILD_TEST).env(ROLE, "owner"));
        let addr = loop {
            let (_, line) = owner_lines.recv().await.expect("the owner prints its address");
            if let Some(addr) = line.strip_prefix("LISTENING ") {
                break addr.to_owned();
            }
        };
        let (mut sender, mut sender_lines) = Child::with_lines(rerun(CHILD_TEST).env(ROLE, "sender").env(ADDR, &addr));
        let sent = spans(&mut sender_lines).await;
        assert!(sender.wait().success(), "the sender failed");
        owner.close_stdin();
        let owned = spans(&mut owner_lines).await;
        assert!(owner.wait().success(), "the owner failed");

        let request = sent.iter().find(|s| s.name == "request").unwrap_or_else(|| panic!("no request span: {sent:?}"));
        let receives: Vec<_> = owned.iter().filter(|s| s.name == "receive").collect();
        assert_eq!(receives.len(), 2, "one delivery per message: {owned:#?}");
        for r in &receives {
            assert_eq!(r.trace, request.trace, "the delivery continues the sender's trace: {owned:#?}");
            assert_eq!(r.parent, request.id, "the delivery's parent is the sender's span");
        }
        let handles: Vec<_> = owned.iter().filter(|s| s.name == "handle").collect();
        assert_eq!(handles.len(), 2, "{owned:#?}");
        for h in &handles {
            assert_eq!(h.trace, request.trace, "the handler's span is in the sender's trace");
            assert!(receives.iter().any(|r| r.id == h.parent), "the handler's parent is a delivery: {owned:#?}");
        }
    })
    .await;
}
