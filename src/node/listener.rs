//! A node's listener: admits incoming transports within its limits, runs
//! their handshakes (TLS first, when configured) and hands new connections
//! to the node.
//!
//! Two limits protect it from floods. `max_connections` bounds everything
//! the listener holds, handshakes included. `max_handshakes` bounds the
//! transports waiting in their handshake: when one more arrives (or the
//! listener is full and some are waiting), one waiting handshake is dropped
//! to make room: the oldest of the source address holding the most. Only
//! when the listener is full of established connections is a newcomer
//! closed at once. Connections that never speak can therefore hold at most
//! `max_handshakes` slots, and only until newer arrivals push them out; a
//! burst of them, however large, cannot keep a real peer out, and a
//! sustained flood from a few addresses pushes out its own handshakes
//! first. (A flood from many addresses at a high rate can still crowd out
//! slow handshakes: that needs filtering in front of the node.)

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::inner::{NodeInner, Phase};
use crate::transport::{self, Transport};
use crate::{Accepted, ConnectError};

/// How long the accept loop pauses after `accept` fails (out of file
/// descriptors, typically), rather than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound socket a listener accepts on: TCP, or a Unix socket.
pub(crate) trait Bound: Send + 'static {
    type Stream: Transport;
    /// The next incoming stream, and who it is from.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Bound for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, Peer)> {
        TcpListener::accept(self).await.map(|(stream, addr)| (stream, Peer::Tcp(addr)))
    }
}

/// Who an incoming transport is from, for the logs and for fairness.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Peer {
    Tcp(SocketAddr),
    /// A Unix socket's peer, by the credentials the kernel gives (`None`
    /// where it does not).
    #[cfg(unix)]
    Unix {
        uid: Option<u32>,
        pid: Option<i32>,
    },
}

impl Peer {
    /// What handshakes are counted by when one must be evicted: a TCP peer's
    /// IP address; a Unix socket's user (every process of one user is one
    /// source, so one user's flood pushes out its own handshakes first).
    fn source(&self) -> Source {
        match *self {
            Peer::Tcp(addr) => Source::Ip(addr.ip()),
            #[cfg(unix)]
            Peer::Unix { uid, .. } => Source::User(uid),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            #[cfg(unix)]
            Peer::Unix { uid, pid } => {
                f.write_str("unix")?;
                if let Some(uid) = uid {
                    write!(f, " uid {uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid {pid}")?;
                }
                Ok(())
            }
        }
    }
}

/// See [`Peer::source`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    #[cfg(unix)]
    User(Option<u32>),
}

#[cfg(unix)]
impl Bound for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, Peer)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        let cred = stream.peer_cred().ok();
        let peer = Peer::Unix { uid: cred.map(|c| c.uid()), pid: cred.and_then(|c| c.pid()) };
        Ok((stream, peer))
    }
}

/// Binds a Unix socket at `path`. A socket file already there that nobody
/// accepts on (left by a process that ended without removing it) is
/// replaced; one that answers, or a file that is not a socket, is not
/// touched, and the bind fails with `AddrInUse`.
#[cfg(unix)]
pub(crate) async fn bind_unix(path: &std::path::Path) -> std::io::Result<(tokio::net::UnixListener, SocketFile)> {
    use std::os::unix::fs::FileTypeExt;
    let listener = match tokio::net::UnixListener::bind(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(path)?.file_type().is_socket();
            match tokio::net::UnixStream::connect(path).await {
                Err(c) if is_socket && c.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale socket file");
                    std::fs::remove_file(path)?;
                    tokio::net::UnixListener::bind(path)?
                }
                _ => return Err(e),
            }
        }
        bound => bound?,
    };
    let file = SocketFile::of(path)?;
    Ok((listener, file))
}

/// A Unix socket file this node made; removed when the listener stops,
/// unless it was replaced meanwhile (another listener bound the path after
/// removing ours: that one is left alone).
#[cfg(unix)]
pub(crate) struct SocketFile {
    path: std::path::PathBuf,
    /// Device and inode of the file we made.
    id: (u64, u64),
}

#[cfg(unix)]
impl SocketFile {
    fn of(path: &std::path::Path) -> std::io::Result<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile { path: path.to_owned(), id: (meta.dev(), meta.ino()) })
    }
}

#[cfg(unix)]
impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.id => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove the socket file");
                }
            }
            _ => {}
        }
    }
}

/// Counts what a listener holds.
struct Gate {
    max_connections: usize,
    max_handshakes: usize,
    /// Transports admitted and not yet released (handshaking or connected).
    live: AtomicUsize,
    waiting: Mutex<Waiting>,
    /// A "listener full" warning was logged and nothing admitted since.
    warned: AtomicBool,
}

/// Transports in their handshake, oldest first.
#[derive(Default)]
struct Waiting {
    next: u64,
    queue: VecDeque<Waiter>,
}

struct Waiter {
    ticket: u64,
    source: Source,
    /// Sending evicts the handshake.
    evict: oneshot::Sender<()>,
    /// Set when a newcomer took this one's slot over as it evicted it: its
    /// admission then releases nothing.
    slot_taken: Arc<AtomicBool>,
}

/// One admitted transport's claim on the listener's limits; released on drop.
struct Admission {
    gate: Arc<Gate>,
    ticket: u64,
    slot_taken: Arc<AtomicBool>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one more transport from `source`, evicting a waiting
    /// handshake if too many wait or the listener is full; `None` if the
    /// listener is full of established connections. The receiver fires if
    /// this one is evicted in turn.
    fn admit(self: &Arc<Self>, source: Source) -> Option<(Admission, oneshot::Receiver<()>)> {
        let mut w = self.lock();
        let full = self.live.load(Ordering::Acquire) >= self.max_connections;
        if full || w.queue.len() >= self.max_handshakes {
            match w.evict_one() {
                // The evicted handshake's slot passes to the newcomer.
                Some(slot_taken) if full => slot_taken.store(true, Ordering::Release),
                // Its task releases its slot when it stops.
                Some(_) => {
                    self.live.fetch_add(1, Ordering::AcqRel);
                }
                None => return None,
            }
        } else {
            self.live.fetch_add(1, Ordering::AcqRel);
        }
        let (evict, evicted) = oneshot::channel();
        let slot_taken = Arc::new(AtomicBool::new(false));
        let ticket = w.next;
        w.next += 1;
        w.queue.push_back(Waiter { ticket, source, evict, slot_taken: slot_taken.clone() });
        self.warned.store(false, Ordering::Relaxed);
        Some((Admission { gate: self.clone(), ticket, slot_taken }, evicted))
    }
}

impl Waiting {
    /// Evicts the oldest waiting handshake of the source with the most of
    /// them; returns its `slot_taken` flag.
    fn evict_one(&mut self) -> Option<Arc<AtomicBool>> {
        let mut counts: HashMap<Source, usize> = HashMap::new();
        for w in &self.queue {
            *counts.entry(w.source).or_default() += 1;
        }
        let most = counts.values().copied().max()?;
        let at = self.queue.iter().position(|w| counts[&w.source] == most)?;
        let victim = self.queue.remove(at)?;
        let _ = victim.evict.send(());
        Some(victim.slot_taken)
    }
}

impl Admission {
    /// The handshake is over (either way): no longer evictable. False if it
    /// was evicted meanwhile: its slot may already be someone else's.
    fn handshake_done(&self) -> bool {
        let mut w = self.gate.lock();
        let before = w.queue.len();
        w.queue.retain(|w| w.ticket != self.ticket);
        w.queue.len() < before
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let _ = self.handshake_done();
        if !self.slot_taken.load(Ordering::Acquire) {
            self.gate.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Accepts on `listener` until the node shuts down or is dropped, turning
/// each stream into a transport with `upgrade` (identity, or a TLS
/// handshake). The node keeps the task and stops it first at shutdown;
/// the listening socket closes with it, and `cleanup` is dropped then (a
/// Unix socket's file goes with it).
pub(crate) fn spawn<L, U, Fut, T>(listener: L, cleanup: impl Send + 'static, node: &Arc<NodeInner>, upgrade: U)
where
    L: Bound,
    U: Fn(L::Stream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<T>> + Send + 'static,
    T: Transport,
{
    let cfg = &node.cfg;
    let gate = Arc::new(Gate {
        max_connections: cfg.max_connections as usize,
        max_handshakes: cfg.max_handshakes as usize,
        live: AtomicUsize::new(0),
        waiting: Mutex::new(Waiting::default()),
        warned: AtomicBool::new(false),
    });
    let upgrade = Arc::new(upgrade);
    let shutdown = node.on_shutdown(Phase::Closing);
    let weak = Arc::downgrade(node);
    let task = tokio::spawn(async move {
        let _cleanup = cleanup;
        tokio::pin!(shutdown);
        // One task per admitted transport: its handshake, then (for a new
        // connection) holding its admission while the connection lives. At
        // most `max_connections`; they stop with the accept loop.
        let mut admitted = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let Some(inner) = weak.upgrade() else { break };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    drop(inner);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some((admission, evicted)) = gate.admit(peer.source()) else {
                // Once per episode: a flood must not flood the log too.
                if !gate.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%peer, limit = gate.max_connections, "incoming connections refused: listener full");
                }
                continue;
            };
            while admitted.try_join_next().is_some() {}
            admitted.spawn(handle(inner, stream, peer, upgrade.clone(), admission, evicted));
        }
    });
    node.add_listener(task);
}

/// Runs one incoming transport's handshakes; a new connection keeps its
/// admission until it ends.
async fn handle<S, U, Fut, T>(
    inner: Arc<NodeInner>,
    stream: S,
    peer: Peer,
    upgrade: Arc<U>,
    admission: Admission,
    evicted: oneshot::Receiver<()>,
) where
    S: Transport,
    U: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<T>> + Send + 'static,
    T: Transport,
{
    transport::tune(&stream);
    // One deadline for all of it: TLS, then tether's handshake.
    let limit = inner.cfg.handshake_timeout;
    // Boxed, and so freed once done: this task lives as long as its
    // connection, and the handshake's state would stay in it (kilobytes per
    // idle connection).
    let handshake = Box::pin(async {
        let io = upgrade(stream).await?;
        inner.acceptor.accept_under(io, Some(inner.supervisor())).await
    });
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(limit, handshake) => outcome.unwrap_or(Err(ConnectError::Timeout(limit))),
        _ = evicted => {
            // Debug only: a flood evicts by the thousand.
            tracing::debug!(%peer, "handshake dropped: newer connections are waiting");
            return;
        }
    };
    if !admission.handshake_done() {
        // Evicted just as it finished: the slot went to a newcomer. (A
        // resumed session needs no slot of its own, so it stays.)
        if let Ok(Accepted::New(conn)) = outcome {
            tracing::debug!(%peer, "handshake dropped: newer connections are waiting");
            tokio::spawn(async move { conn.close().await });
        }
        return;
    }
    match outcome {
        Ok(Accepted::New(conn)) => {
            let mut ended = conn.ended();
            let _ = inner.attach(conn, None);
            // The connection holds no node; neither does its admission.
            drop(inner);
            let _ = ended.wait_for(|e| *e).await;
            drop(admission);
        }
        Ok(_) => tracing::debug!(%peer, "session resumed on a new transport"),
        Err(e) => tracing::info!(%peer, error = %e, "incoming connection refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_connections: usize, max_handshakes: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_connections,
            max_handshakes,
            live: AtomicUsize::new(0),
            waiting: Mutex::default(),
            warned: AtomicBool::new(false),
        })
    }

    fn ip(n: u8) -> Source {
        Source::Ip(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn the_busiest_source_loses_its_oldest_handshake() {
        let g = gate(10, 2);
        let (_a, mut a_evicted) = g.admit(ip(1)).unwrap();
        let (b, mut b_evicted) = g.admit(ip(1)).unwrap();
        let (_c, mut c_evicted) = g.admit(ip(2)).unwrap();
        assert_eq!(a_evicted.try_recv(), Ok(()), "source 1 held both waiting handshakes: its oldest goes");
        assert!(b_evicted.try_recv().is_err() && c_evicted.try_recv().is_err());
        let (_d, _) = g.admit(ip(2)).unwrap();
        assert_eq!(b_evicted.try_recv(), Ok(()), "a tie: the oldest waiting goes");
        let (_e, _) = g.admit(ip(3)).unwrap();
        assert_eq!(c_evicted.try_recv(), Ok(()), "source 2 now holds both");
        // A finished handshake is no longer evictable, but still counts.
        drop(b);
        assert_eq!(g.live.load(Ordering::Acquire), 4, "a, c, d, e (b released its slot when dropped)");
    }

    #[test]
    fn a_full_listener_makes_room_from_waiting_handshakes_only() {
        let g = gate(2, 64);
        let (a, mut a_evicted) = g.admit(ip(1)).unwrap();
        let (b, _) = g.admit(ip(1)).unwrap();
        // Full, but a and b only wait: the oldest makes room, and its slot
        // passes to the newcomer.
        let (c, _) = g.admit(ip(2)).unwrap();
        assert_eq!(a_evicted.try_recv(), Ok(()));
        drop(a);
        assert_eq!(g.live.load(Ordering::Acquire), 2, "a's slot is c's now");
        // Full of established connections: a newcomer is refused.
        b.handshake_done();
        c.handshake_done();
        assert!(g.admit(ip(3)).is_none());
        drop(b);
        assert!(g.admit(ip(3)).is_some(), "a released slot admits again");
        assert_eq!(g.live.load(Ordering::Acquire), 1, "the probe's admission was released when dropped");
    }
}
