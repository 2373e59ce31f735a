//! Sending: the send queue of each port, the send buffers that bound it, and
//! the chunk scheduler that cuts queued messages into `Data` frames,
//! round-robin across the ports that are ready.
//!
//! Protocol facts relied on here:
//! - A message's first chunk carries its whole port table, even beyond the
//!   chunk size; so that table must fit one frame and the credit the peer
//!   can ever have outstanding (checked by `send`).
//! - Chunks are at most half the peer's port window, and a port waits for
//!   credit rather than cut silly little chunks: the receiver returns credit
//!   once a quarter of its window is consumed, so this never deadlocks.
//! - A port is in the `ready` queue at most once (`SendHalf::in_ready`), and
//!   only when it is announced, has a message queued and more than
//!   [`CHUNK_OVERHEAD`] of credit. Whoever adds credit or a message makes it
//!   ready; `emit_chunk` takes it out and puts it back at the end while it
//!   can go on, which is the round robin.
//! - The send buffers count [`MSG_OVERHEAD`] per message beside its bytes;
//!   a message counts until its last chunk leaves, or until it is dropped.

use std::collections::VecDeque;

use bytes::Bytes;

use super::credit::{chunk_cost, CHUNK_OVERHEAD};
use super::ports::{EndState, Known, PeerState};
use super::transmit::Transmit;
use super::{Event, Mux, MuxError, SendError};
use crate::wire::{self, Frame, PortId, FLAG_FIRST, FLAG_LAST};

/// What a message queued for sending counts against the send buffers beyond
/// its bytes: its allocation and queue entry. Without it a stream of tiny
/// messages would hold many times the configured buffers in memory.
pub(crate) const MSG_OVERHEAD: usize = 64;

/// Which limits a send must fit besides the message size limits, which are
/// always checked. The caller picks: the mux knows nothing of the channels
/// above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendLimit {
    /// The port's and the connection's send buffers
    /// ([`MuxConfig::send_buffer`](super::MuxConfig::send_buffer),
    /// [`MuxConfig::conn_send_buffer`](super::MuxConfig::conn_send_buffer)):
    /// a send that finds them full is refused with [`SendError::Full`].
    Buffers,
    /// None: for a caller that bounds what it queues on the port itself (a
    /// channel that carries a single message in its life).
    MessageOnly,
}

/// A message ready to be sent: its bytes begin with its head (port table,
/// trace context), and blobs may follow in their own buffers.
#[derive(Debug)]
pub(crate) struct OutMessage {
    /// Head (port table, trace context) and payload, as encoded by
    /// [`wire::encode_head`].
    pub bytes: Bytes,
    /// Segments that follow `bytes` on the wire, each sent from its own
    /// buffer: a message's blobs (see [`Blob`](crate::Blob)), the body of a
    /// large relayed message.
    pub more: Vec<Bytes>,
    /// The local ports the table announces.
    pub ports: Vec<PortId>,
    /// Whether a send of it was refused `Full` already, and counted: a
    /// send that waits for room is counted once, however often it is
    /// retried.
    pub counted_full: bool,
}

impl OutMessage {
    pub(crate) fn new(bytes: Bytes, ports: Vec<PortId>) -> OutMessage {
        OutMessage { bytes, more: Vec::new(), ports, counted_full: false }
    }

    /// The message with `segments` after its bytes.
    pub(crate) fn with_more(mut self, segments: Vec<Bytes>) -> OutMessage {
        self.more = segments;
        self
    }

    /// Bytes of the whole message.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() + self.more.iter().map(Bytes::len).sum::<usize>()
    }
}

/// A message in a port's send queue: the segment being cut into chunks
/// (its bytes, then each segment after them), and what is left after it.
/// (Lengths are `u32`: a queued message fits the peer's `max_message`.)
#[derive(Debug)]
pub(super) struct OutMsg {
    /// The segment being sent; `offset` bytes of it have been.
    pub(super) bytes: Bytes,
    pub(super) offset: u32,
    /// Bytes of the message not sent yet.
    pub(super) left: u32,
    /// Bytes of its head (port table, trace context, sizes): what its first
    /// chunk must hold.
    pub(super) head: u32,
    /// Its first chunk left.
    pub(super) started: bool,
    /// The segments after `bytes`, last first.
    pub(super) rest: Vec<Bytes>,
    /// Local ports announced by this message (emptied once announced).
    pub(super) ports: Vec<PortId>,
}

impl OutMsg {
    /// `msg`, of `len` bytes with a head of `head` (each at most a `u32`).
    #[inline(always)]
    fn new(msg: OutMessage, len: u32, head: u32) -> OutMsg {
        let OutMessage { bytes, mut more, ports, .. } = msg;
        if !more.is_empty() {
            // An empty segment would make an empty chunk; popped from the end.
            more.retain(|b| !b.is_empty());
            more.reverse();
        }
        OutMsg { bytes, offset: 0, left: len, head, started: false, rest: more, ports }
    }
}

/// The half of a port whose sender end we hold.
#[derive(Debug)]
pub(super) struct SendHalf {
    pub(super) queue: VecDeque<OutMsg>,
    /// What `queue` counts against the send buffers: bytes not yet sent, plus
    /// [`MSG_OVERHEAD`] per message.
    pub(super) queued: usize,
    /// Credit the peer granted and we have not used.
    pub(super) credit: u64,
    /// The port is in `Mux::ready`.
    pub(super) in_ready: bool,
    /// A send was refused with `Full`; the handle waits for `Writable`.
    pub(super) write_blocked: bool,
}

impl SendHalf {
    /// `window` is the peer's initial port window.
    pub(super) fn new(window: u32) -> SendHalf {
        SendHalf { queue: VecDeque::new(), queued: 0, credit: window as u64, in_ready: false, write_blocked: false }
    }
}

impl Mux {
    /// Queues a message on a port whose sender end we hold, if it fits the
    /// message size limits and `send_limit`.
    pub(crate) fn send(&mut self, id: PortId, mut msg: OutMessage, send_limit: SendLimit) -> Result<(), SendError> {
        if self.error.is_some() || self.closing.is_some() {
            return Err(SendError::Closed(msg));
        }
        let max = self.cfg.peer.max_message;
        let size = msg.len();
        if size > max as usize {
            return Err(SendError::TooLarge { msg, max });
        }
        // The first chunk holds the whole head (port table, trace context); it must fit in one
        // frame and in the credit the peer can ever have outstanding (it
        // keeps up to a quarter of its window until the next grant).
        let head = wire::head_len(&msg.bytes);
        let first = (head as u64 + CHUNK_OVERHEAD) as u32;
        let first_max = self.cfg.peer.max_frame.min(self.cfg.peer.port_window / 4 * 3);
        if first > first_max {
            return Err(SendError::TooLarge { msg, max: first_max });
        }
        let limit = self.cfg.send_buffer as usize;
        let conn_limit = self.cfg.conn_send_buffer as usize;
        let conn_full = self.send_queued >= conn_limit;
        // One lookup of the port, beside the other fields it updates.
        let Mux { ports, ready, wants_transmit, conn_blocked, totals, send_queued, .. } = self;
        let Some(p) = ports.get_mut(&id) else {
            return Err(SendError::Closed(msg));
        };
        debug_assert!(matches!(p.end, EndState::Sender(_)), "send on a receiving port");
        let closed = p.peer_gone() || !p.handle_open();
        let announced = p.known == Known::Announced;
        let (EndState::Sender(s), false) = (&mut p.end, closed) else {
            return Err(SendError::Closed(msg));
        };
        // The connection limit bounds messages piling up behind others; a
        // port with nothing queued always takes one message (its sender
        // holds it anyway), so a large message queued on one port never
        // blocks the first message of another.
        let conn_full = conn_full && s.queued > 0;
        if send_limit == SendLimit::Buffers && (s.queued >= limit || conn_full) {
            s.write_blocked = true;
            // Each port at most once: repeated refusals must not grow this.
            if conn_full && !conn_blocked.contains(&id) {
                conn_blocked.push(id);
            }
            if !msg.counted_full {
                msg.counted_full = true;
                totals.full += 1;
            }
            return Err(SendError::Full(msg));
        }
        let len = size + MSG_OVERHEAD;
        s.queued += len;
        if announced && !s.in_ready && s.credit > CHUNK_OVERHEAD {
            s.in_ready = true;
            ready.push_back(id);
            *wants_transmit = true;
        }
        // Checked against the peer's max_message above.
        s.queue.push_back(OutMsg::new(msg, size as u32, head as u32));
        *send_queued += len;
        totals.messages_out += 1;
        totals.bytes_out += (len - MSG_OVERHEAD) as u64;
        Ok(())
    }

    /// Whether a send on `port` would be accepted now.
    #[allow(dead_code, reason = "for a readiness check before a try-send; no caller yet")]
    pub(crate) fn send_ready(&self, port: PortId) -> bool {
        match self.ports.get(&port) {
            Some(p) => {
                p.peer_gone()
                    || p.sender().is_none_or(|s| {
                        s.queued == 0
                            || (s.queued < self.cfg.send_buffer as usize
                                && self.send_queued < self.cfg.conn_send_buffer as usize)
                    })
            }
            None => true,
        }
    }

    /// What a sender's port has outstanding: bytes queued, plus the credit
    /// spent that the peer has not granted back yet (what its receiver has
    /// not consumed, or consumed too recently to report). `None` if `port`
    /// is not a live sender.
    pub(crate) fn backlog(&self, port: PortId) -> Option<u64> {
        let p = self.ports.get(&port)?;
        let s = p.sender()?;
        let window = self.cfg.peer.port_window as u64;
        Some(s.queued as u64 + window.saturating_sub(s.credit))
    }

    /// Whether the peer stopped reading `port` (sends fail with `Closed`).
    pub(crate) fn is_send_closed(&self, port: PortId) -> bool {
        self.error.is_some() || self.ports.get(&port).is_none_or(|p| p.peer_gone())
    }

    /// A queued message is dropped: if its first chunk never left, it no
    /// longer counts against the send buffer, and the ports it would have
    /// announced are void. (The rest of a message partly sent is the
    /// caller's to uncount.)
    pub(super) fn drop_queued(&mut self, m: &OutMsg) {
        if !m.started {
            self.send_queued -= m.left as usize + MSG_OVERHEAD;
        }
        self.abort_carried(m.started, &m.ports);
    }

    /// The peer's `Stop`: it will read nothing more on `port`.
    pub(super) fn on_stop(&mut self, port: PortId) -> Result<(), MuxError> {
        let p = self.known_port(port)?;
        let handle_open = p.handle_open();
        let (EndState::Sender(s), PeerState::Open) = (&mut p.end, p.peer) else {
            return Err(MuxError::WrongEnd(port));
        };
        p.peer = PeerState::Closed;
        // Nothing queued will be read: drop it (messages whose first chunk
        // left are the peer's to clean up), counted unread here, where each
        // one's last chunk is.
        let queue: Vec<_> = s.queue.drain(..).collect();
        let partial_rest = queue.iter().filter(|m| m.started).map(|m| m.left as usize + MSG_OVERHEAD).sum::<usize>();
        s.queued = 0;
        self.send_queued -= partial_rest;
        self.totals.unread += queue.len() as u64;
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

    /// Sender ports that may have become ready with connection credit.
    pub(super) fn ready_candidates(&self) -> Vec<PortId> {
        self.ports
            .iter()
            .filter(|(_, p)| {
                p.known == Known::Announced && p.sender().is_some_and(|s| !s.in_ready && !s.queue.is_empty())
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Puts `id` in the ready queue if it can send a chunk.
    pub(super) fn make_ready(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        if p.known != Known::Announced {
            return;
        }
        if let EndState::Sender(s) = &mut p.end {
            if !s.in_ready && !s.queue.is_empty() && s.credit > CHUNK_OVERHEAD {
                s.in_ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Cuts the next chunk of `id`'s first queued message into `out`, if
    /// credit allows. Fails only when the replay buffer is full (see
    /// [`Mux::emit_reliable`]).
    pub(super) fn emit_chunk(&mut self, id: PortId, out: &mut Transmit) -> Result<(), MuxError> {
        // Chunks stay well inside the peer's window, so that waiting for a
        // quarter of it to come back never deadlocks.
        let chunk_size = self.cfg.chunk_size.min(self.cfg.peer.max_frame).min(self.cfg.peer.port_window / 2) as usize;
        let conn_credit = self.conn_credit;
        let Some(p) = self.ports.get_mut(&id) else { return Ok(()) };
        let handle_open = p.handle_open();
        let EndState::Sender(s) = &mut p.end else { return Ok(()) };
        s.in_ready = false;
        let Some(m) = s.queue.front_mut() else { return Ok(()) };
        // Chunks never span segments: a blob leaves from its own buffer.
        let offset = m.offset as usize;
        let remaining = m.bytes.len() - offset;
        let credit = s.credit.min(conn_credit).saturating_sub(CHUNK_OVERHEAD) as usize;
        let want = remaining.min(chunk_size);
        let first = !m.started;
        let min_first = if first { m.head as usize } else { 1 };
        // The first chunk holds the whole head, even beyond
        // chunk_size; it must still fit the credit (n <= credit below).
        let need = min_first.min(remaining);
        // Do not cut silly little chunks while waiting for credit; the
        // receiver returns credit once a quarter of its window is consumed.
        // Waiting ports are made ready again when credit arrives.
        if credit < need || (credit < want && credit < want.min(chunk_size / 8)) {
            return Ok(());
        }
        let n = want.min(credit).max(need);
        let last = n == m.left as usize;
        // A segment sent in one chunk moves into the frame (and from there
        // into the replay buffer): no slice, no shared reference count.
        let payload = if n == m.bytes.len() { std::mem::take(&mut m.bytes) } else { m.bytes.slice(offset..offset + n) };
        // n is at most what is left of the message, a u32.
        m.offset += n as u32;
        m.left -= n as u32;
        m.started = true;
        if n == remaining {
            if let Some(next) = m.rest.pop() {
                m.bytes = next;
                m.offset = 0;
            }
        }
        let carried = if first { std::mem::take(&mut m.ports) } else { Vec::new() };
        s.credit -= chunk_cost(n);
        let released = n + if last { MSG_OVERHEAD } else { 0 };
        s.queued -= released;
        if last {
            s.queue.pop_front();
        }
        let more = !s.queue.is_empty();
        let finish = !more && !handle_open;
        let writable = s.write_blocked && s.queued < self.cfg.send_buffer as usize;
        if writable {
            s.write_blocked = false;
        }
        if more && s.credit > CHUNK_OVERHEAD {
            s.in_ready = true;
            self.ready.push_back(id);
        }
        self.conn_credit -= chunk_cost(n);
        self.send_queued -= released;
        let flags = if first { FLAG_FIRST } else { 0 } | if last { FLAG_LAST } else { 0 };
        self.emit_reliable(Frame::Data { port: id, flags, payload }, out)?;
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
        Ok(())
    }

    /// Ports refused for a full connection send queue are told when it has
    /// room again (after data left, or queued data was dropped).
    pub(super) fn wake_conn_blocked(&mut self) {
        if self.send_queued < self.cfg.conn_send_buffer as usize && !self.conn_blocked.is_empty() {
            for blocked in std::mem::take(&mut self.conn_blocked) {
                self.notify(Event::Writable(blocked));
            }
        }
    }
}
