//! Ports: their ids and allocation, the port table, and the life of one port
//! from its opening (or announcement) until both sides forget it.
//!
//! A [`Port`] is three small state machines and the state of the end we
//! hold: whether the peer knows of it ([`Known`]), how far our half has got
//! towards our terminal frame ([`LocalState`]), and whether the peer's
//! terminal frame has arrived ([`PeerState`]); then the sending or receiving
//! half ([`EndState`], in `send.rs` and `recv.rs`).
//!
//! Protocol facts relied on here:
//! - Ids have a parity: the client (dialer) allocates even ids, the server
//!   odd ones, from [`FIRST_ALLOCATED`] on. 2 and 3 are the root ports, which
//!   exist from the start; 0 stands for the connection in `Credit`. A peer
//!   announcing an id of our parity, below [`FIRST_ALLOCATED`], or in use,
//!   breaks the protocol.
//! - Ports are one-way. The holder of the sender end sends `Data` and, once
//!   its handle is gone, exactly one `Fin`; the holder of the receiver end
//!   sends `Credit` and, once its handle is gone, exactly one `Stop`. A side
//!   forgets a port when it has sent its terminal frame and received the
//!   peer's, so a reused id can never meet a stale entry: the peer only
//!   reuses an id after our terminal frame reached it, and its own terminal
//!   frame precedes the reuse on the stream.
//! - A port allocated here is unknown to the peer until the first chunk of
//!   the message carrying it has been sent; until then none of its frames
//!   leave, and any frame for it from the peer is refused as
//!   [`MuxError::UnknownPort`]. If that message is discarded unsent, the
//!   port is dropped without a frame.
//! - A port is opened for the message that will carry it, and its id stays
//!   taken until that message is queued and announces it, or is given back
//!   with `discard_unsent`, even if the port's handle goes first (which it
//!   may while the message is still being encoded or waits after `Full`).
//!   Freeing it earlier would let the message announce an id this side no
//!   longer knows, or one reused for another port.
//! - A port travels in one message at most: its end moves into the message
//!   that announces it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::recv::RecvHalf;
use super::send::SendHalf;
use super::{Event, Mux, MuxError, OutMessage};
use crate::wire::{End, Frame, PortEntry, PortId};

/// Which side of the connection this mux is; it decides port id parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The side that dialed. Allocates even port ids.
    Client,
    /// The side that accepted. Allocates odd port ids.
    Server,
}

impl Side {
    /// How logs name it: who dialed.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Client => "dialed",
            Side::Server => "accepted",
        }
    }

    pub(super) fn parity(self) -> u32 {
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
/// The lowest id either side allocates.
pub(super) const FIRST_ALLOCATED: u32 = 4;

/// An identity-like hasher for port ids (they are small and not attacker
/// controlled in a way that matters: the table is bounded by `max_ports`).
#[derive(Default)]
pub(super) struct PortHasher(u64);

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

/// The port table.
pub(super) type PortMap = HashMap<PortId, Port, BuildHasherDefault<PortHasher>>;

/// Whether the peer knows of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// Allocated here for a message that will announce it: one being
    /// encoded, waiting to be queued, or queued. Until that message's first
    /// chunk leaves (or it is discarded unsent), the port must outlive its
    /// handle.
    Carried,
    /// The peer knows of it: it allocated the port, it is a root port, or
    /// the first chunk of the message announcing it has left.
    Announced,
    /// The message that would have announced it was dropped unsent: the peer
    /// will never learn of it, and sends and reads on it end at once.
    Aborted,
}

/// Our half of a port: how far this side has got towards its terminal frame
/// (`Fin` from a sender end, `Stop` from a receiver end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LocalState {
    /// A local handle (or an unclaimed message) holds the port.
    Held,
    /// The handle is gone; the sender end's `Fin` waits for its queued
    /// messages to leave. (A receiver end passes through at once.)
    Draining,
    /// The handle is gone and the port is [`Known::Carried`]: the terminal
    /// frame waits for the announcing message to leave (freeing the port now
    /// would let its id be reused while the peer is about to learn of it).
    Deferred,
    /// The terminal frame is queued (lazily: it rides along with other
    /// output, or goes after `ACK_DELAY`).
    Closing,
    /// The terminal frame has been sent, or was never needed (the peer never
    /// learnt of the port).
    Closed,
}

/// The peer's half of a port: whether its terminal frame has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PeerState {
    /// The peer may still send frames for the port.
    Open,
    /// Its `Fin` or `Stop` arrived, or it never knew of the port: sends
    /// fail, and reads end once drained.
    Closed,
}

/// The end this side holds, with the state only that end has.
#[derive(Debug)]
pub(super) enum EndState {
    /// We send `Data` and `Fin`; the peer sends `Credit` and `Stop`.
    Sender(SendHalf),
    /// We send `Credit` and `Stop`; the peer sends `Data` and `Fin`.
    Receiver(RecvHalf),
}

/// One entry of the port table. It is forgotten once `local` and `peer` are
/// both `Closed`; a `Closing` port is `Announced`, a `Deferred` one
/// `Carried`, and an `Aborted` one is `Held` with its peer `Closed`.
#[derive(Debug)]
pub(super) struct Port {
    /// Whether the peer knows of the port.
    pub(super) known: Known,
    /// How far our terminal frame has got.
    pub(super) local: LocalState,
    /// Whether the peer's terminal frame has arrived.
    pub(super) peer: PeerState,
    /// An event for this port is queued and not yet polled.
    pub(super) event_pending: bool,
    /// The end we hold, with its queue or its reassembly.
    pub(super) end: EndState,
}

impl Port {
    /// A port holding the `ours` end; `window` is the initial credit: what the
    /// peer grants us when we send, what we grant the peer when we receive.
    pub(super) fn new(ours: End, announced: bool, window: u32) -> Port {
        Port {
            known: if announced { Known::Announced } else { Known::Carried },
            local: LocalState::Held,
            peer: PeerState::Open,
            event_pending: false,
            end: match ours {
                End::Sender => EndState::Sender(SendHalf::new(window)),
                End::Receiver => EndState::Receiver(RecvHalf::new(window)),
            },
        }
    }

    /// A local handle still refers to the port.
    pub(super) fn handle_open(&self) -> bool {
        self.local == LocalState::Held
    }

    /// Our terminal frame is queued or sent, or was not needed.
    pub(super) fn term_queued(&self) -> bool {
        !matches!(self.local, LocalState::Held | LocalState::Draining)
    }

    /// The other end is gone (or never existed): sends fail, reads end once
    /// drained.
    pub(super) fn peer_gone(&self) -> bool {
        self.peer == PeerState::Closed
    }

    /// The sending half; `None` on a receiver end.
    pub(super) fn sender(&self) -> Option<&SendHalf> {
        match &self.end {
            EndState::Sender(s) => Some(s),
            EndState::Receiver(_) => None,
        }
    }

    /// The receiving half; `None` on a sender end.
    pub(super) fn receiver(&self) -> Option<&RecvHalf> {
        match &self.end {
            EndState::Receiver(r) => Some(r),
            EndState::Sender(_) => None,
        }
    }
}

impl Mux {
    /// Whether `port` is of our parity.
    pub(super) fn is_local(&self, port: PortId) -> bool {
        port & 1 == self.side.parity()
    }

    /// The root ports: the one we send on, the one we receive on.
    pub(super) fn roots(side: Side) -> (PortId, PortId) {
        match side {
            Side::Client => (ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT),
            Side::Server => (ROOT_SERVER_TO_CLIENT, ROOT_CLIENT_TO_SERVER),
        }
    }

    /// Allocates a port whose `travelling` end will be sent to the peer in a
    /// message; this side holds the other end. Fails when the peer's port
    /// limit is reached.
    ///
    /// The port is [`Known::Carried`] from now on: the message must end up
    /// in [`Mux::send`] or [`Mux::discard_unsent`] (also when encoding it
    /// fails), or the port is never freed.
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

    /// The local handle of `port` is gone (or the port was received in a
    /// message and will never be claimed). The sender end finishes after its
    /// queue drains; the receiver end stops at once and drops what it holds.
    pub(crate) fn close_end(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        if !p.handle_open() {
            return;
        }
        p.local = LocalState::Draining;
        let peer_gone = p.peer_gone();
        match &mut p.end {
            EndState::Sender(s) => {
                if s.queue.is_empty() || peer_gone {
                    self.queue_terminal(id);
                }
            }
            EndState::Receiver(r) => {
                r.drop_reassembly();
                let chunks: Vec<_> = r.chunks.drain(..).collect();
                let buffered = std::mem::take(&mut r.buffered);
                self.recv_buffered -= buffered;
                self.consumed_conn(buffered);
                for c in chunks {
                    self.totals.unread += u64::from(c.chunk.last);
                    self.discard_ports(&c.chunk.ports);
                }
                self.queue_terminal(id);
            }
        }
        // An aborted port had both halves closed while its handle was open;
        // the handle was the last thing holding it.
        self.maybe_release(id);
    }

    /// Closes every port of a table that will never be claimed.
    pub(crate) fn discard_ports(&mut self, ports: &[PortEntry]) {
        for entry in ports {
            self.close_end(entry.port);
        }
    }

    /// A message that will not be sent after all (refused, or its send was
    /// cancelled): the local ports it would have announced are void.
    pub(crate) fn discard_unsent(&mut self, msg: OutMessage) {
        self.abort_carried(false, &msg.ports);
    }

    /// Queues the terminal frame (Fin or Stop) of a port whose handle is gone
    /// ([`LocalState::Draining`]), or forgets it at once if the peer never
    /// learnt of it. Does nothing in any other state.
    pub(super) fn queue_terminal(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        if p.local != LocalState::Draining {
            return;
        }
        match p.known {
            Known::Announced => {}
            Known::Carried => {
                // A message will still announce the port: its terminal frame
                // waits for announce() (or the port dies with the message in
                // abort_carried).
                p.local = LocalState::Deferred;
                return;
            }
            Known::Aborted => {
                // Never announced, and now never will be: nothing to tell the
                // peer.
                p.local = LocalState::Closed;
                p.peer = PeerState::Closed;
                self.maybe_release(id);
                return;
            }
        }
        p.local = LocalState::Closing;
        // Terminal frames mostly free resources: like acknowledgements, they
        // ride along with other output, or go alone after ACK_DELAY. (A
        // request with a fresh reply port would otherwise cost an extra write
        // and wake-up on each side just to close the port.) But a receiver
        // gone before anything reached it, while its sender is open, is
        // news: an asker that gave up, whose handler should stop its work
        // (`ReplyPort::cancelled`). That `Stop` goes at once.
        match &p.end {
            EndState::Receiver(r) if !r.received && !p.peer_gone() => {
                self.control.push_back(super::transmit::Ctl::Stop(id));
                self.wants_transmit = true;
            }
            EndState::Receiver(_) => self.queue_lazy(super::transmit::Ctl::Stop(id)),
            EndState::Sender(_) => self.queue_lazy(super::transmit::Ctl::Fin(id)),
        }
    }

    /// The terminal frame of `port` is leaving now.
    pub(super) fn terminal_frame(&mut self, port: PortId) -> Option<Frame> {
        let p = self.ports.get_mut(&port)?;
        p.local = LocalState::Closed;
        Some(match p.end {
            EndState::Sender(_) => Frame::Fin { port },
            EndState::Receiver(_) => Frame::Stop { port },
        })
    }

    /// Forgets a port once both halves are closed (our terminal frame sent,
    /// the peer's received); only then may its id be reused.
    pub(super) fn maybe_release(&mut self, id: PortId) {
        let Some(p) = self.ports.get(&id) else { return };
        if !(p.local == LocalState::Closed && p.peer == PeerState::Closed) {
            return;
        }
        debug_assert!(p.sender().is_none_or(|s| s.queue.is_empty()) || p.known != Known::Announced);
        let p = self.ports.remove(&id).expect("checked above");
        // Messages never sent: their unannounced ports die with them.
        if let EndState::Sender(s) = p.end {
            for m in s.queue {
                self.drop_queued(&m);
            }
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

    /// A message is dropped unsent: if its first chunk never left (it was
    /// not `started`), the `ports` it would have announced are void.
    pub(super) fn abort_carried(&mut self, started: bool, ports: &[PortId]) {
        if started {
            return;
        }
        for &id in ports {
            if let Some(p) = self.ports.get_mut(&id) {
                if p.known == Known::Announced {
                    continue;
                }
                p.known = Known::Aborted;
                p.peer = PeerState::Closed;
                if !p.handle_open() {
                    // No frame was ever needed.
                    p.local = LocalState::Closed;
                }
                let (queue, ev) = match &mut p.end {
                    EndState::Sender(s) => {
                        s.queued = 0;
                        (s.queue.drain(..).collect(), Event::Writable(id))
                    }
                    EndState::Receiver(_) => (Vec::new(), Event::Readable(id)),
                };
                self.events.push_back(ev);
                for inner in &queue {
                    self.drop_queued(inner);
                }
                self.maybe_release(id);
            }
        }
    }

    /// A port the peer may send frames for: one it knows of. A port we
    /// allocated is unknown to the peer until the message announcing it has
    /// started to leave, so a frame for it before then is as much a violation
    /// as one for an id that does not exist.
    pub(super) fn known_port(&mut self, id: PortId) -> Result<&mut Port, MuxError> {
        match self.ports.get_mut(&id) {
            Some(p) if p.known == Known::Announced => Ok(p),
            _ => Err(MuxError::UnknownPort(id)),
        }
    }

    /// Checks a received port table: fresh ids of the peer's parity, within
    /// our port limit.
    pub(super) fn check_announced(&self, ports: &[PortEntry]) -> Result<(), MuxError> {
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
    pub(super) fn accept_announced(&mut self, entry: PortEntry) {
        let id = entry.port;
        let window = match entry.end {
            End::Sender => self.cfg.peer.port_window,
            End::Receiver => self.cfg.local.port_window,
        };
        self.ports.insert(id, Port::new(entry.end, true, window));
        self.peer_count += 1;
    }

    /// The message carrying `id` has left: the peer knows the port now.
    pub(super) fn announce(&mut self, id: PortId) {
        let Some(p) = self.ports.get_mut(&id) else { return };
        p.known = Known::Announced;
        if p.local == LocalState::Deferred {
            // Its handle went away while a queued message carried it:
            // queue_terminal deferred the terminal frame until now.
            p.local = LocalState::Draining;
            self.queue_terminal(id);
            return;
        }
        if let EndState::Receiver(r) = &p.end {
            if r.credit_queued {
                self.control.push_back(super::transmit::Ctl::Credit(id));
                self.wants_transmit = true;
            }
        }
        self.make_ready(id);
    }
}
