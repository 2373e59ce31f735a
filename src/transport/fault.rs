//! Fault injection, for testing a system built on tether against a bad
//! network (feature `fault-injection`).
//!
//! [`Faulty`] wraps any [`Transport`]; a [`FaultController`] scripts its
//! faults at runtime, from the test, while the connection runs:
//!
//! | fault | what the wrapped end sees |
//! |---|---|
//! | [`cut`](FaultController::cut) | reads and writes fail at once with `ConnectionReset`; the transport is dropped when the connection gives up on it |
//! | [`black_hole`](FaultController::black_hole) | bytes vanish: writes succeed and are discarded, incoming bytes are drained and discarded, reads never complete; no FIN, no RST. [`heal`](FaultController::heal) lets new bytes through again (the lost ones stay lost) |
//! | [`pause`](FaultController::pause) | bytes stop but are not lost: reads and writes wait until [`heal`](FaultController::heal), as on a TCP connection across a partition that heals before either end gives up |
//! | [`delay`](FaultController::delay) | incoming bytes are delivered this much later than they arrived |
//! | [`throttle`](FaultController::throttle) | incoming bytes are delivered at most this fast |
//! | [`corrupt_next`](FaultController::corrupt_next), [`corrupt_after`](FaultController::corrupt_after) | incoming bytes have every bit inverted |
//!
//! Delay and throttle hold at most 256 KiB read but not yet delivered; beyond
//! that the wrapper stops reading, so the sender backs up as it would behind
//! a slow link. Nothing is buffered without bound.
//!
//! [`Proxy`] puts the same faults between two processes: it listens on
//! `127.0.0.1`, forwards each connection to a target address, and gives a
//! controller per connection and one for the whole link.
//!
//! # Example
//!
//! A partition is noticed within the idle timeout:
//!
//! ```
//! use std::time::Duration;
//!
//! use tether::transport::fault::Proxy;
//! use tether::{Config, Connection, ConnectionError, ProtocolError};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg = Config::default();
//! cfg.ping_interval = Duration::from_millis(50);
//! cfg.idle_timeout = Duration::from_millis(300);
//!
//! // The server listens as usual; the client dials the proxy instead.
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let proxy = Proxy::start(listener.local_addr()?).await?;
//! let (client, server) = tokio::join!(
//!     async { Connection::connect(TcpStream::connect(proxy.local_addr()).await?, cfg.clone()).await },
//!     async { Connection::accept(listener.accept().await?.0, cfg.clone()).await },
//! );
//! let (client, _server) = (client?, server?);
//!
//! // Nothing passes any more, and nothing is closed either.
//! proxy.connection(0).await.black_hole();
//! let err = client.closed().await;
//! assert!(matches!(err, ConnectionError::Protocol(ProtocolError::Timeout(_))), "{err}");
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::Transport;

/// Most bytes read from the inner transport and not yet delivered while
/// delaying or throttling; the wrapper stops reading beyond it.
const MAX_HELD: usize = 256 * 1024;
/// Bytes read from the inner transport at once on the delaying path.
const READ_CHUNK: usize = 16 * 1024;

const READER: usize = 0;
const WRITER: usize = 1;

/// Scripts the faults of every [`Faulty`] transport made with it.
///
/// Cheap to clone; all clones control the same transports. Changes apply at
/// once, also to reads and writes already waiting.
#[derive(Clone, Default)]
pub struct FaultController {
    script: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    /// Bumped by `cut`: a transport made under an older epoch is cut.
    cut_epoch: u64,
    black_hole: bool,
    paused: bool,
    delay: Duration,
    /// Bytes per second; `None` is unlimited.
    throttle: Option<u64>,
    corrupt_skip: u64,
    corrupt_left: u64,
    corrupted: u64,
    discarded: u64,
    next_slot: u64,
    /// The tasks waiting on each transport: [reader, writer].
    waiting: HashMap<u64, [Option<Waker>; 2]>,
}

impl Script {
    /// Wakes every waiting task so it sees the new script.
    fn changed(&mut self) {
        for slots in self.waiting.values_mut() {
            slots.iter_mut().filter_map(Option::take).for_each(Waker::wake);
        }
    }
}

impl std::fmt::Debug for FaultController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("FaultController")
            .field("cuts", &s.cut_epoch)
            .field("black_hole", &s.black_hole)
            .field("paused", &s.paused)
            .field("delay", &s.delay)
            .field("throttle", &s.throttle)
            .field("corrupt_left", &s.corrupt_left)
            .finish()
    }
}

impl FaultController {
    /// A controller with no faults scripted.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        // The script stays consistent under every early exit, so a poisoned
        // lock is still good to use.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Script)) {
        let mut s = self.lock();
        f(&mut s);
        s.changed();
    }

    /// Cuts every transport made with this controller so far: from now on
    /// their reads and writes fail with `ConnectionReset`. Final for those
    /// transports; ones wrapped later are not affected.
    pub fn cut(&self) {
        self.update(|s| s.cut_epoch += 1);
    }

    /// Makes bytes vanish in both directions, as on a link that drops every
    /// packet: writes succeed and are discarded, incoming bytes are drained
    /// and discarded, reads wait. Neither end sees a FIN or RST; only a
    /// timeout can tell.
    pub fn black_hole(&self) {
        self.update(|s| s.black_hole = true);
    }

    /// Stops bytes in both directions without losing any: reads and writes
    /// wait (the peer's writes back up once socket buffers fill) until
    /// [`heal`](Self::heal). Neither end sees a FIN or RST.
    pub fn pause(&self) {
        self.update(|s| s.paused = true);
    }

    /// Ends a [`black_hole`](Self::black_hole) or [`pause`](Self::pause):
    /// bytes pass again.
    ///
    /// Bytes discarded by a black hole stay lost, so the stream then has a
    /// gap no TCP connection would ever show: what follows may fail to
    /// decode, or, if whole frames were lost, a message may be missing
    /// without any error. Use [`pause`](Self::pause) for a partition that
    /// heals.
    pub fn heal(&self) {
        self.update(|s| {
            s.black_hole = false;
            s.paused = false;
        });
    }

    /// Delivers each incoming byte `delay` after it arrived (zero: no delay).
    /// Applies to bytes arriving from now on.
    pub fn delay(&self, delay: Duration) {
        self.update(|s| s.delay = delay);
    }

    /// Delivers incoming bytes at most `bytes_per_sec` fast (at least 1).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.update(|s| s.throttle = Some(bytes_per_sec.max(1)));
    }

    /// Removes a [`throttle`](Self::throttle).
    pub fn unthrottle(&self) {
        self.update(|s| s.throttle = None);
    }

    /// Inverts every bit of the next `n` incoming bytes.
    pub fn corrupt_next(&self, n: u64) {
        self.corrupt_after(0, n);
    }

    /// Leaves the next `skip` incoming bytes intact, then inverts every bit
    /// of the `n` after them: corruption at an offset from now.
    pub fn corrupt_after(&self, skip: u64, n: u64) {
        self.update(|s| {
            s.corrupt_skip = skip;
            s.corrupt_left = n;
        });
    }

    /// Removes every fault but cuts: heals, and ends delay, throttle and
    /// pending corruption.
    pub fn clear(&self) {
        self.update(|s| {
            s.black_hole = false;
            s.paused = false;
            s.delay = Duration::ZERO;
            s.throttle = None;
            s.corrupt_skip = 0;
            s.corrupt_left = 0;
        });
    }

    /// Bytes corrupted so far.
    pub fn corrupted(&self) -> u64 {
        self.lock().corrupted
    }

    /// Bytes discarded by black holes so far, both directions together.
    pub fn discarded(&self) -> u64 {
        self.lock().discarded
    }
}

/// One controller's hold on one transport.
struct Link {
    ctl: FaultController,
    slot: u64,
    /// The controller's cut epoch when the transport was wrapped.
    epoch: u64,
    /// What corruption XORs with; distinct per link, so two links
    /// corrupting the same byte do not undo each other.
    mask: u8,
}

/// The faults in force on one transport, all its controllers combined.
struct View {
    cut: bool,
    black_hole: bool,
    paused: bool,
    delay: Duration,
    throttle: Option<u64>,
}

enum Held {
    Data(Bytes),
    Eof,
    Err(io::Error),
}

/// A transport whose faults a [`FaultController`] scripts.
///
/// Faults of the read side (delay, throttle, corruption) apply to bytes
/// this end receives; cut and black hole apply to both directions. Wrap
/// both ends, or use a [`Proxy`], to disturb both directions.
pub struct Faulty<T> {
    inner: T,
    links: Vec<Link>,
    /// Bytes (and a final EOF or error) read from `inner`, each with the
    /// instant it may be delivered.
    held: VecDeque<(Instant, Held)>,
    held_bytes: usize,
    /// An EOF or error of `inner` is in `held`: read no further.
    inner_ended: bool,
    /// Throttle: when the next bytes may be delivered.
    next_free: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    scratch: Vec<u8>,
}

impl<T> std::fmt::Debug for Faulty<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty").field("held_bytes", &self.held_bytes).finish_non_exhaustive()
    }
}

impl<T: Transport> Faulty<T> {
    /// Wraps `inner`; `controller` scripts its faults.
    pub fn new(inner: T, controller: &FaultController) -> Self {
        Self::with_controllers(inner, std::slice::from_ref(controller))
    }

    /// Wraps `inner` with a new controller, returned beside it.
    pub fn wrap(inner: T) -> (Self, FaultController) {
        let ctl = FaultController::new();
        (Self::new(inner, &ctl), ctl)
    }

    /// Wraps `inner` under several controllers: it is cut or black-holed if
    /// any says so, delays add up, the lowest throttle wins.
    fn with_controllers(inner: T, controllers: &[FaultController]) -> Self {
        // Options such as TCP_NODELAY are applied here, since the connection
        // only sees the wrapper.
        super::tune(&inner);
        let links = controllers
            .iter()
            .zip([0xff, 0x5a, 0x3c, 0x0f].into_iter().cycle())
            .map(|(ctl, mask)| {
                let mut s = ctl.lock();
                let slot = s.next_slot;
                s.next_slot += 1;
                s.waiting.insert(slot, [None, None]);
                Link { ctl: ctl.clone(), slot, epoch: s.cut_epoch, mask }
            })
            .collect();
        Faulty {
            inner,
            links,
            held: VecDeque::new(),
            held_bytes: 0,
            inner_ended: false,
            next_free: None,
            timer: None,
            scratch: Vec::new(),
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T> Faulty<T> {
    fn view(&self) -> View {
        let mut v = View { cut: false, black_hole: false, paused: false, delay: Duration::ZERO, throttle: None };
        for link in &self.links {
            let s = link.ctl.lock();
            v.cut |= s.cut_epoch != link.epoch;
            v.black_hole |= s.black_hole;
            v.paused |= s.paused;
            v.delay += s.delay;
            v.throttle = match (v.throttle, s.throttle) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        v
    }

    /// Registers the task to be woken when the script changes.
    fn park(&self, side: usize, cx: &Context<'_>) {
        for link in &self.links {
            let mut s = link.ctl.lock();
            if let Some(slots) = s.waiting.get_mut(&link.slot) {
                match &mut slots[side] {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
            }
        }
    }

    fn corrupt(&self, bytes: &mut [u8]) {
        for link in &self.links {
            let mut s = link.ctl.lock();
            if s.corrupt_left == 0 {
                continue;
            }
            let skip = s.corrupt_skip.min(bytes.len() as u64);
            s.corrupt_skip -= skip;
            let rest = &mut bytes[skip as usize..];
            let n = s.corrupt_left.min(rest.len() as u64);
            rest[..n as usize].iter_mut().for_each(|b| *b ^= link.mask);
            s.corrupt_left -= n;
            s.corrupted += n;
        }
    }

    fn count_discarded(&self, n: usize) {
        for link in &self.links {
            link.ctl.lock().discarded += n as u64;
        }
    }

    /// Waits until `at`; false if the task was parked.
    fn wait_until(&mut self, at: Instant, cx: &mut Context<'_>) -> bool {
        let timer = match &mut self.timer {
            Some(t) => {
                t.as_mut().reset(at);
                t
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        timer.as_mut().poll(cx).is_ready()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "connection cut by fault injection")
}

impl<T: AsyncRead + Unpin> Faulty<T> {
    /// Black hole: reads and discards whatever arrives, so the peer's writes
    /// keep succeeding, until `inner` has nothing more for now.
    fn drain(&mut self, cx: &mut Context<'_>) {
        self.held.clear();
        self.held_bytes = 0;
        self.inner_ended = false;
        self.scratch.resize(READ_CHUNK, 0);
        loop {
            let mut rb = ReadBuf::new(&mut self.scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                    let n = rb.filled().len();
                    self.count_discarded(n);
                }
                // An end is not passed on either; after a heal the next read
                // of `inner` reports it again.
                _ => return,
            }
        }
    }

    /// Reads from `inner` into `held` while there is room.
    fn fill(&mut self, cx: &mut Context<'_>, delay: Duration) {
        self.scratch.resize(READ_CHUNK, 0);
        while !self.inner_ended && self.held_bytes < MAX_HELD {
            let room = READ_CHUNK.min(MAX_HELD - self.held_bytes);
            let mut rb = ReadBuf::new(&mut self.scratch[..room]);
            let got = match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return,
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Held::Eof,
                Poll::Ready(Ok(())) => Held::Data(Bytes::copy_from_slice(rb.filled())),
                Poll::Ready(Err(e)) => Held::Err(e),
            };
            match &got {
                Held::Data(b) => self.held_bytes += b.len(),
                _ => self.inner_ended = true,
            }
            self.held.push_back((Instant::now() + delay, got));
        }
    }

    /// Hands out the first held item once it is due.
    fn deliver(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>, throttle: Option<u64>) -> Poll<io::Result<()>> {
        loop {
            let Some((at, _)) = self.held.front() else { return Poll::Pending };
            let mut due = *at;
            if let (Some(_), Some(free)) = (throttle, self.next_free) {
                due = due.max(free);
            }
            let now = Instant::now();
            if now < due {
                if self.wait_until(due, cx) {
                    continue;
                }
                return Poll::Pending;
            }
            let Some((at, item)) = self.held.pop_front() else { return Poll::Pending };
            return Poll::Ready(match item {
                Held::Data(mut bytes) => {
                    // Under a throttle, at most 20 ms worth at a time, so
                    // the pace is even.
                    let cap = throttle.map_or(usize::MAX, |rate| (rate / 50).max(1) as usize);
                    let n = bytes.len().min(buf.remaining()).min(cap);
                    let start = buf.filled().len();
                    buf.put_slice(&bytes[..n]);
                    self.corrupt(&mut buf.filled_mut()[start..]);
                    bytes.advance(n);
                    self.held_bytes -= n;
                    if !bytes.is_empty() {
                        self.held.push_front((at, Held::Data(bytes)));
                    }
                    if let Some(rate) = throttle {
                        let from = self.next_free.map_or(now, |f| f.max(now));
                        self.next_free = Some(from + Duration::from_secs_f64(n as f64 / rate as f64));
                    }
                    Ok(())
                }
                Held::Eof => {
                    self.inner_ended = false;
                    Ok(())
                }
                Held::Err(e) => {
                    self.inner_ended = false;
                    Err(e)
                }
            });
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Faulty<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let view = this.view();
        if view.cut {
            return Poll::Ready(Err(cut_error()));
        }
        if view.black_hole {
            this.drain(cx);
            this.park(READER, cx);
            return Poll::Pending;
        }
        if view.paused {
            this.park(READER, cx);
            return Poll::Pending;
        }
        if this.held.is_empty() && view.delay.is_zero() && view.throttle.is_none() {
            let start = buf.filled().len();
            return match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Pending => {
                    this.park(READER, cx);
                    Poll::Pending
                }
                Poll::Ready(Ok(())) => {
                    this.corrupt(&mut buf.filled_mut()[start..]);
                    Poll::Ready(Ok(()))
                }
                ready => ready,
            };
        }
        if view.throttle.is_none() {
            this.next_free = None;
        }
        this.fill(cx, view.delay);
        let res = this.deliver(cx, buf, view.throttle);
        if res.is_pending() {
            this.park(READER, cx);
        }
        res
    }
}

/// What the script lets a write-side operation do.
enum Gate {
    Pass,
    Cut,
    Hole,
    Wait,
}

impl<T: AsyncWrite + Unpin> Faulty<T> {
    fn gate(&self) -> Gate {
        match self.view() {
            View { cut: true, .. } => Gate::Cut,
            View { black_hole: true, .. } => Gate::Hole,
            View { paused: true, .. } => Gate::Wait,
            _ => Gate::Pass,
        }
    }

    /// Runs a write-side operation on `inner`.
    fn pass<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let res = op(Pin::new(&mut self.inner), cx);
        if res.is_pending() {
            // A cut or black hole must also release a writer the peer
            // stopped reading from.
            self.park(WRITER, cx);
        }
        res
    }

    fn wait<R>(&self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        self.park(WRITER, cx);
        Poll::Pending
    }

    fn discard(&self, n: usize) -> Poll<io::Result<usize>> {
        self.count_discarded(n);
        Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Faulty<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.gate() {
            Gate::Cut => Poll::Ready(Err(cut_error())),
            Gate::Hole => this.discard(buf.len()),
            Gate::Wait => this.wait(cx),
            Gate::Pass => this.pass(cx, |io, cx| io.poll_write(cx, buf)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.gate() {
            Gate::Cut => Poll::Ready(Err(cut_error())),
            Gate::Hole => this.discard(bufs.iter().map(|b| b.len()).sum()),
            Gate::Wait => this.wait(cx),
            Gate::Pass => this.pass(cx, |io, cx| io.poll_write_vectored(cx, bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.gate() {
            Gate::Cut => Poll::Ready(Err(cut_error())),
            Gate::Hole => Poll::Ready(Ok(())),
            Gate::Wait => this.wait(cx),
            Gate::Pass => this.pass(cx, |io, cx| io.poll_flush(cx)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.gate() {
            Gate::Cut => Poll::Ready(Err(cut_error())),
            // A black hole sends no FIN.
            Gate::Hole => Poll::Ready(Ok(())),
            Gate::Wait => this.wait(cx),
            Gate::Pass => this.pass(cx, |io, cx| io.poll_shutdown(cx)),
        }
    }
}

impl<T> Drop for Faulty<T> {
    fn drop(&mut self) {
        for link in &self.links {
            link.ctl.lock().waiting.remove(&link.slot);
        }
    }
}

/// A TCP proxy on `127.0.0.1` that injects faults between two processes.
///
/// Each accepted connection is forwarded to the target through [`Faulty`]
/// wrappers on both sockets, so every fault applies to both directions
/// (corruption to whichever direction delivers bytes next). Each connection
/// has its own controller ([`connection`](Self::connection)); the
/// [`link`](Self::link) controller acts on all of them, present and future.
/// Dropping the proxy stops it and closes every connection through it.
pub struct Proxy {
    addr: SocketAddr,
    link: FaultController,
    conns: watch::Sender<Vec<FaultController>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).field("connections", &self.conns.borrow().len()).finish()
    }
}

impl Proxy {
    /// Listens on `127.0.0.1` (a free port) and forwards to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let link = FaultController::new();
        let conns = watch::Sender::new(Vec::new());
        let task = tokio::spawn(accept_loop(listener, target, link.clone(), conns.clone()));
        Ok(Proxy { addr, link, conns, task })
    }

    /// Where to connect instead of the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The controller of every connection through the proxy, including
    /// later ones; its faults combine with each connection's own.
    pub fn link(&self) -> &FaultController {
        &self.link
    }

    /// The controller of the `index`-th connection accepted (from 0),
    /// waiting until it has been accepted.
    pub async fn connection(&self, index: usize) -> FaultController {
        let mut rx = self.conns.subscribe();
        let conns = rx.wait_for(|c| c.len() > index).await.expect("the proxy holds the sender");
        conns[index].clone()
    }

    /// Controllers of all connections accepted so far, in order.
    pub fn connections(&self) -> Vec<FaultController> {
        self.conns.borrow().clone()
    }

    /// Cuts every connection through the proxy now; later ones pass.
    pub fn cut_all(&self) {
        self.link.cut();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    link: FaultController,
    conns: watch::Sender<Vec<FaultController>>,
) {
    // Owned here, so aborting the accept loop closes every connection.
    let mut pumps = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let client = match accepted {
                    Ok((client, _)) => client,
                    Err(e) => {
                        tracing::debug!(error = %e, "fault proxy: accept failed");
                        // Out of file descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let ctl = FaultController::new();
                let controllers = [ctl.clone(), link.clone()];
                let mut client = Faulty::with_controllers(client, &controllers);
                conns.send_modify(|c| c.push(ctl));
                pumps.spawn(async move {
                    let server = match TcpStream::connect(target).await {
                        Ok(server) => server,
                        Err(e) => {
                            tracing::debug!(error = %e, %target, "fault proxy: cannot reach the target");
                            return;
                        }
                    };
                    let mut server = Faulty::with_controllers(server, &controllers);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                        tracing::debug!(error = %e, "fault proxy: connection ended");
                    }
                });
            }
            Some(_) = pumps.join_next(), if !pumps.is_empty() => {}
        }
    }
}
