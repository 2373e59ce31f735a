//! Remote channels: channel ends that travel inside messages.
//!
//! Encoding a message for a connection runs with that connection in a
//! thread-local context, so a channel end met by serde becomes a new port
//! of that connection (an entry in the message's port table, encoded as the
//! entry's index). Decoding runs with the received table in context, so an
//! index becomes a live end bound to the port. Table entries nobody claims
//! are closed once decoding ends, so a dropped or garbled message leaks no
//! port.
//!
//! - `mod.rs`: a channel end's hold on its port (`PortHandle`), sending and
//!   receiving raw messages, the serialization context (`encode`,
//!   `decode`, `attach_port`, `claim_port`), reply ports whose type only
//!   the far side knows (`RawSender`), splicing a port onto another
//!   connection (`spawn_splice`), and the root channel
//!   ([`Connection::root`]).
//! - `mpsc.rs`: the bounded multi-producer channel, the one the others and
//!   the node layer build on.
//! - `oneshot.rs`: one message, the usual reply port.
//! - `watch.rs`: the latest value of a watched value.
//! - `broadcast.rs`: every value to every receiver, laggards told what
//!   they missed.
//! - `pipe.rs`: a byte stream (`AsyncRead` / `AsyncWrite`) made of blobs.
//! - `blob.rs`: [`Blob`], bytes a message carries without copying them
//!   (`attach_blob`, `attached_blob` here place them).
//!
//! This layer knows connections, not nodes: whoever owns a connection is
//! opaque here (`decoding_owner`).

mod blob;
pub mod broadcast;
pub mod mpsc;
pub mod oneshot;
pub mod pipe;
pub mod watch;

pub use blob::Blob;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{de_error, ser_error, CodecError};
use crate::compress::{self, Packer};
use crate::conn::{Connection, ConnectionError, Shared, State};
use crate::mux::{Chunk, OutMessage, Pop, SendError as MuxSendError, SendLimit};
use crate::pool;
use crate::wire::{self, End, Packing, PortEntry, PortId, Sizes, TraceContext};

/// A channel end's hold on one port of one connection. Dropping it closes
/// the end (the mux sends `Fin` or `Stop`).
pub(crate) struct PortHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) port: PortId,
}

impl PortHandle {
    /// `n` messages for this port's reader will not be read: counted with
    /// the connection's [`unread`](crate::ConnectionStats::unread).
    pub(crate) fn count_unread(&self, n: u64) {
        self.shared.lock().mux.count_unread(n);
    }

    /// A handle on `port`, which keeps its connection open while it lives.
    pub(crate) fn new(shared: Arc<Shared>, port: PortId) -> Self {
        shared.hold();
        PortHandle { shared, port }
    }

    /// Offers `msg` to the mux. On `Full` the message comes back, to wait
    /// with; on any other failure the ports it would announce are released.
    fn offer(
        &self,
        st: &mut State,
        msg: OutMessage,
        limit: SendLimit,
    ) -> Result<(), (SendFailure, Option<OutMessage>)> {
        if st.error.is_some() {
            st.mux.discard_unsent(msg);
            return Err((SendFailure::Closed, None));
        }
        match st.mux.send(self.port, msg, limit) {
            Ok(()) => {
                // Every accepted send wakes the driver, whatever `poll_wake`
                // says: the transmit it runs also takes the terminal frames
                // and acknowledgements waiting to ride along.
                let _ = st.mux.poll_wake();
                st.wake_driver();
                Ok(())
            }
            Err(MuxSendError::Full(msg)) => Err((SendFailure::Full, Some(msg))),
            Err(MuxSendError::Closed(msg)) => {
                st.mux.discard_unsent(msg);
                Err((SendFailure::Closed, None))
            }
            Err(MuxSendError::TooLarge { msg, max }) => {
                let size = msg.len();
                st.mux.discard_unsent(msg);
                Err((SendFailure::TooLarge { size, max }, None))
            }
        }
    }

    /// Queues an encoded message, waiting while the send buffer is full.
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<OutMessage>,
    ) -> Poll<Result<(), SendFailure>> {
        let mut st = self.shared.lock();
        let msg = slot.take().expect("polled after completion");
        match self.offer(&mut st, msg, SendLimit::Buffers) {
            Ok(()) => Poll::Ready(Ok(())),
            Err((SendFailure::Full, Some(msg))) => {
                *slot = Some(msg);
                st.register_send(self.port, cx.waker());
                Poll::Pending
            }
            Err((failure, _)) => Poll::Ready(Err(failure)),
        }
    }

    /// Queues an encoded message now: `Full` if the send buffer is (unless
    /// `unbuffered`, for a one-shot's single message: a channel that sends
    /// once bounds its own queue, so the send buffers need not).
    pub(crate) fn send_now(&self, msg: OutMessage, unbuffered: bool) -> Result<(), SendFailure> {
        let limit = if unbuffered { SendLimit::MessageOnly } else { SendLimit::Buffers };
        let mut st = self.shared.lock();
        self.offer(&mut st, msg, limit).map_err(|(failure, unsent)| {
            if let Some(msg) = unsent {
                st.mux.discard_unsent(msg);
            }
            failure
        })
    }

    /// Queues an encoded message now if there is room; a message that does
    /// not fit the send buffer right now comes back, still counted as
    /// unsent (queue it with `poll_send`, or discard it).
    pub(crate) fn try_offer(&self, msg: OutMessage) -> Result<(), (SendFailure, Option<OutMessage>)> {
        let mut st = self.shared.lock();
        self.offer(&mut st, msg, SendLimit::Buffers)
    }

    /// Resolves when sends on this port can no longer succeed.
    pub(crate) fn poll_send_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.shared.lock();
        if st.error.is_some() || st.mux.is_send_closed(self.port) {
            return Poll::Ready(());
        }
        st.register_send(self.port, cx.waker());
        Poll::Pending
    }

    /// Takes the next complete message off the port.
    pub(crate) fn poll_recv_raw(
        &self,
        cx: &mut Context<'_>,
        state: &mut RecvState,
    ) -> Poll<Option<Result<RawMessage, ConnectionError>>> {
        // The last receive woke the idle driver to return credit. The
        // runtime runs a task woken that way on this worker only once the
        // current task yields (and no other worker may take it meanwhile),
        // so a receiver that never runs dry would hold the credit back and
        // stall its sender: yield once to let it go out.
        if std::mem::take(&mut state.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Whole messages read ahead on an earlier call come first, without
        // the connection lock.
        if let Some(c) = state.ahead.pop_front() {
            state.ahead_bytes -= c.data.len();
            return Poll::Ready(Some(Ok(RawMessage {
                ports: c.ports,
                trace: c.trace,
                attached: c.attached,
                packing: c.packing,
                data: c.data,
                tail: Vec::new(),
                own: false,
            })));
        }
        let mut st = self.shared.lock();
        // Whether a whole small message is returned (see `yield_next`).
        let mut single = false;
        let end = loop {
            match st.mux.pop_chunk(self.port) {
                Pop::Chunk(c) if c.first && c.last => {
                    // Read a few more small messages ahead while the lock is
                    // held: one lock for several receives.
                    while state.ahead.len() < READ_AHEAD_MSGS && state.ahead_bytes < READ_AHEAD_BYTES {
                        match st.mux.pop_chunk_if(self.port, |next| next.first && next.last) {
                            Some(next) => {
                                state.ahead_bytes += next.data.len();
                                state.ahead.push_back(next);
                            }
                            None => break,
                        }
                    }
                    single = true;
                    break Poll::Ready(Some(Ok(RawMessage {
                        ports: c.ports,
                        trace: c.trace,
                        attached: c.attached,
                        packing: c.packing,
                        data: c.data,
                        tail: Vec::new(),
                        own: false,
                    })));
                }
                // The mux reassembles a message of several chunks; popping
                // its chunks only returns their credit, and the last one
                // brings the message.
                Pop::Chunk(mut c) => {
                    if c.first {
                        state.ports = std::mem::take(&mut c.ports);
                        state.trace = c.trace.take();
                        state.attached = c.attached;
                        state.packing = c.packing;
                    }
                    if c.last {
                        let ports = std::mem::take(&mut state.ports);
                        let trace = state.trace.take();
                        let (attached, packing) = (state.attached, state.packing.take());
                        let (data, tail) = (c.data, c.tail);
                        break Poll::Ready(Some(Ok(RawMessage {
                            ports,
                            trace,
                            attached,
                            packing,
                            data,
                            tail,
                            own: true,
                        })));
                    }
                }
                Pop::Empty => match &st.error {
                    // A graceful close ends the stream once drained.
                    Some(e) if e.is_graceful() => break Poll::Ready(None),
                    Some(e) => break Poll::Ready(Some(Err(e.clone()))),
                    None => {
                        st.register_recv(self.port, cx.waker());
                        break Poll::Pending;
                    }
                },
                Pop::Finished => break Poll::Ready(None),
            }
        };
        // A read may return credit: the driver must send it.
        if st.mux.poll_wake() && st.wake_driver() {
            state.yield_next = single;
        }
        end
    }
}

impl Drop for PortHandle {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.forget_port(self.port);
        st.mux.close_end(self.port);
        st.dispatch_events();
        st.wake_driver();
        drop(st);
        self.shared.release();
    }
}

/// Why a queued send failed, before it is given a channel-specific shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendFailure {
    Closed,
    Full,
    TooLarge { size: usize, max: u32 },
}

/// What a receiver keeps between receives.
#[derive(Default)]
pub(crate) struct RecvState {
    /// The ports carried by a message whose chunks are still arriving.
    ports: Vec<PortEntry>,
    /// Its trace context.
    trace: Option<Box<TraceContext>>,
    /// Bytes of blobs at its end.
    attached: u32,
    /// How it is compressed, if it is.
    packing: Option<Packing>,
    /// Whole small messages taken off the port ahead of their receive, at
    /// most `READ_AHEAD_MSGS` and about `READ_AHEAD_BYTES`.
    ahead: VecDeque<Chunk>,
    ahead_bytes: usize,
    /// Yield before the next receive (see `poll_recv_raw`).
    yield_next: bool,
    /// A long message taken off the port, decoded after a yield (see
    /// [`LONG_DECODE`]); boxed, as it is rare and every receiver (and so
    /// every enum a receiver is sent in) carries the slot.
    long: Option<Box<RawMessage>>,
    /// The encoded length of the last message received.
    last_len: usize,
    /// The trace context of the last message received, until taken.
    last_trace: Option<Box<TraceContext>>,
}

/// Most messages a receive reads ahead under one lock.
const READ_AHEAD_MSGS: usize = 32;
/// Bytes a receive reads ahead at most (plus one message): what a receiver
/// may hold beyond its port's window.
const READ_AHEAD_BYTES: usize = 16 * 1024;

/// The receiving end of a port: what a remote `Receiver` reads from.
pub(crate) struct RemoteRecv {
    pub(crate) port: PortHandle,
    state: RecvState,
}

/// Messages at least this large are decoded only after the receiver
/// yielded once: popping them woke the driver (to return credit), and the
/// runtime puts a task woken that way in a slot of this worker that no other
/// worker may take, so decoding at once would keep the whole connection
/// waiting. After the yield the driver has run, and the tasks it wakes
/// meanwhile can go to the other workers. (`block_in_place` would do it too,
/// but its extra thread competes for the cores with the workers, and on a
/// machine with as many cores as workers that stalls them for whole
/// scheduler slices.)
const LONG_DECODE: usize = 4 * 1024 * 1024;

impl RemoteRecv {
    pub(crate) fn new(port: PortHandle) -> Self {
        RemoteRecv { port, state: RecvState::default() }
    }

    /// The encoded length of the message the last receive returned.
    pub(crate) fn last_len(&self) -> usize {
        self.state.last_len
    }

    /// The trace context the message the last receive returned carried,
    /// the first time it is asked.
    pub(crate) fn take_trace(&mut self) -> Option<Box<TraceContext>> {
        self.state.last_trace.take()
    }

    /// The next message, decoded. A message that does not decode is
    /// reported and skipped; the channel goes on.
    pub(crate) fn poll_recv<T: DeserializeOwned>(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<T, RecvError>>> {
        let raw = match self.state.long.take() {
            Some(raw) => *raw,
            None => match self.port.poll_recv_raw(cx, &mut self.state) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(RecvError::Connection(e)))),
                Poll::Ready(Some(Ok(raw))) if raw.len() >= LONG_DECODE => {
                    self.state.long = Some(Box::new(raw));
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(raw))) => raw,
            },
        };
        // The segments of a long message are joined here, without the
        // connection lock.
        let data = crate::mux::join(raw.data, raw.tail);
        self.state.last_len = data.len();
        self.state.last_trace = raw.trace;
        let res = decode(&self.port.shared, raw.ports, &data, raw.attached, raw.packing, raw.own);
        Poll::Ready(Some(res.map_err(RecvError::Decode)))
    }
}

impl Drop for RemoteRecv {
    fn drop(&mut self) {
        // A half-received message's ports, and those of messages read
        // ahead, are ours to close; messages read ahead are never read.
        discard(&self.port.shared, std::mem::take(&mut self.state.ports));
        let unread = self.state.ahead.len() + usize::from(self.state.long.is_some());
        for c in self.state.ahead.drain(..) {
            discard(&self.port.shared, c.ports);
        }
        if let Some(raw) = self.state.long.take() {
            discard(&self.port.shared, raw.ports);
        }
        if unread > 0 {
            self.port.count_unread(unread as u64);
        }
    }
}

/// Why a receive failed, on any kind of channel.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// A message arrived that does not decode as the channel's type; it was
    /// dropped and the channel goes on.
    #[error("received message does not decode: {0}")]
    Decode(#[from] CodecError),
    /// The connection carrying the channel ended.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// One-shot channels only: the sender was dropped without sending.
    #[error("sender dropped without sending")]
    Dropped,
}

/// A received message, not yet decoded.
pub(crate) struct RawMessage {
    pub(crate) ports: Vec<PortEntry>,
    pub(crate) trace: Option<Box<TraceContext>>,
    /// Bytes of blobs at the end of the message (once unpacked).
    pub(crate) attached: u32,
    /// How the message is compressed, if it is: `data` and `tail` are as
    /// sent, unpacked when the message is decoded.
    pub(crate) packing: Option<Packing>,
    pub(crate) data: Bytes,
    /// Further segments of a long message (see `Chunk::tail`).
    pub(crate) tail: Vec<Bytes>,
    /// Its buffers hold it alone (it was reassembled from chunks), where
    /// a message in one chunk shares its buffer with others.
    pub(crate) own: bool,
}

impl RawMessage {
    fn len(&self) -> usize {
        self.data.len() + self.tail.iter().map(Bytes::len).sum::<usize>()
    }
}

// ----- serialization context ------------------------------------------------

type Deferred = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct EncodeCtx {
    entries: Vec<PortEntry>,
    local: Vec<PortId>,
    deferred: Vec<Deferred>,
    /// The message's blobs, once it has one (boxed: most messages have
    /// none, and the context is set up for every message).
    blobs: Option<Box<Attached>>,
}

/// The blobs of a message being encoded, in order: large ones as they are,
/// runs of small ones copied together (`small` is the run in progress).
#[derive(Default)]
struct Attached {
    segments: Vec<Bytes>,
    small: BytesMut,
    /// Bytes of blobs so far.
    len: usize,
    /// The first segment is a run of small blobs (a copy), not a blob.
    small_first: bool,
}

impl EncodeCtx {
    fn attach(&mut self, blob: &Bytes) -> u64 {
        let a = self.blobs.get_or_insert_default();
        let offset = a.len as u64;
        if blob.len() < blob::BLOB_COPY_MAX {
            a.small.extend_from_slice(blob);
        } else {
            a.end_small_run();
            a.segments.push(blob.clone());
        }
        a.len += blob.len();
        offset
    }
}

impl Attached {
    /// The message's blobs: their bytes, the buffers they are in, and
    /// whether the first buffer is a copied run of small blobs.
    fn finish(mut self) -> (usize, Vec<Bytes>, bool) {
        self.end_small_run();
        (self.len, self.segments, self.small_first)
    }

    fn end_small_run(&mut self) {
        if !self.small.is_empty() {
            self.small_first |= self.segments.is_empty();
            self.segments.push(self.small.split().freeze());
        }
    }
}

struct DecodeCtx {
    entries: Vec<Option<PortEntry>>,
    /// The blobs at the end of the message.
    blobs: Bytes,
}

// The connection being encoded or decoded for, lent (not cloned: that
// costs two atomic operations on a cache line every side of the connection
// touches) for the duration of one `encode` or `decode`, beside `CTX`.
scoped_tls::scoped_thread_local!(static SHARED: Arc<Shared>);

enum Ctx {
    Encode(EncodeCtx),
    Decode(DecodeCtx),
}

// The context of the message being encoded or decoded on this thread,
// lent like `SHARED` for the duration: a scoped thread-local is a pointer
// set and restored (also on panic, and for a message encoded while another
// is), with no destructor to register and no value moved in and out.
scoped_tls::scoped_thread_local!(static CTX: RefCell<Ctx>);

/// The context of the message being encoded or decoded, if any.
fn with_ctx<R>(f: impl FnOnce(Option<&mut Ctx>) -> R) -> R {
    if CTX.is_set() {
        CTX.with(|c| f(Some(&mut c.borrow_mut())))
    } else {
        f(None)
    }
}

thread_local! {
    /// Reused encoding buffer of this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Size of this thread's last large encoding, as a hint for the next.
    static LARGE_HINT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Reused buffer of this thread for packed (compressed) messages.
    static PACKED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Largest buffer for packed messages a thread keeps between messages
/// (about what packing the largest pooled message takes): without it each
/// large message would map, zero and fault in a fresh buffer.
const PACKED_KEEP: usize = 4 * pool::MAX;

/// Bytes an encoding expected to be large reserves for its head: enough for
/// two ports, a trace context and sizes.
const HEAD_ROOM: usize = wire::encoded_head_len(2, true, true, false);
/// The head of a message without ports, trace context or sizes: two zeros.
const EMPTY_HEAD: usize = wire::encoded_head_len(0, false, false, false);

/// Largest scratch buffer kept between encodings; a larger one is lent to
/// the mux and then kept in the process's pool (`crate::pool`).
const SCRATCH_KEEP: usize = pool::MIN;

const NO_CONTEXT: &str = "tether channel ends can only be sent inside messages of a tether channel";

/// Allocates a port on the connection being encoded for; the `travelling`
/// end goes to the peer (as the returned table index), this side gets the
/// other end's handle. `then` runs once the whole message encoded.
pub(crate) fn attach_port<E: serde::ser::Error>(travelling: End) -> Result<(u32, PortHandle), E> {
    with_ctx(|c| {
        let (Some(Ctx::Encode(ctx)), true) = (c, SHARED.is_set()) else {
            return Err(ser_error(NO_CONTEXT));
        };
        SHARED.with(|shared| {
            if ctx.entries.len() >= wire::MAX_PORTS {
                return Err(ser_error("too many channel ends in one message"));
            }
            let port = shared.lock().mux.open_port(travelling).map_err(ser_error)?;
            ctx.entries.push(PortEntry { port, end: travelling });
            ctx.local.push(port);
            Ok(((ctx.entries.len() - 1) as u32, PortHandle::new(shared.clone(), port)))
        })
    })
}

/// Attaches `blob` to the message being encoded, if one is: where it lies
/// among the message's blobs.
fn attach_blob(blob: &Bytes) -> Option<u64> {
    with_ctx(|c| match c {
        Some(Ctx::Encode(ctx)) => Some(ctx.attach(blob)),
        _ => None,
    })
}

/// Whether a message is being decoded, so that a blob is one of its
/// attached blobs (and not an ordinary byte string).
fn decoding_blobs() -> bool {
    with_ctx(|c| matches!(c, Some(Ctx::Decode(_))))
}

/// The `len` bytes at `offset` among the blobs of the message being
/// decoded.
fn attached_blob<E: serde::de::Error>(offset: u64, len: u64) -> Result<Bytes, E> {
    with_ctx(|c| {
        let Some(Ctx::Decode(ctx)) = c else { return Err(de_error(NO_CONTEXT)) };
        match offset.checked_add(len) {
            Some(end) if end <= ctx.blobs.len() as u64 => Ok(ctx.blobs.slice(offset as usize..end as usize)),
            _ => Err(de_error(format_args!(
                "a blob of {len} bytes at {offset} lies outside the message's {} bytes of blobs",
                ctx.blobs.len()
            ))),
        }
    })
}

/// Runs `f` after the message being encoded is complete (to start pumps
/// only for messages that will really be sent).
pub(crate) fn defer(f: impl FnOnce() + Send + 'static) {
    with_ctx(|c| {
        if let Some(Ctx::Encode(ctx)) = c {
            ctx.deferred.push(Box::new(f));
        }
    })
}

/// Claims the port at `index` of the message being decoded, which must
/// carry the `expected` end.
pub(crate) fn claim_port<E: serde::de::Error>(index: u32, expected: End) -> Result<PortHandle, E> {
    with_ctx(|c| {
        let (Some(Ctx::Decode(ctx)), true) = (c, SHARED.is_set()) else {
            return Err(de_error(NO_CONTEXT));
        };
        let slot = ctx.entries.get_mut(index as usize).ok_or_else(|| de_error("channel end index out of range"))?;
        match slot {
            Some(entry) if entry.end == expected => {
                let port = entry.port;
                *slot = None;
                Ok(PortHandle::new(SHARED.with(Arc::clone), port))
            }
            Some(_) => Err(de_error("channel end of the wrong kind")),
            None => Err(de_error("channel end claimed twice")),
        }
    })
}

/// Encodes `value` for the connection `shared`, port table first.
pub(crate) fn encode<T: Serialize + ?Sized>(shared: &Arc<Shared>, value: &T) -> Result<OutMessage, CodecError> {
    SHARED.set(shared, || encode_in_context(shared, value))
}

fn encode_in_context<T: Serialize + ?Sized>(shared: &Shared, value: &T) -> Result<OutMessage, CodecError> {
    let ctx = RefCell::new(Ctx::Encode(EncodeCtx::default()));
    // Encode into a reused buffer that starts with an empty port table (the
    // common case), then copy once into an exact-size allocation: no growth
    // reallocations per message. A large encoding is handed over whole.
    // After a large message, expect another of its size: a buffer of that
    // size (free in the pool, or else reserved, which touches no memory
    // until it is written) instead of a chain of growing copies.
    let hint = LARGE_HINT.get();
    let large = hint > SCRATCH_KEEP;
    let pooled = if large { pool::LARGE.take(hint) } else { None };
    let mut buf = pooled.unwrap_or_else(|| SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut())));
    buf.clear();
    if large {
        buf.reserve_exact(pool::capacity_for(hint));
    }
    // Room for the head, written in front of the value once it is known: a
    // large message is handed over from where its head starts, uncopied.
    // (Only a head larger than the room needs a new buffer.) A small one is
    // copied anyway: it gets the room of an empty head, which is its own
    // head most of the time.
    let room = if large { HEAD_ROOM } else { EMPTY_HEAD };
    buf.extend_from_slice(&[0; HEAD_ROOM][..room]);
    let res = CTX.set(&ctx, || shared.codec.encode(value, &mut buf));
    let Ctx::Encode(ctx) = ctx.into_inner() else { unreachable!("an encoding context") };
    let EncodeCtx { entries, local, deferred, blobs } = ctx;
    let (attached, mut blobs, small_first) = match blobs {
        None => (0, Vec::new(), false),
        Some(a) => a.finish(),
    };
    // Compressed here, on the sending task, if the two sides agreed on an
    // algorithm and it pays.
    let packed = match (&res, &shared.packer) {
        (Ok(()), Some(packer)) => pack(packer, &mut buf, room, attached, &mut blobs, small_first),
        _ => None,
    };
    let res = res.and_then(|()| {
        let body = packed.as_ref().map_or(buf.len() - room, |(p, _)| p.packed as usize);
        let len = body + blobs.iter().map(Bytes::len).sum::<usize>();
        if len < wire::SIZED_MIN && attached == 0 {
            return Ok(None);
        }
        let too_long = |n: usize| CodecError::Encode {
            type_name: std::any::type_name::<T>(),
            message: format!("{n} bytes in one message"),
        };
        let len = u32::try_from(len).map_err(|_| too_long(len))?;
        // The blobs count as they are once unpacked: at most the whole
        // message then.
        let attached = u32::try_from(attached).map_err(|_| too_long(attached))?;
        Ok(Sizes::of(len, attached))
    });
    // The sender's span, if this node passes traces on (a branch otherwise).
    let trace = shared.cfg.trace_propagation.as_ref().and_then(|p| p.current());
    let bytes = res.map(|sizes| {
        if let Some((packing, out)) = &packed {
            let body = &out[..packing.packed as usize];
            return with_head(&entries, trace.as_ref(), sizes, Some(*packing), body.len(), [body]);
        }
        let plain = entries.is_empty() && trace.is_none() && sizes.is_none();
        let head = if plain {
            EMPTY_HEAD
        } else {
            wire::encoded_head_len(entries.len(), trace.is_some(), sizes.is_some(), false)
        };
        let Some(start) = room.checked_sub(head) else {
            return with_head(&entries, trace.as_ref(), sizes, None, buf.len() - room, [&buf[room..]]);
        };
        if !plain {
            wire::encode_head(&entries, trace.as_ref(), sizes, None, &mut &mut buf[start..room]);
        }
        if buf.len() > SCRATCH_KEEP {
            pool::LARGE.bytes(std::mem::take(&mut buf)).slice(start..)
        } else {
            Bytes::copy_from_slice(&buf[start..])
        }
    });
    // The encoding's size, not its packed form's (the value is still in
    // `buf` then): the next encoding is expected to need as much room.
    let size = bytes.as_ref().map_or(0, |b| b.len().max(buf.len()));
    LARGE_HINT.set(if size > SCRATCH_KEEP { size } else { 0 });
    // A buffer handed over whole leaves nothing to keep; storing its empty
    // shell would drop this thread's scratch when the buffer was pooled.
    match buf.capacity() {
        0 => {}
        n if n <= SCRATCH_KEEP => SCRATCH.with(|s| *s.borrow_mut() = buf),
        _ => pool::LARGE.give_back(buf),
    }
    if let Some((_, out)) = packed {
        if out.capacity() <= PACKED_KEEP {
            PACKED.with(|p| *p.borrow_mut() = out);
        }
    }
    // On failure the ports allocated so far will never be announced: give
    // them back (the mux keeps a port opened for a message until then), and
    // dropping `deferred` drops the handles held by deferred work.
    let bytes = bytes.inspect_err(|_| discard_opened(shared, local.clone()))?;
    for f in deferred {
        f();
    }
    let msg = OutMessage::new(bytes, local);
    Ok(if blobs.is_empty() { msg } else { msg.with_more(blobs) })
}

/// Packs a message's plain part, with `packer`, if it is worth trying and
/// pays: the value encoded in `buf[room..]`, and a run of small blobs
/// copied first among `blobs` (moved behind the value: the blobs keep
/// their order), but no large blob. Its packing, and a buffer of this
/// thread's holding the packed bytes first.
fn pack(
    packer: &Packer,
    buf: &mut Vec<u8>,
    room: usize,
    attached: usize,
    blobs: &mut Vec<Bytes>,
    small_first: bool,
) -> Option<(Packing, Vec<u8>)> {
    let value = buf.len() - room;
    let run = if small_first { blobs[0].len() } else { 0 };
    if !packer.wants(value + run, value + attached) {
        return None;
    }
    if small_first {
        buf.extend_from_slice(&blobs.remove(0));
    }
    let mut out = PACKED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    match packer.pack(&buf[room..], &mut out, 0) {
        Some(packing) => Some((packing, out)),
        None => {
            PACKED.with(|p| *p.borrow_mut() = out);
            None
        }
    }
}

/// Gives back the ports opened for a message that will not be sent.
fn discard_opened(shared: &Shared, ports: Vec<PortId>) {
    if !ports.is_empty() {
        shared.lock().mux.discard_unsent(OutMessage::new(Bytes::new(), ports));
    }
}

/// Decodes a received message for the connection `shared`; table entries
/// the value does not claim are closed. A `packing` message is unpacked
/// first (here, on the receiving task). The message's last `attached` bytes
/// (once unpacked) are its blobs; `own`: `data` holds this message alone.
pub(crate) fn decode<T: DeserializeOwned>(
    shared: &Arc<Shared>,
    ports: Vec<PortEntry>,
    data: &Bytes,
    attached: u32,
    packing: Option<Packing>,
    own: bool,
) -> Result<T, CodecError> {
    let unpacked = packing.map(|p| compress::unpack(data, p));
    let (data, own) = match &unpacked {
        None => (data, own),
        Some(Ok(plain)) => (plain, true),
        Some(Err(e)) => {
            discard(shared, ports);
            return Err(undecodable(shared, e.clone()));
        }
    };
    let res = match data.len().checked_sub(attached as usize) {
        Some(value_len) => {
            let blobs = if attached == 0 { Bytes::new() } else { blobs_of(data, value_len, own) };
            let ctx = RefCell::new(Ctx::Decode(DecodeCtx { entries: ports.into_iter().map(Some).collect(), blobs }));
            let res = CTX.set(&ctx, || SHARED.set(shared, || shared.codec.decode(&data[..value_len])));
            let Ctx::Decode(ctx) = ctx.into_inner() else { unreachable!("a decoding context") };
            discard(shared, ctx.entries.into_iter().flatten().collect());
            res
        }
        None => {
            discard(shared, ports);
            Err(CodecError::Decode {
                type_name: std::any::type_name::<T>(),
                message: format!("{attached} bytes of blobs in a message of {} bytes", data.len()),
            })
        }
    };
    res.map_err(|e| undecodable(shared, e))
}

/// Counts and logs a received message that does not decode (or unpack).
fn undecodable(shared: &Shared, e: CodecError) -> CodecError {
    shared.undecodable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(peer = %shared.peer_id, error = %e, "received message does not decode");
    e
}

/// The blobs of a received message, after its first `value_len` bytes. A
/// blob a receiver keeps must not keep other messages' bytes alive: they
/// are slices of the message's buffer when it is its `own` (a message
/// reassembled from chunks), and copied out otherwise (a small message
/// shares its buffer with its neighbours, a one-chunk one with the
/// transport's read buffer).
fn blobs_of(data: &Bytes, value_len: usize, own: bool) -> Bytes {
    if own {
        data.slice(value_len..)
    } else {
        Bytes::copy_from_slice(&data[value_len..])
    }
}

/// Drops the ports of a message that will not be decoded.
pub(crate) fn discard(shared: &Arc<Shared>, ports: Vec<PortEntry>) {
    for entry in ports {
        drop(PortHandle::new(shared.clone(), entry.port));
    }
}

/// A one-shot sender whose type only the far side's registry knows:
/// control messages carry reply ports this way. Received, it is claimed
/// while the message decodes (so it cannot leak) and typed later, or sent on
/// to another connection as it is; built from a typed sender, it serializes
/// like one.
pub(crate) struct RawSender(std::sync::Mutex<RawInner>);

enum RawInner {
    Port(PortHandle),
    Typed(Box<dyn FnOnce() -> Result<u32, String> + Send>),
    Taken,
}

impl RawSender {
    /// Wraps a typed one-shot sender for sending.
    pub(crate) fn from_oneshot<T>(tx: oneshot::Sender<T>) -> Self
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        RawSender(std::sync::Mutex::new(RawInner::Typed(Box::new(move || tx.attach_index()))))
    }

    /// The received port as a typed one-shot sender.
    pub(crate) fn into_oneshot<T: Serialize + Send + 'static>(self) -> Option<oneshot::Sender<T>> {
        match self.0.into_inner().unwrap_or_else(|e| e.into_inner()) {
            RawInner::Port(handle) => Some(oneshot::Sender::from_mpsc(mpsc::Sender::from_port(handle))),
            RawInner::Typed(_) | RawInner::Taken => None,
        }
    }
}

impl Serialize for RawSender {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let taken = std::mem::replace(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()), RawInner::Taken);
        let index = match taken {
            RawInner::Typed(attach) => attach().map_err(ser_error::<S::Error>)?,
            RawInner::Port(original) => {
                // Sending it on: the new port is spliced to the original.
                let (index, ours) = attach_port::<S::Error>(End::Sender)?;
                defer(move || spawn_splice(RemoteRecv::new(ours), Arc::new(original)));
                index
            }
            RawInner::Taken => return Err(ser_error("raw sender already sent")),
        };
        index.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for RawSender {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(d)?;
        let handle = claim_port::<D::Error>(index, End::Sender)?;
        Ok(RawSender(std::sync::Mutex::new(RawInner::Port(handle))))
    }
}

/// Relays raw messages from `from` (we hold its receiver end) to `to` (we
/// hold its sender end) until either side ends, without decoding them:
/// every port a message carries gets a twin on `to`'s connection, spliced
/// to the original the same way. Payload bytes refer to ports by their
/// position in the table, which the twin table keeps.
pub(crate) fn spawn_splice(mut from: RemoteRecv, to: Arc<PortHandle>) {
    tokio::spawn(async move {
        loop {
            let raw = tokio::select! {
                biased;
                _ = std::future::poll_fn(|cx| to.poll_send_closed(cx)) => break,
                raw = std::future::poll_fn(|cx| from.port.poll_recv_raw(cx, &mut from.state)) => raw,
            };
            let Some(Ok(raw)) = raw else { break };
            // A message in hand that cannot go on is counted unread where
            // it arrived (like those `from` still holds, when it drops).
            let msg = match relay(&from.port.shared, &to.shared, raw) {
                Ok(Some(msg)) => msg,
                // It did not unpack (counted and logged as undecodable
                // here): the stream ends at the hole, so the far end never
                // reads on past a message it did not get as if none was
                // missing. What follows is counted unread as `from` drops.
                Ok(None) => break,
                Err(_) => {
                    from.port.count_unread(1);
                    break;
                }
            };
            let mut slot = Some(msg);
            if std::future::poll_fn(|cx| to.poll_send(cx, &mut slot)).await.is_err() {
                from.port.count_unread(1);
                break;
            }
        }
    });
}

/// Relayed messages at least this large are not copied.
const RELAY_COPY_MAX: usize = 16 * 1024;

/// Rebuilds a message received on connection `from` for connection `to`;
/// `None` if it was packed and does not unpack (counted and logged as
/// undecodable on `from`).
fn relay(
    from: &Arc<Shared>,
    to: &Arc<Shared>,
    mut raw: RawMessage,
) -> Result<Option<OutMessage>, crate::mux::MuxError> {
    // A packed message goes on packed if the next peer takes it so;
    // otherwise it is unpacked here, on the splice's task, and goes on plain.
    if let Some(p) = raw.packing {
        let unpacked_len = raw.len().saturating_sub(p.packed as usize) + p.plain as usize;
        if !to.packer.is_some_and(|k| k.passes(p, unpacked_len)) {
            let data = crate::mux::join(std::mem::take(&mut raw.data), std::mem::take(&mut raw.tail));
            match compress::unpack(&data, p) {
                Ok(plain) => (raw.data, raw.packing) = (plain, None),
                Err(e) => {
                    discard(from, std::mem::take(&mut raw.ports));
                    undecodable(from, e);
                    return Ok(None);
                }
            }
        }
    }
    let mut entries = Vec::with_capacity(raw.ports.len());
    let mut splices = Vec::with_capacity(raw.ports.len());
    // Claim every original first, so that an error below closes them all.
    let originals: Vec<_> = raw.ports.iter().map(|e| (e.end, PortHandle::new(from.clone(), e.port))).collect();
    for (end, original) in originals {
        let twin = match to.lock().mux.open_port(end) {
            Ok(twin) => twin,
            Err(e) => {
                // The twins opened so far will not be announced.
                discard_opened(to, entries.iter().map(|e: &PortEntry| e.port).collect());
                return Err(e);
            }
        };
        entries.push(PortEntry { port: twin, end });
        let twin = PortHandle::new(to.clone(), twin);
        // We hold `end` of the original and the opposite end of the twin.
        splices.push(match end {
            End::Sender => (twin, original),
            End::Receiver => (original, twin),
        });
    }
    let len = raw.len();
    // What was received fits the limits, which are u32.
    let sizes = Sizes::of(len as u32, raw.attached);
    let trace = raw.trace.as_deref();
    let segments = std::iter::once(raw.data).chain(raw.tail);
    let ports = entries.iter().map(|e| e.port).collect();
    // A small message is copied behind its new head, so that it leaves in
    // one chunk; a large one goes on from the buffers it came in.
    let packing = raw.packing;
    let msg = if len < RELAY_COPY_MAX {
        OutMessage::new(with_head(&entries, trace, sizes, packing, len, segments), ports)
    } else {
        OutMessage::new(with_head(&entries, trace, sizes, packing, 0, std::iter::empty::<&[u8]>()), ports)
            .with_more(segments.collect())
    };
    for (reader, writer) in splices {
        spawn_splice(RemoteRecv::new(reader), Arc::new(writer));
    }
    Ok(Some(msg))
}

/// A new buffer holding a head and then the `len` bytes of `body`.
fn with_head<B: AsRef<[u8]>>(
    entries: &[PortEntry],
    trace: Option<&TraceContext>,
    sizes: Option<Sizes>,
    packing: Option<Packing>,
    len: usize,
    body: impl IntoIterator<Item = B>,
) -> Bytes {
    let head = wire::encoded_head_len(entries.len(), trace.is_some(), sizes.is_some(), packing.is_some());
    let mut out = BytesMut::with_capacity(head + len);
    wire::encode_head(entries, trace, sizes, packing, &mut out);
    for part in body {
        out.extend_from_slice(part.as_ref());
    }
    out.freeze()
}

/// While a message decodes: the owner of the receiving connection (see
/// `Shared::set_owner`), and the peer the message came from.
pub(crate) fn decoding_owner() -> Option<(Arc<dyn std::any::Any + Send + Sync>, crate::NodeId)> {
    let decoding = with_ctx(|c| matches!(c, Some(Ctx::Decode(_))));
    if !decoding || !SHARED.is_set() {
        return None;
    }
    SHARED.with(|shared| shared.owner().map(|owner| (owner, shared.peer_id)))
}

/// The root channel of a connection: the first channel of every
/// connection, from which all others are reached by sending channel ends
/// inside messages.
impl Connection {
    /// The root channel. `S` is what this side sends, `R` what it receives;
    /// the peer uses the same pair swapped. Returns `None` after the first
    /// call.
    pub fn root<S, R>(&self) -> Option<(mpsc::Sender<S>, mpsc::Receiver<R>)>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let shared = self.shared();
        let (send, recv) = shared.take_root()?;
        let tx = mpsc::Sender::from_port(PortHandle::new(shared.clone(), send));
        let rx = mpsc::Receiver::from_port(PortHandle::new(shared.clone(), recv));
        Some((tx, rx))
    }
}

/// A serde error that only carries its text, for attaching ports outside a
/// serializer.
#[derive(Debug)]
pub(crate) struct TextError(pub(crate) String);

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TextError {}

impl serde::ser::Error for TextError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TextError(msg.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob the receiver keeps holds its own message's buffer at most:
    /// slices of a message with a buffer of its own, a copy otherwise.
    #[test]
    fn received_blobs_never_pin_other_messages_bytes() {
        let own = Bytes::from(vec![1u8; 100]);
        let blobs = blobs_of(&own, 40, true);
        assert_eq!(blobs.as_ptr(), own[40..].as_ptr(), "a slice of the message");
        let mut read_buffer = BytesMut::from(&[2u8; 100][..]);
        let shared = read_buffer.split_to(60).freeze();
        let blobs = blobs_of(&shared, 40, false);
        assert_ne!(blobs.as_ptr(), shared[40..].as_ptr(), "a copy");
        assert_eq!(&blobs[..], &[2u8; 20]);
        assert!(blobs_of(&own, 100, true).is_empty());
    }

    async fn pair() -> (Connection, Connection) {
        let (a, b) = crate::transport::memory(64 * 1024);
        let cfg = crate::Config::default();
        tokio::try_join!(Connection::connect(a, cfg.clone()), Connection::accept(b, cfg)).unwrap()
    }

    /// A sender whose receiver is already gone, sent to the peer: its port's
    /// handle goes while the message is encoded, before it is queued. The
    /// message still announces the port, so the port must live until then;
    /// freed at once, the peer's `Fin` for it ended the connection with
    /// `UnknownPort`.
    #[tokio::test]
    async fn a_sender_whose_receiver_is_gone_can_be_sent() {
        let (c, s) = pair().await;
        let (ctx, _crx) = c.root::<mpsc::Sender<u32>, ()>().unwrap();
        let (_stx, mut srx) = s.root::<(), mpsc::Sender<u32>>().unwrap();
        let (tx, rx) = mpsc::channel::<u32>(1);
        drop(rx);
        ctx.send(tx).await.unwrap();
        let got = srx.recv().await.unwrap().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), got.closed()).await.expect("the receiver is gone");
        drop(got);
        let start = std::time::Instant::now();
        while c.stats().open_ports != 2 || s.stats().open_ports != 2 {
            assert!(c.error().is_none() && s.error().is_none(), "{:?} {:?}", c.error(), s.error());
            assert!(start.elapsed() < std::time::Duration::from_secs(5), "the port is never released");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(c.error().is_none() && s.error().is_none(), "{:?} {:?}", c.error(), s.error());
    }

    /// A message that fails to encode after a channel end was attached gives
    /// its port back.
    #[tokio::test]
    async fn a_message_that_does_not_encode_gives_its_ports_back() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let (c, _s) = pair().await;
        let (tx, _rx) = mpsc::channel::<u32>(1);
        let res = encode(c.shared(), &(tx, Fails));
        assert!(res.is_err());
        assert_eq!(c.stats().open_ports, 2);
    }

    /// A head that claims more bytes of blobs than its message has fails
    /// that message's decode, typed and counted, without touching a byte
    /// outside it; blobs within it decode as slices of it.
    #[tokio::test]
    async fn more_blobs_than_the_message_holds_fail_its_decode() {
        let (c, _s) = pair().await;
        let err = decode::<u8>(c.shared(), Vec::new(), &Bytes::from_static(&[7, 1, 2]), 100, None, true).unwrap_err();
        assert_eq!(err.to_string(), "decoding a u8 failed: 100 bytes of blobs in a message of 3 bytes");
        assert_eq!(c.stats().undecodable, 1);
        // (0, 2) is a blob of the two attached bytes, after the value's 2.
        let msg = Bytes::from_static(&[0, 2, 1, 2]);
        let blob: Blob = decode(c.shared(), Vec::new(), &msg, 2, None, true).unwrap();
        assert_eq!((&blob[..], blob.as_ptr()), (&[1, 2][..], msg[2..].as_ptr()));
    }

    /// Fills the window and the send buffers while nobody reads: full even
    /// after the driver had its turns to move what it could. Returns how
    /// many messages went in.
    async fn fill<T: Serialize + Send + 'static>(tx: &mpsc::Sender<T>, make: impl Fn() -> T) -> usize {
        let mut sent = 0;
        loop {
            while tx.try_send(make()).is_ok() {
                sent += 1;
            }
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            if tx.try_send(make()).is_err() {
                return sent;
            }
            sent += 1;
        }
    }

    /// A send waiting for room that is cancelled gives the message back and
    /// queues nothing: the receiver gets exactly what was sent before.
    #[tokio::test]
    async fn a_cancelled_send_gives_the_message_back_and_sends_nothing() {
        let (c, s) = pair().await;
        let (ctx, _crx) = c.root::<Vec<u8>, ()>().unwrap();
        let (_stx, mut srx) = s.root::<(), Vec<u8>>().unwrap();
        let sent = fill(&ctx, || vec![1; 16 * 1024]).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let send = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.send_unless(vec![2; 16 * 1024], async { drop(stopped.await) }).await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!send.is_finished(), "the send waits for room");
        stop.send(()).unwrap();
        let back = send.await.unwrap().expect("not an error").expect("cancelled: the message comes back");
        assert_eq!(back[0], 2);
        // An uncancelled send afterwards arrives right after the others.
        let last = tokio::spawn(async move { ctx.send(vec![3; 4]).await });
        for _ in 0..sent {
            assert_eq!(srx.recv().await.unwrap().unwrap()[0], 1);
        }
        assert_eq!(srx.recv().await.unwrap().unwrap(), vec![3; 4], "the cancelled message was never sent");
        last.await.unwrap().unwrap();
    }

    /// A message carrying channel ends is not handed back by a cancelled
    /// send: encoding moved its ends into it, so it waits and goes out.
    #[tokio::test]
    async fn a_send_carrying_channel_ends_is_not_cancelled() {
        let (c, s) = pair().await;
        let (ctx, _crx) = c.root::<(Vec<u8>, Option<mpsc::Receiver<u32>>), ()>().unwrap();
        let (_stx, mut srx) = s.root::<(), (Vec<u8>, Option<mpsc::Receiver<u32>>)>().unwrap();
        let sent = fill(&ctx, || (vec![1; 16 * 1024], None)).await;
        let (end_tx, end_rx) = mpsc::channel::<u32>(4);
        let send = tokio::spawn(async move { ctx.send_unless((vec![2; 4], Some(end_rx)), async {}).await });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!send.is_finished(), "not cancelled: it waits for room");
        for _ in 0..sent {
            srx.recv().await.unwrap().unwrap();
        }
        let (last, end) = srx.recv().await.unwrap().unwrap();
        assert_eq!(last, vec![2; 4]);
        assert!(matches!(send.await.unwrap(), Ok(None)), "sent, not handed back");
        end_tx.send(7).await.unwrap();
        assert_eq!(end.unwrap().recv().await.unwrap(), Some(7), "its channel end works");
    }

    /// A try-send that finds no room keeps a message carrying channel ends
    /// encoded (`Held`) rather than spoiling it, and one without ends comes
    /// back intact; the held one, sent later, arrives with a working end.
    #[tokio::test]
    async fn a_try_send_without_room_holds_a_message_with_ends() {
        use mpsc::Tried;
        let (c, s) = pair().await;
        let (ctx, _crx) = c.root::<(Vec<u8>, Option<mpsc::Receiver<u32>>), ()>().unwrap();
        let (_stx, mut srx) = s.root::<(), (Vec<u8>, Option<mpsc::Receiver<u32>>)>().unwrap();
        let sent = fill(&ctx, || (vec![1; 16 * 1024], None)).await;
        assert!(matches!(ctx.try_send_holding((vec![3; 4], None)), Ok(Tried::Full((v, None))) if v == [3; 4]));
        let (end_tx, end_rx) = mpsc::channel::<u32>(4);
        let Ok(Tried::Held(held)) = ctx.try_send_holding((vec![2; 4], Some(end_rx))) else {
            panic!("a message with an end is held")
        };
        let send = tokio::spawn(held.send());
        for _ in 0..sent {
            srx.recv().await.unwrap().unwrap();
        }
        let (last, end) = srx.recv().await.unwrap().unwrap();
        assert_eq!(last, vec![2; 4]);
        send.await.unwrap().unwrap();
        end_tx.send(7).await.unwrap();
        assert_eq!(end.unwrap().recv().await.unwrap(), Some(7), "its channel end works");
    }
}
