//! Receiving: `Data` and `Fin` from the peer, reassembly of messages that
//! span several chunks, and the chunks a handle pops.
//!
//! Protocol facts relied on here:
//! - A message is one first chunk (which carries the whole port table), any
//!   continuations, and a last chunk; chunks of one port never interleave
//!   with another message of that port. A continuation without a start, or
//!   a start in the middle of a message, breaks the protocol.
//! - Every `Data` frame costs its payload length plus
//!   [`CHUNK_OVERHEAD`](super::credit::CHUNK_OVERHEAD) of
//!   credit, so the chunks a receiver queues are bounded in number, not
//!   only in bytes, by its windows.
//! - A sender cuts a message short only after our `Stop`, which we send only
//!   once our handle is gone: with the handle open, a `Fin` inside a message
//!   breaks the protocol.
//! - Every check of a `Data` frame that can fail is done before any state
//!   changes, so a refused frame leaves the counters consistent.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::credit::{chunk_cost, grant_threshold};
use super::ports::{EndState, PeerState};
use super::transmit::Ctl;
use super::{Event, Mux, MuxError};
use crate::pool;
use crate::wire::{self, Packing, PortEntry, PortId, TraceContext, FLAG_FIRST, FLAG_LAST};

/// A message in one chunk at least this large is kept as it came, a slice
/// of the transport's read buffer; smaller ones are copied into their
/// port's buffer (see [`RecvHalf::keep`]), so that a small retained message
/// cannot pin a large read buffer.
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;

/// Size of a port's buffer for small received messages: one allocation
/// holds a run of them (a few dozen of the smallest).
const KEEP_BUFFER: usize = 1024;

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
    /// On a first chunk: the trace context the message carries, if any.
    pub trace: Option<Box<TraceContext>>,
    /// On a first chunk: bytes of blobs at the end of the message.
    pub attached: u32,
    /// On a first chunk: how the message is compressed, if it is (checked
    /// here against what we accept and our max message; unpacked by the
    /// reader).
    pub packing: Option<Packing>,
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
    let mut whole = pool::LARGE.take(len).unwrap_or_else(|| Vec::with_capacity(len));
    for segment in std::iter::once(&head).chain(&tail) {
        whole.extend_from_slice(segment);
    }
    pool::LARGE.bytes(whole)
}

/// A received `Data` payload: read in place from the transport's read
/// buffer (small ones), or split off it (see `Mux::handle_input`).
#[derive(Debug)]
pub(super) enum Payload<'a> {
    InPlace(&'a [u8]),
    Shared(Bytes),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::InPlace(s) => s,
            Payload::Shared(b) => b,
        }
    }

    /// Splits the message head off a first chunk.
    fn decode_head(&mut self) -> Result<wire::Head, wire::WireError> {
        match self {
            Payload::InPlace(s) => wire::decode_head(s),
            Payload::Shared(b) => wire::decode_head(b),
        }
    }
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

/// A received chunk with the bytes it took from the window.
#[derive(Debug)]
pub(super) struct QueuedChunk {
    pub(super) wire_len: usize,
    pub(super) chunk: Chunk,
}

/// A message whose first chunk arrived and whose last has not.
#[derive(Clone, Copy, Debug)]
pub(super) struct Assembling {
    /// Bytes of it so far (after its head).
    so_far: usize,
    /// Bytes it is to have, if its head said.
    expected: Option<usize>,
    /// Bytes it grows by once unpacked (see [`Packing::growth`]).
    growth: usize,
}

/// The half of a port whose receiver end we hold.
#[derive(Debug)]
pub(super) struct RecvHalf {
    pub(super) chunks: VecDeque<QueuedChunk>,
    /// Credit held by `chunks` (see [`MuxStats::recv_buffered`](super::MuxStats)).
    pub(super) buffered: usize,
    /// Credit the peer still holds for this port.
    pub(super) window_left: u64,
    /// Bytes consumed and not yet granted back.
    pub(super) unreported: u64,
    /// A `Credit` for this port is in the control queue.
    pub(super) credit_queued: bool,
    /// The message being received, if one is in progress.
    pub(super) assembling: Option<Assembling>,
    /// The message in progress, when it spans several chunks: each chunk is
    /// copied here as it arrives, so no chunk pins the transport's read
    /// buffer.
    pub(super) asm: Vec<u8>,
    /// Segments of the message in progress that filled up before `asm`.
    pub(super) asm_full: Vec<Bytes>,
    /// Size of the last message reassembled here.
    pub(super) last_len: usize,
    /// A whole message arrived here: a `Stop` now is only clean-up, not
    /// news that the peer's sender could act on (see `Mux::queue_terminal`).
    pub(super) received: bool,
    /// Where small messages in one chunk are copied as they arrive (see
    /// [`RecvHalf::keep`]); let go whenever the queue empties.
    pub(super) kept: BytesMut,
}

impl RecvHalf {
    /// `window` is our initial port window.
    pub(super) fn new(window: u32) -> RecvHalf {
        RecvHalf {
            chunks: VecDeque::new(),
            buffered: 0,
            window_left: window as u64,
            unreported: 0,
            credit_queued: false,
            assembling: None,
            asm: Vec::new(),
            asm_full: Vec::new(),
            last_len: 0,
            received: false,
            kept: BytesMut::new(),
        }
    }

    /// The message of a single chunk, as the port keeps it until read. A
    /// small one is copied out of the transport's read buffer into this
    /// port's buffer: a run of small messages shares one allocation instead
    /// of one each (which the receiving thread, not the driver's that made
    /// it, would free: measured dearer than the shared count of a split),
    /// and what a retained message pins is its own port's messages, never
    /// the read buffer nor other ports' data. The buffer is let go when the
    /// queue empties (see `pop_chunk`), so an idle port holds none.
    fn keep(&mut self, payload: Payload<'_>) -> Bytes {
        let payload = match payload {
            Payload::Shared(bytes) if bytes.len() >= ZERO_COPY_MIN => return bytes,
            Payload::Shared(ref bytes) => &bytes[..],
            Payload::InPlace(slice) => slice,
        };
        if self.kept.capacity() < payload.len() {
            self.kept = BytesMut::with_capacity(payload.len().max(KEEP_BUFFER));
        }
        self.kept.extend_from_slice(payload);
        self.kept.split().freeze()
    }

    /// Adds a chunk of a message that spans several to its reassembly.
    /// Returns the whole message with its last chunk (see [`Chunk::tail`]),
    /// and nothing before.
    ///
    /// A buffer that fills up is not grown (that would copy the message so
    /// far, while the driver holds the connection lock, stalling every
    /// port): the message goes on in a new segment as large as all before
    /// it, and the receiver joins the segments once it has the whole. So
    /// the first buffer is as large as the message's head said (`expected`,
    /// which the caller bounds), else as large as the last message: a
    /// message of a known size, or in a stream of one size, needs one
    /// segment. The buffers come from, and return to, the process's pool of
    /// large buffers (`crate::pool`). The segments never hold more than
    /// `max_message` together (the caller checked that the message fits).
    pub(super) fn reassemble(
        &mut self,
        first: bool,
        last: bool,
        mut payload: &[u8],
        max_message: usize,
        expected: Option<usize>,
    ) -> (Bytes, Vec<Bytes>) {
        if first {
            self.asm_full.clear();
            let like_last = || self.last_len.max(2 * payload.len()).min(pool::MAX);
            let hint = expected.unwrap_or_else(like_last).min(max_message);
            self.asm = pool::LARGE.take(hint).unwrap_or_default();
            // Without room for the whole, it comes in segments.
            let _ = self.asm.try_reserve_exact(pool::capacity_for(hint));
        }
        loop {
            let room = self.asm.capacity() - self.asm.len();
            if payload.len() <= room {
                self.asm.extend_from_slice(payload);
                break;
            }
            self.asm.extend_from_slice(&payload[..room]);
            payload = &payload[room..];
            let held = self.asm_full.iter().map(Bytes::len).sum::<usize>() + self.asm.len();
            let next = held.max(payload.len()).min(max_message - held);
            let full = std::mem::replace(&mut self.asm, Vec::with_capacity(next));
            self.asm_full.push(pool::LARGE.bytes(full));
        }
        if !last {
            return (Bytes::new(), Vec::new());
        }
        let tail = pool::LARGE.bytes(std::mem::take(&mut self.asm));
        self.last_len = self.asm_full.iter().map(Bytes::len).sum::<usize>() + tail.len();
        if self.asm_full.is_empty() {
            return (tail, Vec::new());
        }
        let mut segments = std::mem::take(&mut self.asm_full);
        let head = segments.remove(0);
        segments.push(tail);
        (head, segments)
    }

    /// Lets go of reassembly buffers: the port will not be read again.
    pub(super) fn drop_reassembly(&mut self) {
        pool::LARGE.give_back(std::mem::take(&mut self.asm));
        self.asm_full = Vec::new();
        self.kept = BytesMut::new();
    }
}

impl Mux {
    /// A `Data` frame: checked against the windows and the message limit,
    /// then queued for the handle (or dropped, if the handle is gone).
    pub(super) fn on_data(&mut self, id: PortId, flags: u8, mut payload: Payload<'_>) -> Result<(), MuxError> {
        self.unacked_bytes += payload.len();
        let wire_len = payload.len() as u64;
        let cost = chunk_cost(payload.len());
        if cost > self.conn_window_left {
            return Err(MuxError::CreditExceeded(0));
        }
        let max_message = self.cfg.local.max_message;
        let p = self.known_port(id)?;
        let (EndState::Receiver(r), PeerState::Open) = (&mut p.end, p.peer) else {
            return Err(MuxError::WrongEnd(id));
        };
        if cost > r.window_left {
            return Err(MuxError::CreditExceeded(id));
        }
        let first = flags & FLAG_FIRST != 0;
        let last = flags & FLAG_LAST != 0;
        let (so_far, expected, growth, wire::Head { ports, trace, sizes, packing }) = match (first, r.assembling) {
            (true, None) => {
                let head = payload.decode_head()?;
                let growth = match head.packing {
                    None => 0,
                    Some(p) if p.algorithm.count_ones() != 1 || p.algorithm & self.cfg.accepts == 0 => {
                        return Err(MuxError::UnacceptedCompression { port: id, algorithm: p.algorithm });
                    }
                    // Refused before a byte of it is buffered or unpacked.
                    Some(p) if p.plain > max_message => {
                        return Err(MuxError::MessageTooLarge { port: id, max: max_message })
                    }
                    Some(p) if !p.ratio_ok() => {
                        return Err(MuxError::PackRatio { port: id, plain: p.plain, packed: p.packed })
                    }
                    Some(p) => p.growth(),
                };
                (0, head.sizes.map(|s| s.len as usize), growth, head)
            }
            (false, Some(a)) => (a.so_far, a.expected, a.growth, wire::Head::default()),
            _ => return Err(MuxError::ChunkOrder(id)),
        };
        let size = so_far + payload.len();
        // The limit is on the message as it will be read: unpacked.
        if size.max(expected.unwrap_or(0)) + growth > max_message as usize {
            return Err(MuxError::MessageTooLarge { port: id, max: max_message });
        }
        if let Some(said) = expected {
            if size > said || (last && size < said) {
                return Err(MuxError::LengthMismatch { port: id, said: said as u32, got: size as u64 });
            }
        }
        self.check_announced(&ports)?;
        let p = self.ports.get_mut(&id).expect("checked above");
        let EndState::Receiver(r) = &mut p.end else { unreachable!("checked above") };
        r.window_left -= cost;
        self.conn_window_left -= cost;
        r.assembling = (!last).then_some(Assembling { so_far: size, expected, growth });
        r.received |= last;
        self.totals.bytes_in += wire_len;
        self.totals.messages_in += u64::from(last);
        for entry in &ports {
            self.accept_announced(*entry);
        }
        let p = self.ports.get_mut(&id).expect("checked above");
        let handle_open = p.handle_open();
        let EndState::Receiver(r) = &mut p.end else { unreachable!("checked above") };
        if handle_open {
            let (data, tail) = if first && last {
                (r.keep(payload), Vec::new())
            } else {
                let cap = self.cfg.local.conn_window as usize;
                r.reassemble(first, last, payload.as_slice(), max_message as usize, expected.map(|e| e.min(cap)))
            };
            r.buffered += cost as usize;
            let attached = sizes.map_or(0, |s| s.attached);
            let chunk = Chunk { first, last, ports, trace, attached, packing, data, tail };
            r.chunks.push_back(QueuedChunk { wire_len: cost as usize, chunk });
            self.recv_buffered += cost as usize;
            self.notify(Event::Readable(id));
        } else {
            // Stopped here: the message will never be read.
            self.totals.unread += u64::from(last);
            self.consumed_conn(cost as usize);
            self.discard_ports(&ports);
        }
        Ok(())
    }

    /// The peer's `Fin`: it will send nothing more on `port`.
    pub(super) fn on_fin(&mut self, port: PortId) -> Result<(), MuxError> {
        let p = self.known_port(port)?;
        let handle_open = p.handle_open();
        let (EndState::Receiver(r), PeerState::Open) = (&mut p.end, p.peer) else {
            return Err(MuxError::WrongEnd(port));
        };
        if r.assembling.is_some() && handle_open {
            return Err(MuxError::ChunkOrder(port));
        }
        r.assembling = None;
        p.peer = PeerState::Closed;
        self.notify(Event::Readable(port));
        self.maybe_release(port);
        Ok(())
    }

    /// Takes the next received chunk of `port`.
    pub(crate) fn pop_chunk(&mut self, id: PortId) -> Pop {
        let Some(p) = self.ports.get_mut(&id) else {
            return Pop::Finished;
        };
        let peer_gone = p.peer_gone();
        let EndState::Receiver(r) = &mut p.end else {
            return if peer_gone { Pop::Finished } else { Pop::Empty };
        };
        match r.chunks.pop_front() {
            Some(chunk) => {
                if r.chunks.is_empty() {
                    // The chunks handed out keep what they use of it.
                    r.kept = BytesMut::new();
                }
                let len = chunk.wire_len;
                r.buffered -= len;
                self.recv_buffered -= len;
                r.unreported += len as u64;
                if !r.credit_queued && !peer_gone && r.unreported >= grant_threshold(self.cfg.local.port_window) {
                    r.credit_queued = true;
                    self.control.push_back(Ctl::Credit(id));
                    self.wants_transmit = true;
                }
                self.consumed_conn(len);
                Pop::Chunk(chunk.chunk)
            }
            None if peer_gone => Pop::Finished,
            None => Pop::Empty,
        }
    }

    /// Pops the next chunk of `id` only if `want` accepts it.
    pub(crate) fn pop_chunk_if(&mut self, id: PortId, want: impl FnOnce(&Chunk) -> bool) -> Option<Chunk> {
        let next = self.ports.get(&id)?.receiver()?.chunks.front()?;
        if !want(&next.chunk) {
            return None;
        }
        match self.pop_chunk(id) {
            Pop::Chunk(c) => Some(c),
            Pop::Empty | Pop::Finished => None,
        }
    }
}
