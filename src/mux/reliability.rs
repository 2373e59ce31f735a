//! Reliability: session sequence numbers, acknowledgements, the replay
//! buffer, and resuming a session on a new transport.
//!
//! Protocol facts relied on here:
//! - `Data`, `Credit`, `Fin` and `Stop` are reliable: each takes the next
//!   session sequence number (implicitly, by order) and stays in the replay
//!   buffer until the peer acknowledges it. `Ack`, `Ping`, `Pong` and
//!   `GoAway` are not counted and not replayed.
//! - A receiver acknowledges before it returns credit, so the `Data` frames
//!   in the replay buffer are bounded by the credit windows; a peer that
//!   never acknowledges is cut off once the buffer would exceed
//!   [`Mux::max_unacked`] frames ([`MuxError::Unacknowledged`]).
//! - An `Ack` carries the count of reliable frames received. It rides along
//!   with other output; alone it waits for [`ACK_EVERY`] frames,
//!   [`ACK_BYTES`] of payload or `ACK_DELAY`.
//! - On resume each side tells the other how many frames it received; the
//!   other replays everything after that, before any new frame. Frames the
//!   old transport delivered after the count went out arrive twice and are
//!   dropped as duplicates, and not acknowledged before they are.

use std::time::Instant;

use super::credit::CHUNK_OVERHEAD;
use super::timers::LAZY_EVERY;
use super::transmit::Transmit;
use super::{Mux, MuxError};
use crate::wire::Frame;

/// Reliable frames beyond those `Data` frames can account for that the peer
/// may leave unacknowledged (room for `Credit`, `Fin` and `Stop`).
const UNACKED_SLACK: u64 = 65_536;

/// A lone acknowledgement waits until this many reliable frames are
/// unacknowledged (or `ACK_DELAY`) ...
pub(crate) const ACK_EVERY: u64 = 64;
/// ... or until this many payload bytes arrived: the sender frees what it
/// keeps for replay only once acknowledged, and for bulk data 64 frames are
/// megabytes.
pub(crate) const ACK_BYTES: usize = 256 * 1024;

impl Mux {
    /// Counts a received reliable frame in the session sequence. Returns
    /// false for one that must be dropped as a duplicate (see
    /// [`Mux::resume`]).
    pub(super) fn count_received_reliable(&mut self) -> bool {
        if self.duplicates > 0 {
            self.duplicates -= 1;
            return false;
        }
        self.received_seq += 1;
        true
    }

    /// The peer's `Ack`.
    pub(super) fn on_ack(&mut self, received: u64) -> Result<(), MuxError> {
        if received > self.sent_seq {
            return Err(MuxError::BadAck { acked: received, sent: self.sent_seq });
        }
        self.trim_replay(received);
        Ok(())
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
    /// buffer would exceed [`Mux::max_unacked`]: then the frame is not sent,
    /// and the error (fatal) comes back.
    pub(super) fn emit_reliable(&mut self, frame: Frame, out: &mut Transmit) -> Result<(), MuxError> {
        let unacked = self.sent_seq - self.replay_base + 1;
        if unacked > self.max_unacked() {
            return Err(MuxError::Unacknowledged { frames: unacked });
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
        Ok(())
    }

    /// After a resume: everything the peer has not received, again, ahead
    /// of any new frame.
    pub(super) fn poll_replay(&mut self, out: &mut Transmit) {
        if let Some(cursor) = self.replay_cursor.take() {
            for f in self.replay.iter().skip(cursor) {
                out.push(f);
            }
        }
    }

    /// The acknowledgement, if one is due: at once when `other_output` goes
    /// anyway, else once enough arrived or its delay passed. Terminal frames
    /// waiting to ride along go with it.
    pub(super) fn poll_ack(&mut self, other_output: bool, out: &mut Transmit) {
        // Acknowledgements ride along with other output; alone they wait
        // for ACK_EVERY frames, ACK_BYTES or ACK_DELAY, so a request/response exchange
        // does not cost an extra write and wake-up per message.
        let ack_point = self.ack_point();
        let unacked = ack_point - self.acked_sent;
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
    }

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
    pub(super) fn ack_point(&self) -> u64 {
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
    ///
    /// An impossible position is refused with [`MuxError::BadAck`], and the
    /// mux is left as it was: the caller decides the session is lost.
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
