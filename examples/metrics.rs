//! A node's metrics in Prometheus format: two nodes in one process, a
//! ractor counter exported by one and driven by the other with casts and
//! calls, and the Prometheus exporter of the `metrics` crate serving what
//! the nodes record.
//!
//! ```sh
//! cargo run --example metrics --features metrics                    # a few seconds, then the tether lines
//! cargo run --example metrics --features metrics -- 127.0.0.1:9000 --serve   # until killed
//! curl -s http://127.0.0.1:9000/metrics | grep ^tether_
//! ```
//!
//! The application installs the recorder (here the Prometheus exporter, with
//! its HTTP listener) before it makes its nodes; each node then records its
//! own and its connections' counters every `Config::metrics_interval`. The
//! series are labelled by node (`node="a"`), by peer for a connection's
//! (`peer="b"`), and by name for an exported actor's (`actor="counter"`).

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tether::{Config, Node};

struct Counter;

#[derive(Serialize, Deserialize)]
enum CounterMessage {
    Add(i64),
    Get(#[serde(with = "tether_ractor::rpc_reply")] RpcReplyPort<i64>),
}

impl Actor for Counter {
    type Msg = CounterMessage;
    type State = i64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<i64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, _: ActorRef<Self::Msg>, msg: Self::Msg, count: &mut i64) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMessage::Add(n) => *count += n,
            CounterMessage::Get(reply) => {
                let _ = reply.send(*count);
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = match args.next() {
        Some(addr) => addr.parse()?,
        None => free_port()?,
    };
    let serve = args.next().as_deref() == Some("--serve");

    // The recorder first: series recorded before it is installed go nowhere.
    let (recorder, exporter) = PrometheusBuilder::new().with_http_listener(listen).build()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    tokio::spawn(exporter);
    println!("serving metrics on http://{listen}/metrics");

    // Sampled every 200 ms and pinged as often, so a short run shows it all.
    let mut cfg = Config::default();
    cfg.metrics_interval = Duration::from_millis(200);
    cfg.ping_interval = Duration::from_millis(200);
    let b = Node::new(Some("b"), cfg.clone())?;
    let addr = b.listen("127.0.0.1:0").await?;
    let (counter, running) = Actor::spawn(None, Counter, ()).await?;
    tether_ractor::export(&b, Some("counter"), counter.clone())?;

    let a = Node::new(Some("a"), cfg)?;
    let b_id = a.connect(&addr.to_string()).await?;
    let remote = tether_ractor::lookup::<CounterMessage>(&a, b_id, "counter").await?;

    // Ten rounds a second of 100 casts and a call, for 3 s (or for ever).
    let mut rounds = 0u64;
    while serve || rounds < 30 {
        for _ in 0..100 {
            remote.send_message(CounterMessage::Add(1))?;
        }
        let count = call_t!(remote, CounterMessage::Get, 5000)?;
        rounds += 1;
        if rounds.is_multiple_of(10) {
            println!("count is {count}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A node shutting down takes a last sample: what is printed counts
    // every message above.
    a.shutdown().await;
    b.shutdown().await;
    let scraped = handle.render();
    for line in
        scraped.lines().filter(|l| l.starts_with("tether_") && (l.contains("peer=\"b\"") || l.contains("actor=")))
    {
        println!("{line}");
    }
    counter.stop(None);
    running.await?;
    println!("done");
    Ok(())
}

/// A port free on 127.0.0.1 now: the exporter binds the address it is
/// given and does not tell which port 0 became.
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
