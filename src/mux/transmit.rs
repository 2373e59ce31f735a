//! Output: the [`Transmit`] buffer and [`Mux::poll_transmit`], which fills
//! it in the order the protocol needs.
//!
//! Order of one transmit, and why:
//! 1. After a resume, the replay: the peer must see the frames it missed
//!    before any new one, or the implicit sequence numbers would disagree.
//! 2. The acknowledgement, when one is due or other output goes anyway,
//!    and with it the terminal frames that waited to ride along.
//! 3. Pongs and our ping: liveness must not wait behind data.
//! 4. Control frames (`Credit`, `Fin`, `Stop`) ahead of data, so that a
//!    long transfer never holds back the credit the other direction waits
//!    for.
//! 5. Data chunks, round-robin across ready ports, until about `budget`
//!    bytes are queued or the connection credit runs out.
//! 6. After a graceful `close`, `GoAway` once no control frame and no data
//!    that could still leave is queued.
//!
//! Small frames are copied into one buffer; payloads of [`COPY_THRESHOLD`]
//! bytes or more are referenced, so a vectored write sends them without a
//! copy.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::credit::CHUNK_OVERHEAD;
use super::{Mux, MuxError};
use crate::wire::{Frame, PortId};

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

    pub(super) fn push(&mut self, frame: &Frame) {
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

/// Control frames waiting to go out ahead of data. What each carries is
/// decided as it leaves (credit grants everything consumed by then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ctl {
    Credit(PortId),
    ConnCredit,
    Fin(PortId),
    Stop(PortId),
}

impl Mux {
    /// Fills `out` with frames, control first, then data chunks round-robin
    /// across ports, until about `budget` bytes are queued. If the mux fails
    /// meanwhile (the peer left too much unacknowledged), the frames pushed
    /// before the failure stay in `out`, nothing after it, and
    /// [`Mux::error`] tells.
    pub(crate) fn poll_transmit(&mut self, out: &mut Transmit, budget: usize) {
        self.wants_transmit = false;
        if self.error.is_some() || self.goaway_sent {
            return;
        }
        if let Err(e) = self.transmit(out, budget) {
            self.fail(e);
        }
        out.seal();
    }

    fn transmit(&mut self, out: &mut Transmit, budget: usize) -> Result<(), MuxError> {
        self.poll_replay(out);
        let other_output = !self.control.is_empty()
            || !self.ready.is_empty()
            || !self.pongs.is_empty()
            || self.ping_due
            || self.closing.is_some();
        self.poll_ack(other_output, out);
        self.poll_ping(out);
        while let Some(ctl) = self.control.pop_front() {
            let frame = match ctl {
                Ctl::ConnCredit => self.conn_credit_frame(),
                Ctl::Credit(port) => self.credit_frame(port),
                Ctl::Fin(port) | Ctl::Stop(port) => self.terminal_frame(port),
            };
            if let Some(frame) = frame {
                self.emit_reliable(frame, out)?;
            }
        }
        while out.len() < budget {
            if self.conn_credit <= CHUNK_OVERHEAD {
                break;
            }
            let Some(id) = self.ready.pop_front() else { break };
            self.emit_chunk(id, out)?;
        }
        if let Some((code, reason)) = self.closing.clone() {
            if self.control.is_empty() && (self.ready.is_empty() || self.conn_credit <= CHUNK_OVERHEAD) {
                out.push(&Frame::GoAway { code, reason });
                self.goaway_sent = true;
            }
        }
        Ok(())
    }

    /// Whether the driver must be woken: commands since the last transmit
    /// (or the last call) queued output or a deadline that only a transmit
    /// and `poll_timeout` collect. True once per batch: whoever is told
    /// wakes the driver, which then collects everything; a driver already
    /// waiting on the transport needs no second wake. Output the driver
    /// produces or paces itself (data held back by credit or the transport,
    /// acknowledgements, pings) never makes this true.
    pub(crate) fn poll_wake(&mut self) -> bool {
        std::mem::take(&mut self.wants_transmit)
    }
}
