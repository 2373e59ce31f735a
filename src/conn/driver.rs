//! The driver: one task per connection that moves bytes between the mux and
//! the transport, and does nothing else.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

use super::error::ConnectionError;
use super::shared::{Shared, State};
use crate::mux::{Liveness, MuxError, Transmit};
use crate::transport::Transport;

/// Room made for a read: it starts small and doubles whenever a read fills
/// it, up to the most; an idle connection (pings, small requests) never
/// holds more than the least.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;
/// The most the driver hands the transport at once.
const WRITE_BUDGET: usize = 256 * 1024;
/// Bytes written per poll before the driver reads again.
const WRITE_PER_POLL: usize = 1024 * 1024;
/// Reads processed per poll before yielding, so one busy peer cannot starve
/// the runtime.
const READS_PER_POLL: usize = 16;

thread_local! {
    /// The read buffer quiet connections share on this thread (see
    /// `Driver::lend_back`): taken for a read, given back once everything
    /// read was handled. At most `2 * READ_MIN` bytes per thread.
    static SPARE: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

/// The room to make for the next read, after a read of `n` bytes into
/// `room`: twice as much when it was filled, up to `READ_MAX`. It never
/// shrinks: a connection that carried bulk data once is likely to again.
fn next_room(current: usize, n: usize, room: usize) -> usize {
    if n == room {
        (current * 2).min(READ_MAX)
    } else {
        current
    }
}

/// Locks the state, unless a newer transport has taken the session over or
/// the connection ended (then the driver must stop without touching the mux).
fn lock(shared: &Shared, generation: u64) -> Result<std::sync::MutexGuard<'_, State>, ConnectionError> {
    let st = shared.lock();
    if st.generation != generation || st.error.is_some() {
        return Err(ConnectionError::DriverGone);
    }
    Ok(st)
}

pub(crate) struct Driver<T> {
    io: T,
    shared: Arc<Shared>,
    /// The transport generation this driver serves.
    generation: u64,
    finished: bool,
    read_buf: BytesMut,
    /// Room made for the next read, between `READ_MIN` and `READ_MAX`.
    read_room: usize,
    transmit: Transmit,
    timer: Pin<Box<tokio::time::Sleep>>,
    needs_flush: bool,
    /// Bytes read with the handshake and not yet given to the mux: frames
    /// the peer sent right after its hello. They are handled on the first
    /// poll, not when more bytes happen to arrive (which may be never: the
    /// peer may be waiting for our answer to them).
    unread: bool,
}

impl<T: Transport> Driver<T> {
    pub(crate) fn new(io: T, shared: Arc<Shared>, read_buf: BytesMut, generation: u64) -> Self {
        let unread = !read_buf.is_empty();
        Driver {
            io,
            shared,
            generation,
            finished: false,
            read_buf,
            read_room: READ_MIN,
            transmit: Transmit::default(),
            timer: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(3600))),
            needs_flush: false,
            unread,
        }
    }

    /// Reads what is available and feeds it to the mux.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<(), ConnectionError> {
        if std::mem::take(&mut self.unread) {
            let mut st = lock(&self.shared, self.generation)?;
            st.mux.handle_input(&mut self.read_buf, Instant::now())?;
            st.dispatch_events();
        }
        for _ in 0..READS_PER_POLL {
            if self.read_buf.capacity() == 0 {
                // Between reads a quiet connection holds no buffer: it
                // borrows its thread's (see `SPARE`).
                self.read_buf = SPARE.take().unwrap_or_default();
            }
            self.read_buf.reserve(self.read_room);
            let room = self.read_buf.capacity() - self.read_buf.len();
            // tokio-util reads into the spare capacity without zeroing it
            // first (its own, audited `unsafe`; this crate has none).
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => return Err(ConnectionError::Eof),
                Poll::Ready(Ok(n)) => {
                    self.read_room = next_room(self.read_room, n, room);
                    let mut st = lock(&self.shared, self.generation)?;
                    st.mux.handle_input(&mut self.read_buf, Instant::now())?;
                    st.dispatch_events();
                }
                Poll::Ready(Err(e)) => return Err(ConnectionError::io(e)),
                Poll::Pending => {
                    self.lend_back();
                    #[cfg(test)]
                    self.shared.read_held.store(self.read_buf.capacity(), std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        // More may be waiting: come back after others had a turn.
        cx.waker().wake_by_ref();
        Ok(())
    }

    /// A quiet connection (its reads never fill `READ_MIN`) with nothing
    /// half read gives its read buffer to its thread's `SPARE` for the next
    /// read of any quiet connection: a thousand idle connections hold one
    /// buffer per worker thread, not a thousand. A busy one keeps its own.
    fn lend_back(&mut self) {
        if self.read_room == READ_MIN && self.read_buf.is_empty() && self.read_buf.capacity() <= 2 * READ_MIN {
            let buf = std::mem::take(&mut self.read_buf);
            match SPARE.take() {
                Some(spare) if spare.capacity() >= buf.capacity() => SPARE.set(Some(spare)),
                _ => SPARE.set(Some(buf)),
            }
        }
    }

    /// Writes what the mux has to send until the transport pushes back.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let mut written_now = 0;
        loop {
            if self.transmit.is_empty() {
                if written_now >= WRITE_PER_POLL {
                    // Go round again after reading: a long transfer must not
                    // keep credit and replies for other ports unread.
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                let mut st = lock(&self.shared, self.generation)?;
                st.mux.poll_transmit(&mut self.transmit, WRITE_BUDGET);
                st.dispatch_events();
                if self.transmit.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            let mut slices = [IoSlice::new(&[]); 64];
            let n = self
                .transmit
                .segments
                .iter()
                .take(64)
                .zip(slices.iter_mut())
                .map(|(seg, s)| *s = IoSlice::new(seg))
                .count();
            let written =
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])).map_err(ConnectionError::io)?;
            if written == 0 {
                return Poll::Ready(Err(ConnectionError::Eof));
            }
            self.transmit.advance(written);
            written_now += written;
            self.needs_flush = true;
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        {
            let mut st = lock(&self.shared, self.generation)?;
            match &st.driver_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.driver_waker = Some(cx.waker().clone()),
            }
        }
        self.poll_read(cx)?;
        // The mux's deadlines only move later as traffic flows, so the timer
        // is re-armed only when it fired or a deadline came earlier: the hot
        // path does not touch the runtime's timer wheel.
        let fired = self.timer.as_mut().poll(cx).is_ready();
        {
            let mut st = lock(&self.shared, self.generation)?;
            let now = Instant::now();
            if fired || now >= st.mux.poll_timeout() {
                if let Liveness::Silent(silent) = st.mux.handle_timeout(now)? {
                    // Only this transport is dead if the session can resume:
                    // the mux goes on (sends still queue) and waits for the
                    // next one. Otherwise the silence ends the session.
                    let e = if self.shared.resumable() { MuxError::Timeout(silent) } else { st.mux.time_out(silent) };
                    return Poll::Ready(Err(e.into()));
                }
            }
        }
        let write = self.poll_write(cx)?;
        if write.is_ready()
            && self.needs_flush
            && Pin::new(&mut self.io).poll_flush(cx).map_err(ConnectionError::io)?.is_ready()
        {
            self.needs_flush = false;
        }
        let (closed, error) = {
            let st = lock(&self.shared, self.generation)?;
            // The deadline is read after the transmit (the mux's call
            // order): a transmit that sends the last chunk of a closed port
            // queues its `Fin`, which must leave within `ACK_DELAY`, not at
            // the next ping.
            let deadline = st.mux.poll_timeout();
            if fired || deadline < self.timer.deadline().into_std() {
                self.timer.as_mut().reset(deadline.into());
                if self.timer.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
            (st.mux.is_closed(), st.mux.error().cloned())
        };
        if let Some(e) = error {
            // The mux failed while producing output (a peer that does not
            // acknowledge, say): that is the reason, not a close.
            return Poll::Ready(Err(e.into()));
        }
        if closed && write.is_ready() && !self.needs_flush {
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            return Poll::Ready(Err(ConnectionError::Closed));
        }
        Poll::Pending
    }
}

impl<T: Transport> Future for Driver<T> {
    type Output = ConnectionError;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ConnectionError> {
        self.poll_inner(cx).map(|res| match res {
            Ok(()) => ConnectionError::Closed,
            Err(ConnectionError::Protocol(MuxError::PeerClosed { code, reason })) => {
                ConnectionError::PeerClosed { code, reason }
            }
            Err(e) => e,
        })
    }
}

/// Runs the driver and reports how it ended to the connection's supervisor.
/// A panic (in the driver or the transport) becomes
/// [`ConnectionError::DriverPanicked`]: the handles see it, never a hang.
pub(crate) async fn run<T: Transport>(mut driver: Driver<T>) {
    use futures::FutureExt;
    let err = match std::panic::AssertUnwindSafe(&mut driver).catch_unwind().await {
        Ok(err) => err,
        Err(_) => {
            tracing::error!(parent: &driver.shared.span, "connection driver panicked");
            ConnectionError::DriverPanicked
        }
    };
    driver.finished = true;
    let shared = driver.shared.clone();
    let generation = driver.generation;
    drop(driver);
    shared.link_failed(generation, err);
}

impl<T> Drop for Driver<T> {
    fn drop(&mut self) {
        // A driver dropped without finishing (runtime shut down, task
        // aborted) must not leave handles waiting forever, unless a newer
        // transport took over (then the generation no longer matches).
        // Handled here, not through the supervisor's mailbox: while the
        // runtime shuts down the supervisor may never run again.
        if !self.finished {
            self.shared.fail_if_current(self.generation, ConnectionError::DriverGone);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{next_room, READ_MAX, READ_MIN};

    #[test]
    fn the_read_room_grows_only_when_reads_fill_it() {
        let mut room = READ_MIN;
        for _ in 0..100 {
            room = next_room(room, 18, room);
        }
        assert_eq!(room, READ_MIN, "pings and small requests keep it small");
        let mut grown = vec![room];
        while room < READ_MAX {
            room = next_room(room, room, room);
            grown.push(room);
        }
        assert_eq!(grown, [4, 8, 16, 32, 64].map(|k| k * 1024), "doubles per filled read, up to the most");
        assert_eq!(next_room(room, room, room), READ_MAX);
        assert_eq!(next_room(room, 10, room), READ_MAX, "never shrinks");
    }

    use bytes::{Bytes, BytesMut};
    use tokio::io::AsyncReadExt;

    use crate::conn::handshake;
    use crate::mux::{OutMessage, SendLimit, ROOT_SERVER_TO_CLIENT};
    use crate::wire::{self, End, Frame, FrameDecoder, PortEntry};
    use crate::{Config, Connection};

    fn msg(carried: &[PortEntry], payload: &[u8]) -> OutMessage {
        let mut bytes = BytesMut::new();
        wire::encode_table(carried, &mut bytes);
        bytes.extend_from_slice(payload);
        OutMessage::new(bytes.freeze(), carried.iter().map(|e| e.port).collect())
    }

    /// A transmit that sends the last chunk of a closed port queues its
    /// `Fin`, which waits at most `ACK_DELAY` for other output. The driver
    /// must arm its timer for it after the transmit: here the peer sends
    /// nothing at all (not even an `Ack`, which would wake the driver) and
    /// the next ping is a minute away, so only that timer sends the `Fin`.
    #[tokio::test]
    async fn a_fin_queued_by_a_transmit_does_not_wait_for_the_next_ping() {
        let cfg = Config {
            ping_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            ..Config::default()
        };
        let (mut raw, io) = crate::transport::memory(64 * 1024);
        let accept = tokio::spawn(Connection::accept(io, cfg.clone()));
        let peer = handshake::client(&mut raw, &cfg, uuid::Uuid::new_v4(), uuid::Uuid::nil(), 0, false)
            .await
            .expect("handshake");
        let conn = accept.await.unwrap().expect("accepted");
        let port = {
            let mut st = conn.shared().lock();
            // A port announced on the root, with a message queued on it, whose
            // handle is gone before anything left: its `Fin` is queued by the
            // transmit that sends that message.
            let port = st.mux.open_port(End::Receiver).expect("a port");
            let entry = PortEntry { port, end: End::Receiver };
            st.mux.send(ROOT_SERVER_TO_CLIENT, msg(&[entry], b"here"), SendLimit::Buffers).expect("root send");
            st.mux.send(port, msg(&[], b"last"), SendLimit::Buffers).expect("port send");
            st.mux.close_end(port);
            st.wake_driver();
            port
        };
        let dec = FrameDecoder::new(u32::MAX);
        let mut buf = peer.rest;
        let read_until_fin = async {
            let mut data = Vec::new();
            loop {
                while let Some(frame) = dec.decode(&mut buf).expect("the driver's frames decode") {
                    match frame {
                        Frame::Fin { port: p } if p == port => return data,
                        Frame::Data { port: p, payload, .. } if p == port => data.push(payload),
                        _ => {}
                    }
                }
                assert_ne!(raw.read_buf(&mut buf).await.expect("read"), 0, "the connection ended");
            }
        };
        let data = tokio::time::timeout(Duration::from_secs(2), read_until_fin)
            .await
            .expect("the Fin left within ACK_DELAY, not at the next ping (60 s)");
        // An empty port table (two bytes), then the payload.
        assert_eq!(data, vec![Bytes::from_static(b"\0\0last")]);
        drop(conn);
    }

    /// Waits (yielding to the drivers on this thread) until `cond` holds.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let wait = async {
            while !cond() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap_or_else(|_| panic!("{what}"));
    }

    /// Between reads, a quiet connection holds no read buffer: it borrows
    /// its thread's. One whose reads filled its buffer keeps its own, grown.
    #[tokio::test]
    async fn a_quiet_connection_holds_no_read_buffer_between_reads() {
        use std::sync::atomic::Ordering::Relaxed;
        let (a, b) = crate::transport::memory(64 * 1024);
        let (a, b) =
            tokio::try_join!(Connection::connect(a, Config::default()), Connection::accept(b, Config::default()))
                .unwrap();
        let (tx, _) = a.root::<Vec<u8>, ()>().unwrap();
        let (_, mut rx) = b.root::<(), Vec<u8>>().unwrap();
        tx.send(vec![1; 100]).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 100);
        until("the quiet receiver gives its buffer back", || b.shared().read_held.load(Relaxed) == 0).await;

        tx.send(vec![2; 1 << 20]).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 1 << 20);
        until("the busy receiver reads again", || b.shared().read_held.load(Relaxed) > 0).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(b.shared().read_held.load(Relaxed) > 2 * READ_MIN, "a busy connection keeps its grown buffer");
    }
}
