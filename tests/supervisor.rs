//! Each connection's recovery is owned by a ractor actor (its supervisor),
//! linked to its node's actor. A panic in the driver (here: in the
//! transport it polls) or in the supervisor ends the connection with a typed
//! error: pending receives and asks fail promptly, never hang.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{eventually, within, Kind};
use futures::future::BoxFuture;
use ractor::ActorStatus;
use serde::{Deserialize, Serialize};
use tether::{AskError, Config, Connection, ConnectionError, Mailbox, Node, RecvError, RemoteRef, ReplyPort};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

const T: Duration = Duration::from_secs(5);

/// A transport whose reads panic once armed.
struct Panicky {
    inner: DuplexStream,
    armed: Arc<AtomicBool>,
}

impl AsyncRead for Panicky {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.armed.load(Ordering::SeqCst) {
            panic!("transport panic injected for testing");
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Panicky {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn panicky() -> (Panicky, DuplexStream, Arc<AtomicBool>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let armed = Arc::new(AtomicBool::new(false));
    (Panicky { inner: a, armed: armed.clone() }, b, armed)
}

fn quick() -> Config {
    let mut cfg = Config::default();
    cfg.ping_interval = Duration::from_millis(50);
    cfg
}

/// A mailbox feeding a task that keeps every request and never answers.
struct Silent(UnboundedSender<Req>);

impl Mailbox<Req> for Silent {
    fn deliver(&self, msg: Req) -> Result<(), Req> {
        self.0.send(msg).map_err(|e| e.0)
    }
    fn stopped(&self) -> BoxFuture<'static, ()> {
        let tx = self.0.clone();
        Box::pin(async move { tx.closed().await })
    }
}

#[derive(Serialize, Deserialize, Debug)]
enum Req {
    Get(ReplyPort<u64>),
}

fn silent() -> Silent {
    let (tx, mut rx) = unbounded_channel::<Req>();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(m) = rx.recv().await {
            kept.push(m);
        }
    });
    Silent(tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_is_an_actor_that_stops_with_its_connection() {
    let (c, s) = common::pair(Kind::Tcp).await;
    let sup = c.__supervisor().expect("a supervisor actor");
    eventually("supervisor running", T, || sup.get_status() == ActorStatus::Running).await;
    assert_ne!(sup.get_id(), s.__supervisor().unwrap().get_id());
    within(T, c.close()).await;
    eventually("supervisor stopped", T, || sup.get_status() == ActorStatus::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_panic_fails_pending_recv() {
    let (io, other, armed) = panicky();
    let (c, s) = tokio::join!(async { Connection::connect(io, Config::default()).await.unwrap() }, async {
        Connection::accept(other, Config::default()).await.unwrap()
    },);
    let (_tx, mut rx) = c.root::<u32, u32>().unwrap();
    let (stx, _srx) = s.root::<u32, u32>().unwrap();
    let pending = tokio::spawn(async move { rx.recv().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    armed.store(true, Ordering::SeqCst);
    stx.send(1).await.unwrap();
    let got = within(T, pending).await.unwrap();
    assert!(matches!(got, Err(RecvError::Connection(ConnectionError::DriverPanicked))), "{got:?}");
    assert!(matches!(within(T, c.closed()).await, ConnectionError::DriverPanicked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_panic_fails_pending_ask_on_a_node() {
    let a = Node::new(Some("a"), quick());
    let b = Node::new(Some("b"), quick());
    b.export(Some("silent"), silent()).unwrap();
    let (io, other, armed) = panicky();
    let (ra, rb) = tokio::join!(a.connect_with(io, true), b.connect_with(other, false));
    let b_id = ra.unwrap();
    rb.unwrap();
    let r: RemoteRef<Req> = a.lookup(b_id, "silent").await.unwrap();
    let conn = a.connection(b_id).unwrap();
    let ask = tokio::spawn(async move { r.ask(Req::Get, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    armed.store(true, Ordering::SeqCst);
    let got = within(T, ask).await.unwrap();
    assert!(got.is_err() && !matches!(got, Err(AskError::Timeout(_))), "{got:?}");
    assert!(matches!(within(T, conn.closed()).await, ConnectionError::DriverPanicked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_panic_is_noticed_by_the_node() {
    let a = Node::new(Some("a"), quick());
    let b = Node::new(Some("b"), quick());
    b.export(Some("silent"), silent()).unwrap();
    let addr = b.listen("127.0.0.1:0").await.unwrap();
    let b_id = a.connect(&addr.to_string()).await.unwrap();
    let r: RemoteRef<Req> = a.lookup(b_id, "silent").await.unwrap();
    let conn = a.connection(b_id).unwrap();
    let sup = conn.__supervisor().unwrap();
    let ask = tokio::spawn(async move { r.ask(Req::Get, Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.__panic_supervisor();
    let got = within(T, ask).await.unwrap();
    assert!(got.is_err() && !matches!(got, Err(AskError::Timeout(_))), "{got:?}");
    assert!(matches!(within(T, conn.closed()).await, ConnectionError::SupervisorFailed));
    eventually("supervisor stopped", T, || sup.get_status() == ActorStatus::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_panic_without_a_node_fails_the_connection() {
    let (c, _s) = common::pair(Kind::Memory).await;
    let (_tx, mut rx) = c.root::<u32, u32>().unwrap();
    let pending = tokio::spawn(async move { rx.recv().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.__panic_supervisor();
    let got = within(T, pending).await.unwrap();
    assert!(matches!(got, Err(RecvError::Connection(ConnectionError::SupervisorFailed))), "{got:?}");
}
