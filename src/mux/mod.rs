//! The multiplexer: many ports over one ordered byte stream, as a state
//! machine without I/O and without a clock.
//!
//! Inputs are [`Mux::handle_input`] (bytes from the transport) and
//! [`Mux::handle_timeout`] (the time, passed in); commands are `send`,
//! `pop_chunk`, `close_end`, `open_port`; outputs are [`Mux::poll_transmit`]
//! (bytes for the transport), [`Mux::poll_timeout`] and [`Mux::poll_event`].
//!
//! Facts the code relies on:
//! - Ports are one-way. The holder of the sender end sends `Data` and,
//!   once its handle is gone, exactly one `Fin`; the holder of the receiver
//!   end sends `Credit` and, once its handle is gone, exactly one `Stop`. A
//!   side forgets a port when it has sent its terminal frame and received the
//!   peer's, so a reused id can never meet a stale entry: the peer only
//!   reuses an id after our terminal frame reached it, and its own terminal
//!   frame precedes the reuse on the stream.
//! - A port allocated here is unknown to the peer until the first chunk of
//!   the message carrying it has been sent; until then none of its frames
//!   leave. If that message is discarded unsent, the port is dropped without
//!   a frame.
//! - `Data`, `Credit`, `Fin` and `Stop` are reliable: each takes the next
//!   session sequence number (implicitly, by order) and stays in the replay
//!   buffer until the peer acknowledges it. A receiver acknowledges before it
//!   returns credit, so the `Data` frames in the replay buffer are bounded by
//!   the credit windows; a peer that never acknowledges is cut off once the
//!   buffer would exceed [`Mux::max_unacked`] frames
//!   ([`MuxError::Unacknowledged`]).
//! - Every `Data` frame costs its payload length plus [`CHUNK_OVERHEAD`] of
//!   credit, so the chunks a receiver queues are bounded in number, not only
//!   in bytes, by its windows.
//! - A port allocated here is unknown to the peer until announced: any frame
//!   for it before that is refused as [`MuxError::UnknownPort`].

mod port;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::wire::{self, End, Frame, FrameDecoder, HelloLimits, PortEntry, PortId, WireError, FLAG_FIRST, FLAG_LAST};
use port::{OutMsg, Port};

/// Which side of the connection this mux is; it decides port id parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The side that dialed. Allocates even port ids.
    Client,
    /// The side that accepted. Allocates odd port ids.
    Server,
}

impl Side {
    fn parity(self) -> u32 {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// Port on which the client sends and the server receives the root channel.
pub(crate) const ROOT_CLIENT_TO_SERVER: PortId = 2;
/// Port on which the server sends and the client receives the root channel.
pub(crate) const ROOT_SERVER_TO_CLIENT: PortId = 3;
const FIRST_ALLOCATED: u32 = 4;

/// Why a connection cannot go on. The first error ends the mux for good.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The peer's bytes do not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A frame for a port that does not exist here.
    #[error("frame for unknown port {0}")]
    UnknownPort(PortId),
    /// A frame that the holder of this end may not send (for example `Data`
    /// to the side holding the sender end).
    #[error("frame on port {0} from the wrong end")]
    WrongEnd(PortId),
    /// A port table names a port the peer may not allocate, or one in use.
    #[error("message announces port {0}, which is in use or not the peer's to allocate")]
    BadAnnounce(PortId),
    /// The peer has more ports open than we allow.
    #[error("peer exceeds the limit of {0} open ports")]
    TooManyPorts(u32),
    /// The peer sent more than the credit it was given.
    #[error("peer exceeded its credit on port {0}")]
    CreditExceeded(PortId),
    /// The peer's credit grants overflow.
    #[error("peer granted impossible credit on port {0}")]
    CreditOverflow(PortId),
    /// Chunks out of order: a continuation without a start, or a new start
    /// in the middle of a message.
    #[error("chunks of a message on port {0} are out of order")]
    ChunkOrder(PortId),
    /// A message larger than the limit.
    #[error("message on port {port} exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The port.
        port: PortId,
        /// Our limit.
        max: u32,
    },
    /// The peer left too many of our reliable frames unacknowledged: sending
    /// another would leave `frames` in the replay buffer, more than the
    /// peer's connection window / 64 + 65,536. `Data` frames alone stay below
    /// the first term (each costs at least 64 bytes of credit, which comes
    /// back only after the frame is acknowledged); the rest is slack for
    /// `Credit`, `Fin` and `Stop`, which a peer that never sends `Ack` could
    /// otherwise make us keep without bound.
    #[error("peer left {frames} reliable frames unacknowledged, more than allowed")]
    Unacknowledged {
        /// Frames that would be unacknowledged with the one refused.
        frames: u64,
    },
    /// The peer acknowledged frames it was never sent.
    #[error("peer acknowledged {acked} frames but only {sent} were sent")]
    BadAck {
        /// The acknowledged count.
        acked: u64,
        /// Frames sent on this session.
        sent: u64,
    },
    /// Nothing was heard from the peer within the idle timeout.
    #[error("peer silent for {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection.
    #[error("peer closed the connection (code {code}): {reason}")]
    PeerClosed {
        /// The peer's close code.
        code: u32,
        /// The peer's reason.
        reason: String,
    },
    /// We closed the connection.
    #[error("connection closed locally")]
    LocallyClosed,
}

/// Why a send was refused. The message is handed back.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The port's send buffer is full; wait for [`Event::Writable`].
    Full(OutMessage),
    /// The receiver end is gone; no send on this port can succeed.
    Closed(OutMessage),
    /// The message exceeds the peer's message size limit.
    TooLarge {
        /// The message.
        msg: OutMessage,
        /// The peer's limit.
        max: u32,
    },
}

/// A message ready to be sent: its bytes begin with its port table.
#[derive(Debug)]
pub(crate) struct OutMessage {
    /// Port table and payload, as encoded by [`wire::encode_table`].
    pub bytes: Bytes,
    /// The local ports the table announces.
    pub ports: Vec<PortId>,
}

/// A chunk of a received message.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// Starts a message.
    pub first: bool,
    /// Ends a message.
    pub last: bool,
    /// On a first chunk: the ports the message carries. The caller owns
    /// them and must claim or close each.
    pub ports: Vec<PortEntry>,
    /// The message, on its last chunk; nothing on the others. The mux
    /// reassembles a message that spans several chunks as they arrive.
    pub data: Bytes,
    /// Further segments of the message, when the mux reassembled a long
    /// one in pieces: the message is `data` followed by these.
    pub tail: Vec<Bytes>,
}

impl Chunk {
    /// The message this last chunk carries, in one buffer.
    #[cfg(test)]
    pub(crate) fn into_message(self) -> Bytes {
        join(self.data, self.tail)
    }
}

/// A message reassembled in segments, `head` then `tail`, in one buffer.
pub(crate) fn join(head: Bytes, tail: Vec<Bytes>) -> Bytes {
    if tail.is_empty() {
        return head;
    }
    let len = head.len() + tail.iter().map(Bytes::len).sum::<usize>();
    let mut whole = Vec::with_capacity(len);
    for segment in std::iter::once(&head).chain(&tail) {
        whole.extend_from_slice(segment);
    }
    Bytes::from(whole)
}

/// Something a handle may be waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The port has chunks to pop, or its sender finished.
    Readable(PortId),
    /// The port's send buffer has room again, or the port closed.
    Writable(PortId),
}

/// Result of popping from a port.
#[derive(Debug)]
pub(crate) enum Pop {
    /// A chunk.
    Chunk(Chunk),
    /// Nothing yet.
    Empty,
    /// The sender finished and everything was read.
    Finished,
}

/// Counters for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MuxStats {
    /// Ports known to this side, including the two root ports.
    pub open_ports: usize,
    /// Message bytes queued here and not yet sent, plus [`MSG_OVERHEAD`]
    /// per message.
    pub send_queued: usize,
    /// Credit held by received chunks not yet read by the application: their
    /// payload bytes plus [`CHUNK_OVERHEAD`] per chunk. At most the windows.
    /// (The payload of a message of several chunks sits in its port's
    /// reassembly segments, not in the chunks.)
    pub recv_buffered: usize,
    /// Sent bytes kept for replay until the peer acknowledges them.
    pub replay_bytes: usize,
    /// Reliable frames sent on this session.
    pub sent_seq: u64,
    /// Reliable frames received on this session.
    pub received_seq: u64,
}

/// Connection-level settings of one mux, ours and the peer's.
#[derive(Clone, Debug)]
pub(crate) struct MuxConfig {
    /// Our receive limits (what we announced).
    pub local: HelloLimits,
    /// The peer's receive limits (what it announced).
    pub peer: HelloLimits,
    /// Largest chunk we cut.
    pub chunk_size: u32,
    /// Bytes queued per port before `send` reports `Full`.
    pub send_buffer: u32,
    /// Bytes queued on all ports before `send` reports `Full` for a port
    /// that already has something queued.
    pub conn_send_buffer: u32,
    /// Time between pings.
    pub ping_interval: Duration,
    /// Silence after which the peer is declared dead.
    pub idle_timeout: Duration,
}

/// Output buffer for [`Mux::poll_transmit`]: small frames are copied into
/// one buffer, large payloads are referenced, ready for a vectored write.
#[derive(Debug, Default)]
pub(crate) struct Transmit {
    small: BytesMut,
    /// Segments in write order.
    pub segments: VecDeque<Bytes>,
    len: usize,
}

/// Payloads at least this large are written from their own buffer.
const COPY_THRESHOLD: usize = 4096;

impl Transmit {
    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len + self.small.len()
    }

    /// Nothing queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, frame: &Frame) {
        frame.encode_header(&mut self.small);
        if let Some(payload) = frame.data_payload() {
            if payload.len() < COPY_THRESHOLD {
                self.small.extend_from_slice(payload);
            } else {
                self.seal();
                self.len += payload.len();
                self.segments.push_back(payload.clone());
            }
        }
    }

    /// Moves the small-frame buffer into the segment list.
    pub(crate) fn seal(&mut self) {
        if !self.small.is_empty() {
            let b = self.small.split().freeze();
            self.len += b.len();
            self.segments.push_back(b);
        }
    }

    /// Marks `n` bytes of the front segments as written.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.segments.front_mut().expect("advance past the end");
            if n >= front.len() {
                n -= front.len();
                self.segments.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
}

/// The largest reassembly buffer a receiver keeps for its next message.
pub(crate) const RECLAIM_MAX: usize = 2 * 1024 * 1024;

/// Credit every `Data` frame costs beyond its payload. Charging it bounds
/// the per-chunk bookkeeping of a receiver by its window, however small the
/// chunks a peer sends.
pub(crate) const CHUNK_OVERHEAD: u64 = 64;

/// What a message queued for sending counts against the send buffers beyond
/// its bytes: its allocation and queue entry. Without it a stream of tiny
/// messages would hold many times the configured buffers in memory.
pub(crate) const MSG_OVERHEAD: usize = 64;

/// Credit a `Data` frame with `len` payload bytes consumes.
fn chunk_cost(len: usize) -> u64 {
    len as u64 + CHUNK_OVERHEAD
}

/// Reliable frames beyond those `Data` frames can account for that the peer
/// may leave unacknowledged (room for `Credit`, `Fin` and `Stop`).
const UNACKED_SLACK: u64 = 65_536;

/// A lone acknowledgement waits at most this long for other output to ride on.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(10);
/// ... or until this many reliable frames are unacknowledged.
pub(crate) const ACK_EVERY: u64 = 64;
/// ... or until this many terminal frames wait.
const LAZY_EVERY: usize = 64;
/// ... or until this many payload bytes arrived: the sender frees what it
/// keeps for replay only once acknowledged, and for bulk data 64 frames are
/// megabytes.
pub(crate) const ACK_BYTES: usize = 256 * 1024;

/// Control frames waiting to go out ahead of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctl {
    Credit(PortId),
    ConnCredit,
    Fin(PortId),
    Stop(PortId),
}

/// An identity-like hasher for port ids (they are small and not attacker
/// controlled in a way that matters: the table is bounded by `max_ports`).
#[derive(Default)]
struct PortHasher(u64);

impl Hasher for PortHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PortMap = HashMap<PortId, Port, BuildHasherDefault<PortHasher>>;

/// The multiplexer of one connection.
#[derive(Debug)]
pub(crate) struct Mux {
    side: Side,
    cfg: MuxConfig,
    decoder: FrameDecoder,
    ports: PortMap,
    next_local: u32,
    free_local: Vec<u32>,
    /// Live ports allocated by us / by the peer.
    local_count: u32,
    peer_count: u32,

    // Sending.
    ready: VecDeque<PortId>,
    control: VecDeque<Ctl>,
    conn_credit: u64,
    send_queued: usize,
    conn_blocked: Vec<PortId>,

    // Receiving.
    conn_window_left: u64,
    conn_unreported: u64,
    conn_credit_queued: bool,
    recv_buffered: usize,

    // Session sequence.
    sent_seq: u64,
    received_seq: u64,
    acked_sent: u64,
    /// Payload bytes received since the last acknowledgement we sent.
    unacked_bytes: usize,
    /// Reliable frames the peer will send again that we already have (see
    /// `resume`): dropped on arrival.
    duplicates: u64,
    replay: VecDeque<Frame>,
    replay_base: u64,
    replay_bytes: usize,
    replay_cursor: Option<usize>,

    // Liveness.
    last_heard: Instant,
    next_ping: Instant,
    ping_nonce: u64,
    pongs: Vec<u64>,
    ping_due: bool,
    /// When received frames must be acknowledged even with nothing else to
    /// send, and whether that time has come.
    ack_due: Option<Instant>,
    ack_now: bool,
    /// Terminal frames waiting to ride along (see `queue_terminal`).
    lazy: Vec<Ctl>,
    /// The latest time passed in, for deadlines set by commands.
    last_now: Instant,

    events: VecDeque<Event>,
    closing: Option<(u32, String)>,
    goaway_sent: bool,
    error: Option<MuxError>,
}

impl Mux {
    /// A mux for a fresh session. The two root ports exist from the start.
    pub(crate) fn new(side: Side, cfg: MuxConfig, now: Instant) -> Mux {
        let mut mux = Mux {
            side,
            decoder: FrameDecoder::new(cfg.local.max_frame),
            ports: PortMap::default(),
            next_local: FIRST_ALLOCATED + side.parity(),
            free_local: Vec::new(),
            local_count: 0,
            peer_count: 0,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            conn_credit: cfg.peer.conn_window as u64,
            send_queued: 0,
            conn_blocked: Vec::new(),
            conn_window_left: cfg.local.conn_window as u64,
            conn_unreported: 0,
            conn_credit_queued: false,
            recv_buffered: 0,
            sent_seq: 0,
            received_seq: 0,
            acked_sent: 0,
            unacked_bytes: 0,
            duplicates: 0,
            replay: VecDeque::new(),
            replay_base: 0,
            replay_bytes: 0,
            replay_cursor: None,
            last_heard: now,
            next_ping: now + cfg.ping_interval,
            ping_nonce: 0,
            pongs: Vec::new(),
            ping_due: false,
            ack_due: None,
            ack_now: false,
            lazy: Vec::new(),
            last_now: now,
            events: VecDeque::new(),
            closing: None,
            goaway_sent: false,
            error: None,
            cfg,
        };
        let (send_root, recv_root) = match side {
            Side::Client => (ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT),
            Side::Server => (ROOT_SERVER_TO_CLIENT, ROOT_CLIENT_TO_SERVER),
        };
        let (pw_peer, pw_local) = (mux.cfg.peer.port_window, mux.cfg.local.port_window);
        mux.ports.insert(send_root, Port::new(End::Sender, true, pw_peer));
        mux.ports.insert(recv_root, Port::new(End::Receiver, true, pw_local));
        mux
    }

    /// This side.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// The error that ended this mux, if any.
    pub(crate) fn error(&self) -> Option<&MuxError> {
        self.error.as_ref()
    }

    /// Counters.
    pub(crate) fn stats(&self) -> MuxStats {
        MuxStats {
            open_ports: self.ports.len(),
            send_queued: self.send_queued,
            recv_buffered: self.recv_buffered,
            replay_bytes: self.replay_bytes,
            sent_seq: self.sent_seq,
            received_seq: self.received_seq,
        }
    }

    fn is_local(&self, port: PortId) -> bool {
        port & 1 == self.side.parity()
    }

    // ----- commands --------------------------------------------------------

    /// Allocates a port whose `travelling` end will be sent to the peer in a
    /// message; this side holds the other end. Fails when the peer's port
    /// limit is reached.
    pub(crate) fn open_port(&mut self, travelling: End) -> Result<PortId, MuxError> {
        if self.local_count >= self.cfg.peer.max_ports {
            return Err(MuxError::TooManyPorts(self.cfg.peer.max_ports));
        }
        let id = match self.free_local.pop() {
            Some(id) => id,
            None => {
                let id = self.next_local;
                self.next_local = self.next_local.checked_add(2).ok_or(MuxError::TooManyPorts(u32::MAX))?;
                id
            }
        };
        let ours = match travelling {
            End::Sender => End::Receiver,
            End::Receiver => End::Sender,
        };
        let window = match ours {
            End::Sender => self.cfg.peer.port_window,
            End::Receiver => self.cfg.local.port_window,
        };
        self.ports.insert(id, Port::new(ours, false, window));
        self.local_count += 1;
        Ok(id)
    }

    /// Queues a message on a port whose sender end we hold.
    pub(crate) fn send(&mut self, port: PortId, msg: OutMessage) -> Result<(), SendError> {
        self.send_inner(port, msg, false)
    }

    /// Like [`Mux::send`], but ignores the send buffer limits. For one-shot
    /// replies, whose single message is bounded by the message size limit.
    pub(crate) fn send_unbuffered(&mut self, port: PortId, msg: OutMessage) -> Result<(), SendError> {
        self.send_inner(port, msg, true)
    }

    fn send_inner(&mut self, id: PortId, msg: OutMessage, force: bool) -> Result<(), SendError> {
        if self.error.is_some() || self.closing.is_some() {
            return Err(SendError::Closed(msg));
        }
        let max = self.cfg.peer.max_message;
        if msg.bytes.len() > max as usize {
            return Err(SendError::TooLarge { msg, max });
        }
        // The first chunk holds the whole port table; it must fit in one
        // frame and in the credit the peer can ever have outstanding (it
        // keeps up to a quarter of its window until the next grant).
        let first = (wire::table_len(msg.ports.len()) as u64 + CHUNK_OVERHEAD) as u32;
        let first_max = self.cfg.peer.max_frame.min(self.cfg.peer.port_window / 4 * 3);
        if first > first_max {
            return Err(SendError::TooLarge { msg, max: first_max });
        }
        let limit = self.cfg.send_buffer as usize;
        let conn_limit = self.cfg.conn_send_buffer as usize;
        let conn_full = self.send_queued >= conn_limit;
        let Some(p) = self.ports.get_mut(&id) else {
            return Err(SendError::Closed(msg));
        };
        debug_assert_eq!(p.ours, End::Sender, "send on a receiving port");
        if p.peer_gone() || !p.handle_open {
            return Err(SendError::Closed(msg));
        }
        // The connection limit bounds messages piling up behind others; a
        // port with nothing queued always takes one message (its sender
        // holds it anyway), so a large message queued on one port never
        // blocks the first message of another.
        let conn_full = conn_full && p.queued > 0;
        if !force && (p.queued >= limit || conn_full) {
            p.write_blocked = true;
            // Each port at most once: repeated refusals must not grow this.
            if conn_full && !self.conn_blocked.contains(&id) {
                self.conn_blocked.push(id);
            }
            return Err(SendError::Full(msg));
        }
        let len = msg.bytes.len() + MSG_OVERHEAD;
        p.queued += len;
        if p.announced && !p.in_ready && p.credit > CHUNK_OVERHEAD {
            p.in_ready = true;
            self.ready.push_back(id);
        }
        for carried in &msg.ports {
            if let Some(c) = self.ports.get_mut(carried) {
                if !c.announced {
                    c.carried = true;
                }
            }
        }
        let p = self.ports.get_mut(&id).expect("looked up above");
        p.queue.push_back(OutMsg { bytes: msg.bytes, ports: msg.ports, offset: 0 });
        self.send_queued += len;
        Ok(())
    }

    /// Whether a send on `port` would be accepted now.
    #[allow(dead_code, reason = "for a readiness check before a try-send; no caller yet")]
    pub(crate) fn send_ready(&self, port: PortId) -> bool {
        match self.ports.get(&port) {
            Some(p) => {
                p.peer_gone()
                    || p.queued == 0
                    || (p.queued < self.cfg.send_buffer as usize
                        && self.send_queued < self.cfg.conn_send_buffer as usize)
            }
            None => true,
        }
    }

    /// Whether the peer stopped reading `port` (sends fail with `Closed`).
    pub(crate) fn is_send_closed(&self, port: PortId) -> bool {
        self.error.is_some() || self.ports.get(&port).is_none_or(|p| p.peer_gone())
    }

    /// Takes the next received chunk of `port`.
    pub(crate) fn pop_chunk(&mut self, id: PortId) -> Pop {
        let Some(p) = self.ports.get_mut(&id) else {
            return Pop::Finished;
        };
        match p.chunks.pop_front() {
            Some(chunk) => {
                let len = chunk.wire_len;
                p.buffered -= len;
                self.recv_buffered -= len;
                p.unreported += len as u64;
                if !p.credit_queued && !p.peer_gone() && p.unreported >= (self.cfg.local.port_window as u64 / 4).max(1)
                {
                    p.credit_queued = true;
                    self.control.push_back(Ctl::Credit(id));
                }
                self.consumed_conn(len);
                Pop::Chunk(chunk.chunk)
            }
            None if p.peer_gone() => Pop::Finished,
            None => Pop::Empty,
        }
    }

    /// Pops the next chunk of `id` only if `want` accepts it.
    pub(crate) fn pop_chunk_if(&mut self, id: PortId, want: impl FnOnce(&Chunk) -> bool) -> Option<Chunk> {
        let next = self.ports.get(&id)?.chunks.front()?;
        if !want(&next.chunk) {
            return None;
        }
        match self.pop_chunk(id) {
            Pop::Chunk(c) => Some(c),
            Pop::Empty | Pop::Finished => None,
        }
    }

    /// Takes back the buffer of a reassembled message of `id` once it was
    /// decoded, to reassemble the next one in: a stream of large messages
    /// reuses two buffers instead of allocating (and page-faulting) one per
    /// message. Returns the buffer not kept (`buf`, or the smaller one it
    /// replaced), for the caller to free once it released the lock.
    pub(crate) fn reclaim(&mut self, id: PortId, mut buf: Vec<u8>) -> Vec<u8> {
        match self.ports.get_mut(&id) {
            Some(p) if p.handle_open && buf.capacity() <= RECLAIM_MAX && buf.capacity() > p.spare.capacity() => {
                buf.clear();
                std::mem::replace(&mut p.spare, buf)
            }
            _ => buf,
        }
    }

    fn consumed_conn(&mut self, len: usize) {
        self.conn_unreported += len as u64;
        if !self.conn_credit_queued && self.conn_unreported >= (self.cfg.local.conn_window as u64 / 4).max(1) {
            self.conn_credit_queued = true;
            self.control.push_back(Ctl::ConnCredit);
        }
    }

    /// The local handle of `port` is gone (or the port was received in a
    /// message and will never be claimed). The sender end finishes after its
    /// queue drains; the receiver end stops at once and drops what it holds.
    pub(crate) fn close_end(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        if !p.handle_open {
            return;
        }
        p.handle_open = false;
        match p.ours {
            End::Sender => {
                if p.queue.is_empty() || p.peer_gone() {
                    self.queue_terminal(id);
                }
            }
            End::Receiver => {
                p.drop_reassembly();
                let chunks: Vec<_> = p.chunks.drain(..).collect();
                let buffered = std::mem::take(&mut p.buffered);
                self.recv_buffered -= buffered;
                self.consumed_conn(buffered);
                for c in chunks {
                    self.discard_ports(&c.chunk.ports);
                }
                self.queue_terminal(id);
            }
        }
        // An aborted port had both terminal flags set while its handle was
        // open; the handle was the last thing holding it.
        self.maybe_release(id);
    }

    /// Closes every port of a table that will never be claimed.
    pub(crate) fn discard_ports(&mut self, ports: &[PortEntry]) {
        for entry in ports {
            self.close_end(entry.port);
        }
    }

    /// Begins a graceful close: a `GoAway` goes out, then the mux ends.
    pub(crate) fn close(&mut self, code: u32, reason: &str) {
        if self.closing.is_none() && self.error.is_none() {
            self.closing = Some((code, reason.to_owned()));
        }
    }

    /// Whether the `GoAway` of [`Mux::close`] has been handed to the transport.
    pub(crate) fn is_closed(&self) -> bool {
        self.goaway_sent || self.error.is_some()
    }

    /// Queues the terminal frame (Fin or Stop) of a port whose handle is gone,
    /// or forgets it at once if the peer never learnt of it.
    fn queue_terminal(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        if p.term_queued {
            return;
        }
        p.term_queued = true;
        if !p.announced {
            if p.carried {
                // A queued message will still announce the port: its terminal
                // frame waits for announce() (or the port dies with the
                // message in abort_carried). Freeing it now would let the id
                // be reused while the peer is about to learn of it.
                return;
            }
            // Never announced, and now never will be: nothing to tell the peer.
            p.term_sent = true;
            p.term_received = true;
            self.maybe_release(id);
            return;
        }
        // Terminal frames only free resources: like acknowledgements, they
        // ride along with other output, or go alone after ACK_DELAY. (A
        // request with a fresh reply port would otherwise cost an extra write
        // and wake-up on each side just to close the port.)
        self.lazy.push(match p.ours {
            End::Sender => Ctl::Fin(id),
            End::Receiver => Ctl::Stop(id),
        });
        self.ack_due.get_or_insert(self.last_now + ACK_DELAY);
    }

    fn maybe_release(&mut self, id: PortId) {
        let Some(p) = self.ports.get(&id) else { return };
        if !(p.term_sent && p.term_received && !p.handle_open) {
            return;
        }
        debug_assert!(p.queue.is_empty() || !p.announced);
        let p = self.ports.remove(&id).expect("checked above");
        // Messages never sent: their unannounced ports die with them.
        for m in p.queue {
            self.drop_queued(&m);
        }
        if id == ROOT_CLIENT_TO_SERVER || id == ROOT_SERVER_TO_CLIENT {
            return;
        }
        if self.is_local(id) {
            self.local_count -= 1;
            self.free_local.push(id);
        } else {
            self.peer_count -= 1;
        }
    }

    /// A queued message is dropped: if its first chunk never left, it no
    /// longer counts against the send buffer, and the ports it would have
    /// announced are void. (The rest of a message partly sent is the
    /// caller's to uncount.)
    fn drop_queued(&mut self, m: &OutMsg) {
        if m.offset == 0 {
            self.send_queued -= m.bytes.len() + MSG_OVERHEAD;
        }
        self.abort_carried(m);
    }

    /// A message is dropped unsent: if its first chunk never left, the ports
    /// it would have announced are void.
    fn abort_carried(&mut self, m: &OutMsg) {
        if m.offset > 0 {
            return;
        }
        for &id in &m.ports {
            if let Some(p) = self.ports.get_mut(&id) {
                if p.announced {
                    continue;
                }
                p.aborted = true;
                p.term_sent = true;
                p.term_received = true;
                p.term_queued = true;
                let queue: Vec<_> = p.queue.drain(..).collect();
                p.queued = 0;
                let ev = match p.ours {
                    End::Sender => Event::Writable(id),
                    End::Receiver => Event::Readable(id),
                };
                self.events.push_back(ev);
                for inner in &queue {
                    self.drop_queued(inner);
                }
                self.maybe_release(id);
            }
        }
    }

    // ----- inputs ----------------------------------------------------------

    /// Decodes and applies every complete frame in `buf`.
    pub(crate) fn handle_input(&mut self, buf: &mut bytes::BytesMut, now: Instant) -> Result<(), MuxError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.last_now = self.last_now.max(now);
        let mut any = false;
        let res = loop {
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    any = true;
                    if let Err(e) = self.handle_frame(frame) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        if self.ack_point() > self.acked_sent && self.ack_due.is_none() {
            self.ack_due = Some(now + ACK_DELAY);
        }
        if any {
            self.last_heard = now;
        }
        if let Err(e) = &res {
            self.fail(e.clone());
        }
        res
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), MuxError> {
        if frame.is_reliable() {
            if self.duplicates > 0 {
                self.duplicates -= 1;
                return Ok(());
            }
            self.received_seq += 1;
        }
        match frame {
            Frame::Data { port, flags, payload } => self.on_data(port, flags, payload),
            Frame::Credit { port: 0, bytes } => {
                self.conn_credit = self.conn_credit.checked_add(bytes as u64).ok_or(MuxError::CreditOverflow(0))?;
                if self.conn_credit > u32::MAX as u64 * 2 {
                    return Err(MuxError::CreditOverflow(0));
                }
                for id in self.ready_candidates() {
                    self.make_ready(id);
                }
                Ok(())
            }
            Frame::Credit { port, bytes } => {
                let p = self.known_port(port)?;
                if p.ours != End::Sender {
                    return Err(MuxError::WrongEnd(port));
                }
                p.credit = p.credit.checked_add(bytes as u64).ok_or(MuxError::CreditOverflow(port))?;
                if p.credit > u32::MAX as u64 * 2 {
                    return Err(MuxError::CreditOverflow(port));
                }
                self.make_ready(port);
                Ok(())
            }
            Frame::Fin { port } => {
                let p = self.known_port(port)?;
                if p.ours != End::Receiver || p.term_received {
                    return Err(MuxError::WrongEnd(port));
                }
                // A sender cuts a message short only after our Stop, which we
                // send only once our handle is gone; with the handle open, a
                // Fin inside a message is a violation.
                if p.assembling.is_some() && p.handle_open {
                    return Err(MuxError::ChunkOrder(port));
                }
                p.assembling = None;
                p.term_received = true;
                self.notify(Event::Readable(port));
                self.maybe_release(port);
                Ok(())
            }
            Frame::Stop { port } => {
                let p = self.known_port(port)?;
                if p.ours != End::Sender || p.term_received {
                    return Err(MuxError::WrongEnd(port));
                }
                p.term_received = true;
                // Nothing queued will be read: drop it (messages whose first
                // chunk left are the peer's to clean up).
                let queue: Vec<_> = p.queue.drain(..).collect();
                let partial_rest = queue
                    .iter()
                    .filter(|m| m.offset > 0)
                    .map(|m| m.bytes.len() - m.offset + MSG_OVERHEAD)
                    .sum::<usize>();
                p.queued = 0;
                let handle_open = p.handle_open;
                self.send_queued -= partial_rest;
                for m in &queue {
                    self.drop_queued(m);
                }
                self.notify(Event::Writable(port));
                self.wake_conn_blocked();
                if !handle_open {
                    self.queue_terminal(port);
                }
                self.maybe_release(port);
                Ok(())
            }
            Frame::Ack { received } => {
                if received > self.sent_seq {
                    return Err(MuxError::BadAck { acked: received, sent: self.sent_seq });
                }
                self.trim_replay(received);
                Ok(())
            }
            Frame::Ping { nonce } => {
                if self.pongs.len() < 16 {
                    self.pongs.push(nonce);
                }
                Ok(())
            }
            Frame::Pong { .. } => Ok(()),
            Frame::GoAway { code, reason } => Err(MuxError::PeerClosed { code, reason }),
        }
    }

    /// A port the peer may send frames for: one it knows of. A port we
    /// allocated is unknown to the peer until the message announcing it has
    /// started to leave, so a frame for it before then is as much a violation
    /// as one for an id that does not exist.
    fn known_port(&mut self, id: PortId) -> Result<&mut Port, MuxError> {
        match self.ports.get_mut(&id) {
            Some(p) if p.announced => Ok(p),
            _ => Err(MuxError::UnknownPort(id)),
        }
    }

    fn on_data(&mut self, id: PortId, flags: u8, mut payload: Bytes) -> Result<(), MuxError> {
        self.unacked_bytes += payload.len();
        let cost = chunk_cost(payload.len());
        if cost > self.conn_window_left {
            return Err(MuxError::CreditExceeded(0));
        }
        let max_message = self.cfg.local.max_message;
        let p = self.known_port(id)?;
        if p.ours != End::Receiver || p.term_received {
            return Err(MuxError::WrongEnd(id));
        }
        if cost > p.window_left {
            return Err(MuxError::CreditExceeded(id));
        }
        let first = flags & FLAG_FIRST != 0;
        let last = flags & FLAG_LAST != 0;
        let so_far = match (first, p.assembling) {
            (true, None) => 0,
            (false, Some(n)) => n,
            _ => return Err(MuxError::ChunkOrder(id)),
        };
        let ports = if first { wire::decode_table(&mut payload)? } else { Vec::new() };
        let size = so_far + payload.len();
        if size > max_message as usize {
            return Err(MuxError::MessageTooLarge { port: id, max: max_message });
        }
        // Every check that can fail is done before any state changes, so a
        // failed frame leaves the counters consistent.
        self.check_announced(&ports)?;
        let p = self.ports.get_mut(&id).expect("checked above");
        p.window_left -= cost;
        self.conn_window_left -= cost;
        p.assembling = if last { None } else { Some(size) };
        for entry in &ports {
            self.accept_announced(*entry);
        }
        let p = self.ports.get_mut(&id).expect("checked above");
        if p.handle_open {
            let (data, tail) = if first && last {
                (payload, Vec::new())
            } else {
                p.reassemble(first, last, &payload, max_message as usize)
            };
            p.buffered += cost as usize;
            let chunk = Chunk { first, last, ports, data, tail };
            p.chunks.push_back(port::QueuedChunk { wire_len: cost as usize, chunk });
            self.recv_buffered += cost as usize;
            self.notify(Event::Readable(id));
        } else {
            // Stopped here: the message will never be read.
            self.consumed_conn(cost as usize);
            self.discard_ports(&ports);
        }
        Ok(())
    }

    /// Checks a received port table: fresh ids of the peer's parity, within
    /// our port limit.
    fn check_announced(&self, ports: &[PortEntry]) -> Result<(), MuxError> {
        for (i, entry) in ports.iter().enumerate() {
            let id = entry.port;
            let repeated = ports[..i].iter().any(|e| e.port == id);
            if self.is_local(id) || id < FIRST_ALLOCATED || self.ports.contains_key(&id) || repeated {
                return Err(MuxError::BadAnnounce(id));
            }
        }
        if self.peer_count as usize + ports.len() > self.cfg.local.max_ports as usize {
            return Err(MuxError::TooManyPorts(self.cfg.local.max_ports));
        }
        Ok(())
    }

    /// Creates a port the peer announced (checked by `check_announced`).
    fn accept_announced(&mut self, entry: PortEntry) {
        let id = entry.port;
        let window = match entry.end {
            End::Sender => self.cfg.peer.port_window,
            End::Receiver => self.cfg.local.port_window,
        };
        self.ports.insert(id, Port::new(entry.end, true, window));
        self.peer_count += 1;
    }

    fn notify(&mut self, ev: Event) {
        let id = match ev {
            Event::Readable(id) | Event::Writable(id) => id,
        };
        if let Some(p) = self.ports.get_mut(&id) {
            if !p.event_pending {
                p.event_pending = true;
                self.events.push_back(ev);
            }
        }
    }

    fn ready_candidates(&self) -> Vec<PortId> {
        self.ports
            .iter()
            .filter(|(_, p)| p.ours == End::Sender && !p.in_ready && !p.queue.is_empty() && p.announced)
            .map(|(id, _)| *id)
            .collect()
    }

    fn make_ready(&mut self, id: PortId) {
        if let Some(p) = self.ports.get_mut(&id) {
            if !p.in_ready && p.announced && !p.queue.is_empty() && p.credit > CHUNK_OVERHEAD {
                p.in_ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Applies the passage of time: schedules pings and detects a silent
    /// peer.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), MuxError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.last_now = self.last_now.max(now);
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.cfg.idle_timeout {
            let e = MuxError::Timeout(silent);
            self.fail(e.clone());
            return Err(e);
        }
        if now >= self.next_ping {
            self.ping_due = true;
            self.next_ping = now + self.cfg.ping_interval;
        }
        if self.ack_due.is_some_and(|due| now >= due) {
            self.ack_now = true;
        }
        Ok(())
    }

    /// Forgets an idle timeout: the silent transport is abandoned and the
    /// session waits to resume on another, so sends must still queue and
    /// the resumed transport must not fail at once with the old timeout.
    pub(crate) fn forget_timeout(&mut self) {
        if matches!(self.error, Some(MuxError::Timeout(_))) {
            self.error = None;
        }
    }

    fn fail(&mut self, e: MuxError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    // ----- outputs ---------------------------------------------------------

    /// The next instant [`Mux::handle_timeout`] must be called.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let t = self.next_ping.min(self.last_heard + self.cfg.idle_timeout);
        self.ack_due.map_or(t, |due| t.min(due))
    }

    /// The next event for a handle.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        let (Event::Readable(id) | Event::Writable(id)) = ev;
        if let Some(p) = self.ports.get_mut(&id) {
            p.event_pending = false;
        }
        Some(ev)
    }

    /// Fills `out` with frames, control first, then data chunks round-robin
    /// across ports, until about `budget` bytes are queued.
    pub(crate) fn poll_transmit(&mut self, out: &mut Transmit, budget: usize) {
        if self.error.is_some() || self.goaway_sent {
            return;
        }
        if let Some(cursor) = self.replay_cursor.take() {
            for f in self.replay.iter().skip(cursor) {
                out.push(f);
            }
        }
        // Acknowledgements ride along with other output; alone they wait
        // for ACK_EVERY frames, ACK_BYTES or ACK_DELAY, so a request/response exchange
        // does not cost an extra write and wake-up per message.
        let ack_point = self.ack_point();
        let unacked = ack_point - self.acked_sent;
        let other_output = !self.control.is_empty()
            || !self.ready.is_empty()
            || !self.pongs.is_empty()
            || self.ping_due
            || self.closing.is_some();
        let due =
            self.ack_now || unacked >= ACK_EVERY || self.unacked_bytes >= ACK_BYTES || self.lazy.len() >= LAZY_EVERY;
        if other_output || due {
            if unacked > 0 {
                self.acked_sent = ack_point;
                self.unacked_bytes = 0;
                out.push(&Frame::Ack { received: ack_point });
            }
            self.control.extend(self.lazy.drain(..));
            self.ack_now = false;
            self.ack_due = None;
        }
        for nonce in self.pongs.drain(..) {
            out.push(&Frame::Pong { nonce });
        }
        if self.ping_due {
            self.ping_due = false;
            self.ping_nonce += 1;
            out.push(&Frame::Ping { nonce: self.ping_nonce });
        }
        while let Some(ctl) = self.control.pop_front() {
            if let Some(frame) = self.control_frame(ctl) {
                self.emit_reliable(frame, out);
            }
        }
        while out.len() < budget && self.error.is_none() {
            if self.conn_credit <= CHUNK_OVERHEAD {
                break;
            }
            let Some(id) = self.ready.pop_front() else { break };
            self.emit_chunk(id, out);
        }
        if self.error.is_some() {
            // Too much unacknowledged (see emit_reliable): the frames pushed
            // before the failure go out, nothing after it.
            out.seal();
            return;
        }
        if let Some((code, reason)) = self.closing.clone() {
            if self.control.is_empty() && (self.ready.is_empty() || self.conn_credit <= CHUNK_OVERHEAD) {
                out.push(&Frame::GoAway { code, reason });
                self.goaway_sent = true;
            }
        }
        out.seal();
    }

    fn control_frame(&mut self, ctl: Ctl) -> Option<Frame> {
        match ctl {
            Ctl::ConnCredit => {
                self.conn_credit_queued = false;
                let bytes = std::mem::take(&mut self.conn_unreported);
                self.conn_window_left += bytes;
                (bytes > 0).then_some(Frame::Credit { port: 0, bytes: bytes as u32 })
            }
            Ctl::Credit(port) => {
                let p = self.ports.get_mut(&port)?;
                p.credit_queued = false;
                if p.peer_gone() || p.term_queued {
                    return None;
                }
                let bytes = std::mem::take(&mut p.unreported);
                p.window_left += bytes;
                (bytes > 0).then_some(Frame::Credit { port, bytes: bytes as u32 })
            }
            Ctl::Fin(port) => {
                let p = self.ports.get_mut(&port)?;
                p.term_sent = true;
                Some(Frame::Fin { port })
            }
            Ctl::Stop(port) => {
                let p = self.ports.get_mut(&port)?;
                p.term_sent = true;
                Some(Frame::Stop { port })
            }
        }
    }

    /// Most reliable frames the peer may leave unacknowledged. `Data` frames
    /// cost at least [`CHUNK_OVERHEAD`] of connection credit each, and a
    /// receiver acknowledges them before it returns their credit, so at most
    /// `conn_window / CHUNK_OVERHEAD` of them are unacknowledged by a peer
    /// that follows the protocol. Twice that, because right after a resume
    /// the peer's replay may return credit for frames it counts as
    /// duplicates before its `Ack` covers them (see [`Mux::resume`]);
    /// [`UNACKED_SLACK`] covers the `Credit`, `Fin` and `Stop` frames sent
    /// meanwhile.
    pub(crate) fn max_unacked(&self) -> u64 {
        2 * (self.cfg.peer.conn_window as u64 / CHUNK_OVERHEAD) + UNACKED_SLACK
    }

    /// Sends a reliable frame and keeps it for replay, unless the replay
    /// buffer would exceed [`Mux::max_unacked`]: then the frame is not sent
    /// and the mux fails.
    fn emit_reliable(&mut self, frame: Frame, out: &mut Transmit) {
        if self.error.is_some() {
            return;
        }
        let unacked = self.sent_seq - self.replay_base + 1;
        if unacked > self.max_unacked() {
            self.fail(MuxError::Unacknowledged { frames: unacked });
            return;
        }
        out.push(&frame);
        self.sent_seq += 1;
        self.replay_bytes += frame.data_payload().map_or(0, |b| b.len());
        let release = match &frame {
            Frame::Fin { port } | Frame::Stop { port } => Some(*port),
            _ => None,
        };
        self.replay.push_back(frame);
        if let Some(port) = release {
            self.maybe_release(port);
        }
    }

    fn emit_chunk(&mut self, id: PortId, out: &mut Transmit) {
        // Chunks stay well inside the peer's window, so that waiting for a
        // quarter of it to come back never deadlocks.
        let chunk_size = self.cfg.chunk_size.min(self.cfg.peer.max_frame).min(self.cfg.peer.port_window / 2) as usize;
        let conn_credit = self.conn_credit;
        let Some(p) = self.ports.get_mut(&id) else { return };
        p.in_ready = false;
        let Some(m) = p.queue.front_mut() else { return };
        let remaining = m.bytes.len() - m.offset;
        let credit = p.credit.min(conn_credit).saturating_sub(CHUNK_OVERHEAD) as usize;
        let want = remaining.min(chunk_size);
        let min_first = if m.offset == 0 { wire::table_len(m.ports.len()) } else { 1 };
        // The first chunk holds the whole port table, even beyond
        // chunk_size; it must still fit the credit (n <= credit below).
        let need = min_first.min(remaining);
        // Do not cut silly little chunks while waiting for credit; the
        // receiver returns credit once a quarter of its window is consumed.
        // Waiting ports are made ready again when credit arrives.
        if credit < need || (credit < want && credit < want.min(chunk_size / 8)) {
            return;
        }
        let n = want.min(credit).max(need);
        let first = m.offset == 0;
        let last = m.offset + n == m.bytes.len();
        // A message sent in one chunk moves into the frame (and from there
        // into the replay buffer): no slice, no shared reference count.
        let payload = if first && last { std::mem::take(&mut m.bytes) } else { m.bytes.slice(m.offset..m.offset + n) };
        m.offset += n;
        let carried = if first { std::mem::take(&mut m.ports) } else { Vec::new() };
        p.credit -= chunk_cost(n);
        let released = n + if last { MSG_OVERHEAD } else { 0 };
        p.queued -= released;
        if last {
            p.queue.pop_front();
        }
        let more = !p.queue.is_empty();
        let finish = !more && !p.handle_open;
        let writable = p.write_blocked && p.queued < self.cfg.send_buffer as usize;
        if writable {
            p.write_blocked = false;
        }
        if more && p.credit > CHUNK_OVERHEAD {
            p.in_ready = true;
            self.ready.push_back(id);
        }
        self.conn_credit -= chunk_cost(n);
        self.send_queued -= released;
        let flags = if first { FLAG_FIRST } else { 0 } | if last { FLAG_LAST } else { 0 };
        self.emit_reliable(Frame::Data { port: id, flags, payload }, out);
        if writable {
            self.notify(Event::Writable(id));
        }
        self.wake_conn_blocked();
        for carried_id in carried {
            self.announce(carried_id);
        }
        if finish {
            self.queue_terminal(id);
        }
    }

    /// Ports refused for a full connection send queue are told when it has
    /// room again (after data left, or queued data was dropped).
    fn wake_conn_blocked(&mut self) {
        if self.send_queued < self.cfg.conn_send_buffer as usize && !self.conn_blocked.is_empty() {
            for blocked in std::mem::take(&mut self.conn_blocked) {
                self.notify(Event::Writable(blocked));
            }
        }
    }

    /// The message carrying `id` has left: the peer knows the port now.
    fn announce(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        p.announced = true;
        p.carried = false;
        if p.term_queued {
            // Its handle went away while a queued message carried it:
            // queue_terminal deferred the terminal frame until now.
            p.term_queued = false;
            self.queue_terminal(id);
            return;
        }
        if p.credit_queued {
            self.control.push_back(Ctl::Credit(id));
        }
        self.make_ready(id);
    }

    /// A message that will not be sent after all (refused, or its send was
    /// cancelled): the local ports it would have announced are void.
    pub(crate) fn discard_unsent(&mut self, msg: OutMessage) {
        self.abort_carried(&OutMsg { bytes: Bytes::new(), ports: msg.ports, offset: 0 });
    }

    /// Control frames are waiting to be sent (for example credit returned by
    /// a read): the driver should run.
    pub(crate) fn has_pending_control(&self) -> bool {
        !self.control.is_empty()
    }

    // ----- session resume ------------------------------------------------

    /// Reliable frames received so far; sent in the resume handshake.
    pub(crate) fn received_seq(&self) -> u64 {
        self.received_seq
    }

    /// The count our acknowledgements report: frames received, less the
    /// duplicates still expected. After a resume the peer replays from the
    /// count we told it, and we drop the first `duplicates` frames of that
    /// replay because an old transport delivered them since. Acknowledging
    /// them would let the peer forget them before it replays: it would
    /// replay from further on, and we would drop new frames instead.
    fn ack_point(&self) -> u64 {
        self.received_seq - self.duplicates
    }

    /// Resumes on a new transport: the peer has received `peer_received`
    /// frames; everything after that is sent again, before new frames.
    ///
    /// `told` is the count of frames received that we gave the peer in the
    /// resume handshake. The previous transport may have delivered more
    /// since (an accepting side learns of a resume before its old transport
    /// fails): the peer sends those again from `told` on, and they are
    /// dropped as duplicates.
    pub(crate) fn resume(&mut self, peer_received: u64, told: u64, now: Instant) -> Result<(), MuxError> {
        if peer_received < self.replay_base || peer_received > self.sent_seq {
            return Err(MuxError::BadAck { acked: peer_received, sent: self.sent_seq });
        }
        if told > self.received_seq {
            return Err(MuxError::BadAck { acked: told, sent: self.received_seq });
        }
        self.duplicates = self.received_seq - told;
        self.trim_replay(peer_received);
        self.replay_cursor = Some(0);
        self.acked_sent = 0;
        // Tell the peer where we are straight away.
        self.ack_now = true;
        self.last_heard = now;
        self.next_ping = now + self.cfg.ping_interval;
        self.goaway_sent = false;
        Ok(())
    }

    /// Forgets the replayable frames the peer has received.
    fn trim_replay(&mut self, received: u64) {
        while self.replay_base < received {
            let f = self.replay.pop_front().expect("replay holds every unacked frame");
            self.replay_bytes -= f.data_payload().map_or(0, |b| b.len());
            self.replay_base += 1;
        }
    }
}
