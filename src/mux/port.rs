//! Per-port state of the mux.

use std::collections::VecDeque;

use bytes::Bytes;

use super::Chunk;
use crate::wire::{End, PortId};

/// A message in a port's send queue; `offset` bytes of it have been sent.
#[derive(Debug)]
pub(super) struct OutMsg {
    pub(super) bytes: Bytes,
    /// Local ports announced by this message (emptied once announced).
    pub(super) ports: Vec<PortId>,
    pub(super) offset: usize,
}

/// A received chunk with the bytes it took from the window.
#[derive(Debug)]
pub(super) struct QueuedChunk {
    pub(super) wire_len: usize,
    pub(super) chunk: Chunk,
}

#[derive(Debug)]
pub(super) struct Port {
    /// The end this side holds.
    pub(super) ours: End,
    /// The peer knows this port (it allocated it, or our announcement left).
    pub(super) announced: bool,
    /// A local handle (or an unclaimed message) still refers to the port.
    pub(super) handle_open: bool,
    /// Our terminal frame (Fin or Stop) is queued or was dropped unneeded.
    pub(super) term_queued: bool,
    /// Our terminal frame has been sent.
    pub(super) term_sent: bool,
    /// The peer's terminal frame has arrived.
    pub(super) term_received: bool,
    /// Dropped before the peer ever learnt of it.
    pub(super) aborted: bool,
    /// Unannounced, and a queued message announces it: it must outlive its
    /// handle until that message leaves or is dropped.
    pub(super) carried: bool,
    /// An event for this port is queued and not yet polled.
    pub(super) event_pending: bool,

    // Sender end.
    pub(super) queue: VecDeque<OutMsg>,
    pub(super) queued: usize,
    pub(super) credit: u64,
    pub(super) in_ready: bool,
    pub(super) write_blocked: bool,

    // Receiver end.
    pub(super) chunks: VecDeque<QueuedChunk>,
    pub(super) buffered: usize,
    /// Credit the peer still holds for this port.
    pub(super) window_left: u64,
    /// Bytes consumed and not yet granted back.
    pub(super) unreported: u64,
    pub(super) credit_queued: bool,
    /// Bytes of the message being received, if one is in progress.
    pub(super) assembling: Option<usize>,
}

impl Port {
    /// A port holding the `ours` end; `window` is the initial credit: what the
    /// peer grants us when we send, what we grant the peer when we receive.
    pub(super) fn new(ours: End, announced: bool, window: u32) -> Port {
        Port {
            ours,
            announced,
            handle_open: true,
            term_queued: false,
            term_sent: false,
            term_received: false,
            aborted: false,
            carried: false,
            event_pending: false,
            queue: VecDeque::new(),
            queued: 0,
            credit: if ours == End::Sender { window as u64 } else { 0 },
            in_ready: false,
            write_blocked: false,
            chunks: VecDeque::new(),
            buffered: 0,
            window_left: if ours == End::Receiver { window as u64 } else { 0 },
            unreported: 0,
            credit_queued: false,
            assembling: None,
        }
    }

    /// The other end is gone (or never existed): sends fail, reads end once
    /// drained.
    pub(super) fn peer_gone(&self) -> bool {
        self.term_received || self.aborted
    }
}
