//! A panic in a connection's driver (here: in the transport it polls) ends
//! the connection with a typed error: pending receives and asks fail
//! promptly, never hang. (A panic in the supervisor actor is tested in
//! `src/conn/supervisor.rs` and `src/node/mod.rs`, where it can be injected.)

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::within;
use futures::future::BoxFuture;
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

/// A mailbox feeding a task that keeps every request and never answers; it
/// tells `arrived` of each request.
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

fn silent() -> (Silent, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (tx, mut rx) = unbounded_channel::<Req>();
    let (arrived_tx, arrived) = unbounded_channel();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(m) = rx.recv().await {
            kept.push(m);
            let _ = arrived_tx.send(());
        }
    });
    (Silent(tx), arrived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_panic_fails_pending_recv() {
    let (io, other, armed) = panicky();
    let (c, s) = tokio::join!(async { Connection::connect(io, Config::default()).await.unwrap() }, async {
        Connection::accept(other, Config::default()).await.unwrap()
    },);
    let (_tx, mut rx) = c.root::<u32, u32>().unwrap();
    let (stx, _srx) = s.root::<u32, u32>().unwrap();
    let mut pending = Box::pin(rx.recv());
    assert!(futures::poll!(&mut pending).is_pending(), "the receive waits before the panic");
    armed.store(true, Ordering::SeqCst);
    stx.send(1).await.unwrap();
    let got = within(T, pending).await;
    assert!(matches!(got, Err(RecvError::Connection(ConnectionError::DriverPanicked))), "{got:?}");
    assert!(matches!(within(T, c.closed()).await, ConnectionError::DriverPanicked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_panic_fails_pending_ask_on_a_node() {
    let a = Node::new(Some("a"), quick()).unwrap();
    let b = Node::new(Some("b"), quick()).unwrap();
    let (mailbox, mut arrived) = silent();
    b.export(Some("silent"), mailbox).unwrap();
    let (io, other, armed) = panicky();
    let (ra, rb) = tokio::join!(a.connect_with(io, tether::Role::Dial), b.connect_with(other, tether::Role::Accept));
    let b_id = ra.unwrap();
    rb.unwrap();
    let r: RemoteRef<Req> = a.lookup(b_id, "silent").await.unwrap();
    let conn = a.connection(b_id).unwrap();
    let ask = tokio::spawn(async move { r.ask(Req::Get, Duration::from_secs(60)).await });
    within(T, arrived.recv()).await.expect("the request reached the actor");
    armed.store(true, Ordering::SeqCst);
    // Something must be read for the panicking read to run.
    b.connection(a.id()).unwrap().root::<u8, u8>();
    let got = within(T, ask).await.unwrap();
    assert!(
        matches!(got, Err(AskError::Reply(tether::oneshot::RecvError::Connection(ConnectionError::DriverPanicked)))),
        "{got:?}"
    );
    assert!(matches!(within(T, conn.closed()).await, ConnectionError::DriverPanicked));
}
