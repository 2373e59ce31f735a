//! One trace across two processes, exported to stdout through
//! `tracing-opentelemetry`.
//!
//! ```sh
//! cargo run --example tracing --features opentelemetry
//! ```
//!
//! This process owns a ractor actor on node `owner`; it starts a second
//! process (this program again, with `--sender <addr>`) whose node `sender`
//! casts to the actor and calls it inside one span, `request`. Both nodes
//! set `Config::trace_propagation`, so each message carries the context of
//! `request`: on the owner, the span `receive` that delivers it is
//! `request`'s child, and the actor's handler span (`handle`, inside
//! `receive` through ractor's span propagation) its grandchild. Both
//! processes print their spans with OpenTelemetry's stdout exporter, the
//! sender's first: look for one `TraceId` throughout, and for `receive`'s
//! `ParentSpanId` being `request`'s `SpanId`.

use std::error::Error;
use std::process::Command;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tether::trace::TracePropagation;
use tether::{Config, Node};
use tracing_subscriber::layer::SubscriberExt;

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
        let _handle = tracing::info_span!("handle").entered();
        if let Work::Ask(n, reply) = msg {
            let _ = reply.send(n + 1);
        }
        Ok(())
    }
}

/// Spans go to stdout, in batches, when the provider is flushed (the
/// owner's only once the sender has printed its own, so the two do not mix).
fn install(service: &'static str) -> SdkTracerProvider {
    let batches = BatchConfigBuilder::default().with_scheduled_delay(Duration::from_secs(60)).build();
    let stdout =
        BatchSpanProcessor::builder(opentelemetry_stdout::SpanExporter::default()).with_batch_config(batches).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(stdout)
        .with_resource(Resource::builder_empty().with_service_name(service).build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).expect("the only subscriber");
    provider
}

fn config() -> Config {
    let mut cfg = Config::default();
    // Off by default: every message then carries its sender's context.
    cfg.trace_propagation = Some(TracePropagation::opentelemetry());
    cfg
}

async fn owner() -> Result<(), Box<dyn Error>> {
    let provider = install("owner");
    let node = Node::new(Some("owner"), config())?;
    let addr = node.listen("127.0.0.1:0").await?;
    let (worker, handle) = Actor::spawn(None, Worker, ()).await?;
    tether_ractor::export(&node, Some("worker"), worker.clone())?;

    let exe = std::env::current_exe()?;
    let status =
        tokio::task::spawn_blocking(move || Command::new(exe).args(["--sender", &addr.to_string()]).status()).await??;
    if !status.success() {
        return Err(format!("the sender failed: {status}").into());
    }
    worker.stop(None);
    handle.await?;
    node.shutdown().await;
    provider.shutdown()?;
    Ok(())
}

async fn sender(addr: &str) -> Result<(), Box<dyn Error>> {
    let provider = install("sender");
    let node = Node::new(Some("sender"), config())?;
    let owner = node.connect(addr).await?;
    let worker = tether_ractor::lookup::<Work>(&node, owner, "worker").await?;
    let request = tracing::info_span!("request");
    let answer = tracing::Instrument::instrument(
        async {
            worker.cast(Work::Do(1))?;
            Ok::<_, Box<dyn Error>>(ractor::call_t!(worker, Work::Ask, 10_000, 41)?)
        },
        request,
    )
    .await?;
    println!("the worker answered {answer}");
    node.shutdown().await;
    provider.shutdown()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--sender") => rt.block_on(sender(args.get(2).ok_or("--sender needs the owner's address")?)),
        _ => rt.block_on(owner()),
    }
}
