//! Credit: the windows that bound what a sender may have in flight, per
//! port and per connection, and the grants that return them.
//!
//! Protocol facts relied on here:
//! - Each port and the connection (port 0 in `Credit`) start with the
//!   window the receiver announced in its hello. The sender spends
//!   [`chunk_cost`] of both for each `Data` frame; the receiver grants back
//!   what its handles consumed.
//! - A receiver grants credit once a quarter of the window has been consumed
//!   (one `Credit` queued at a time per port, see `RecvHalf::credit_queued`).
//!   A sender waits for credit only while less than an eighth of a chunk, or
//!   less than a port table of at most three quarters of the window, is
//!   left (see `send.rs`): then more than a quarter is with the receiver, and
//!   comes back once read.
//! - Credit a peer grants beyond twice the largest window is impossible
//!   ([`MuxError::CreditOverflow`]); `Data` beyond the credit given breaks
//!   the protocol ([`MuxError::CreditExceeded`], checked in `recv.rs`).
//! - No credit is returned for a port after our `Stop` is queued, nor after
//!   the peer's `Fin`: the port will carry nothing more.

use super::ports::EndState;
use super::transmit::Ctl;
use super::{Mux, MuxError};
use crate::wire::{Frame, PortId};

/// Credit every `Data` frame costs beyond its payload. Charging it bounds
/// the per-chunk bookkeeping of a receiver by its window, however small the
/// chunks a peer sends.
pub(crate) const CHUNK_OVERHEAD: u64 = 64;

/// Credit a `Data` frame with `len` payload bytes consumes.
pub(super) fn chunk_cost(len: usize) -> u64 {
    len as u64 + CHUNK_OVERHEAD
}

/// Consumed bytes after which a grant for a `window` goes out.
pub(super) fn grant_threshold(window: u32) -> u64 {
    (window as u64 / 4).max(1)
}

impl Mux {
    /// The peer's `Credit` for the connection.
    pub(super) fn on_conn_credit(&mut self, bytes: u32) -> Result<(), MuxError> {
        self.conn_credit = self.conn_credit.checked_add(bytes as u64).ok_or(MuxError::CreditOverflow(0))?;
        if self.conn_credit > u32::MAX as u64 * 2 {
            return Err(MuxError::CreditOverflow(0));
        }
        for id in self.ready_candidates() {
            self.make_ready(id);
        }
        Ok(())
    }

    /// The peer's `Credit` for a port whose sender end we hold.
    pub(super) fn on_credit(&mut self, port: PortId, bytes: u32) -> Result<(), MuxError> {
        let p = self.known_port(port)?;
        let EndState::Sender(s) = &mut p.end else {
            return Err(MuxError::WrongEnd(port));
        };
        s.credit = s.credit.checked_add(bytes as u64).ok_or(MuxError::CreditOverflow(port))?;
        if s.credit > u32::MAX as u64 * 2 {
            return Err(MuxError::CreditOverflow(port));
        }
        self.make_ready(port);
        Ok(())
    }

    /// `len` bytes of connection credit were consumed here (read, or dropped
    /// unread).
    pub(super) fn consumed_conn(&mut self, len: usize) {
        self.conn_unreported += len as u64;
        if !self.conn_credit_queued && self.conn_unreported >= grant_threshold(self.cfg.local.conn_window) {
            self.conn_credit_queued = true;
            self.control.push_back(Ctl::ConnCredit);
            self.wants_transmit = true;
        }
    }

    /// The connection grant, as it leaves: everything consumed so far.
    pub(super) fn conn_credit_frame(&mut self) -> Option<Frame> {
        self.conn_credit_queued = false;
        let bytes = std::mem::take(&mut self.conn_unreported);
        self.conn_window_left += bytes;
        (bytes > 0).then_some(Frame::Credit { port: 0, bytes: bytes as u32 })
    }

    /// The grant for `port`, as it leaves: everything consumed so far, unless
    /// the port will carry nothing more.
    pub(super) fn credit_frame(&mut self, port: PortId) -> Option<Frame> {
        let p = self.ports.get_mut(&port)?;
        let closing = p.peer_gone() || p.term_queued();
        let EndState::Receiver(r) = &mut p.end else { return None };
        r.credit_queued = false;
        if closing {
            return None;
        }
        let bytes = std::mem::take(&mut r.unreported);
        r.window_left += bytes;
        (bytes > 0).then_some(Frame::Credit { port, bytes: bytes as u32 })
    }
}
