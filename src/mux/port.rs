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
    /// The message in progress, when it spans several chunks: each chunk is
    /// copied here as it arrives, so no chunk pins the transport's read
    /// buffer.
    pub(super) asm: Vec<u8>,
    /// Segments of the message in progress that filled up before `asm`.
    pub(super) asm_full: Vec<Bytes>,
    /// A buffer handed back once a reassembled message was decoded, for the
    /// next one.
    pub(super) spare: Vec<u8>,
    /// Size of the last message reassembled here.
    pub(super) last_len: usize,
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
            asm: Vec::new(),
            asm_full: Vec::new(),
            spare: Vec::new(),
            last_len: 0,
        }
    }

    /// Adds a chunk of a message that spans several to its reassembly.
    /// Returns the whole message with its last chunk (see [`Chunk::tail`]),
    /// and nothing before.
    ///
    /// A buffer that fills up is not grown (that would copy the message so
    /// far, while the driver holds the connection lock, stalling every
    /// port): the message goes on in a new segment as large as all before
    /// it, and the receiver joins the segments once it has the whole. With
    /// the buffer handed back after the last message, a stream of messages of
    /// one size needs one segment each. The segments never hold more than
    /// `max_message` together (the caller checked that the message fits).
    pub(super) fn reassemble(
        &mut self,
        first: bool,
        last: bool,
        mut payload: &[u8],
        max_message: usize,
    ) -> (Bytes, Vec<Bytes>) {
        if first {
            self.asm = std::mem::take(&mut self.spare);
            self.asm.clear();
            self.asm_full.clear();
            // Expect a message like the last one.
            let hint = self.last_len.max(2 * payload.len()).min(super::RECLAIM_MAX).min(max_message);
            self.asm.reserve_exact(hint);
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
            self.asm_full.push(Bytes::from(full));
        }
        if !last {
            return (Bytes::new(), Vec::new());
        }
        let tail = Bytes::from(std::mem::take(&mut self.asm));
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
        self.asm = Vec::new();
        self.asm_full = Vec::new();
        self.spare = Vec::new();
    }

    /// The other end is gone (or never existed): sends fail, reads end once
    /// drained.
    pub(super) fn peer_gone(&self) -> bool {
        self.term_received || self.aborted
    }
}
