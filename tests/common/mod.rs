//! Helpers shared by the integration tests: connected pairs over real
//! transports, and bounded waiting for conditions no event announces.
#![allow(dead_code)]

pub mod counter;
pub mod members;

use tether::{Config, Connection};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

// Not every test binary uses both.
#[allow(unused_imports)]
pub use tether_test_support::{eventually, within};

/// The transports every channel test runs over.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Tcp,
    Unix,
    Memory,
}

pub const ALL: [Kind; 3] = [Kind::Tcp, Kind::Unix, Kind::Memory];

/// A connected pair: (dialing side, accepting side).
pub async fn pair(kind: Kind) -> (Connection, Connection) {
    pair_with(kind, Config::default(), Config::default()).await
}

pub async fn pair_with(kind: Kind, client: Config, server: Config) -> (Connection, Connection) {
    match kind {
        Kind::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (c, s) = tokio::join!(
                async { Connection::connect(TcpStream::connect(addr).await.unwrap(), client).await.unwrap() },
                async { Connection::accept(l.accept().await.unwrap().0, server).await.unwrap() },
            );
            (c, s)
        }
        Kind::Unix => {
            let dir = tempdir();
            let path = dir.join("sock");
            let l = UnixListener::bind(&path).unwrap();
            let (c, s) = tokio::join!(
                async { Connection::connect(UnixStream::connect(&path).await.unwrap(), client).await.unwrap() },
                async { Connection::accept(l.accept().await.unwrap().0, server).await.unwrap() },
            );
            let _ = std::fs::remove_dir_all(dir);
            (c, s)
        }
        Kind::Memory => {
            let (a, b) = tether::transport::memory(256 * 1024);
            let (c, s) = tokio::join!(async { Connection::connect(a, client).await.unwrap() }, async {
                Connection::accept(b, server).await.unwrap()
            },);
            (c, s)
        }
    }
}

/// A fresh private directory.
pub fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A mailbox feeding a tokio task: the smallest actor, for testing the core
/// without either framework.
pub struct TaskMailbox<M>(pub tokio::sync::mpsc::UnboundedSender<M>);

impl<M: Send + 'static> tether::Mailbox<M> for TaskMailbox<M> {
    fn deliver(&self, msg: M) -> Result<(), M> {
        self.0.send(msg).map_err(|e| e.0)
    }
    fn stopped(&self) -> futures::future::BoxFuture<'static, ()> {
        let tx = self.0.clone();
        Box::pin(async move { tx.closed().await })
    }
}

/// A TCP relay that records every byte it carries, each direction apart,
/// so a test can check what crossed the wire.
pub struct Recorder {
    pub addr: std::net::SocketAddr,
    /// Bytes towards the target, then bytes back.
    seen: [std::sync::Arc<std::sync::Mutex<Vec<u8>>>; 2],
}

impl Recorder {
    /// Relays connections made to `Recorder::addr` to `target`.
    pub async fn start(target: std::net::SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: [std::sync::Arc<std::sync::Mutex<Vec<u8>>>; 2] = Default::default();
        let logs = seen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else { continue };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::spawn(relay(ir, ow, logs[0].clone()));
                tokio::spawn(relay(or, iw, logs[1].clone()));
            }
        });
        Recorder { addr, seen }
    }

    /// Whether `needle` crossed the relay in either direction.
    pub fn saw(&self, needle: &[u8]) -> bool {
        self.seen.iter().any(|log| log.lock().unwrap().windows(needle.len()).any(|w| w == needle))
    }

    /// Bytes relayed so far, both directions.
    pub fn len(&self) -> usize {
        self.seen.iter().map(|log| log.lock().unwrap().len()).sum()
    }

    /// What crossed so far: towards the target, and back.
    pub fn streams(&self) -> (Vec<u8>, Vec<u8>) {
        (self.seen[0].lock().unwrap().clone(), self.seen[1].lock().unwrap().clone())
    }

    /// What the target has sent back so far.
    pub fn sent_back(&self) -> Vec<u8> {
        self.seen[1].lock().unwrap().clone()
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// An address where a TCP connect hangs: a listener whose queue of one is
/// filled and never accepted, so the kernel drops further SYNs. Keep all
/// three alive while it is used.
pub async fn silent_listener() -> (tokio::net::TcpListener, tokio::net::TcpStream, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let queued = tokio::net::TcpStream::connect(addr).await.unwrap();
    (listener, queued, addr)
}
