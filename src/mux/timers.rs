//! Time: pings and the idle timeout that detect a dead peer, and the delay
//! after which an acknowledgement or a terminal frame goes out alone.
//!
//! The mux has no clock. Deadlines are instants computed from the `now`
//! passed to the inputs; a command that sets a deadline (closing a port
//! queues a terminal frame) uses the latest `now` seen, `Mux::last_now`.
//!
//! Protocol facts relied on here:
//! - Any frame from the peer shows it is alive. A side sends a `Ping` every
//!   `ping_interval` and answers each `Ping` with a `Pong` of the same
//!   nonce, so a live peer is never silent for longer than its ping
//!   interval plus a round trip. Silence for `idle_timeout` is reported
//!   ([`Liveness::Silent`]), not recorded: whether it ends the session or
//!   only the transport (a session that resumes on another) is the
//!   driver's decision, and [`Mux::time_out`] is how it ends the session.
//! - At most 16 pongs are owed at a time: a peer flooding pings gets no
//!   more answers, not more memory.
//! - Acknowledgements and terminal frames (`Fin`, `Stop`) only free
//!   resources at the peer, so they may wait up to [`ACK_DELAY`] for other
//!   output to ride along with.

use std::time::{Duration, Instant};

use super::transmit::{Ctl, Transmit};
use super::{Mux, MuxError};
use crate::wire::Frame;

/// A lone acknowledgement (or terminal frame) waits at most this long for
/// other output to ride on.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(10);
/// ... or until this many terminal frames wait.
pub(super) const LAZY_EVERY: usize = 64;

/// Pongs owed at most; pings beyond are not answered.
const MAX_PONGS: usize = 16;

/// What [`Mux::handle_timeout`] found out about the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a silent peer is for the driver to act on"]
pub(crate) enum Liveness {
    /// The peer was heard within the idle timeout.
    Alive,
    /// Nothing was heard from the peer for this long, the idle timeout or
    /// more. Nothing is recorded and the mux goes on: the driver ends the
    /// session ([`Mux::time_out`]) or abandons only this transport.
    Silent(Duration),
}

impl Mux {
    /// Applies the passage of time: schedules pings and reports a silent
    /// peer. `Err` only once the mux has ended (the recorded error).
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<Liveness, MuxError> {
        self.check_alive()?;
        self.last_now = self.last_now.max(now);
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.cfg.idle_timeout {
            return Ok(Liveness::Silent(silent));
        }
        if now >= self.next_ping {
            self.ping_due = true;
            self.next_ping = now + self.cfg.ping_interval;
        }
        if self.ack_due.is_some_and(|due| now >= due) {
            self.ack_now = true;
        }
        Ok(Liveness::Alive)
    }

    /// Ends the mux because the peer was `silent` for too long (as
    /// [`Liveness::Silent`] reported): records [`MuxError::Timeout`] and
    /// returns the error recorded. A session that will resume on another
    /// transport does not call this; it stays usable, sends still queue, and
    /// `resume` restarts the clock.
    pub(crate) fn time_out(&mut self, silent: Duration) -> MuxError {
        self.fail(MuxError::Timeout(silent))
    }

    /// The next instant [`Mux::handle_timeout`] must be called.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let t = self.next_ping.min(self.last_heard + self.cfg.idle_timeout);
        self.ack_due.map_or(t, |due| t.min(due))
    }

    /// The peer's `Ping`: owe it a `Pong`.
    pub(super) fn on_ping(&mut self, nonce: u64) {
        if self.pongs.len() < MAX_PONGS {
            self.pongs.push(nonce);
        }
    }

    /// The peer's `Pong`: if it answers our last ping, a round-trip sample.
    pub(super) fn on_pong(&mut self, nonce: u64) {
        let Some((sent_nonce, sent_at)) = self.ping_sent else { return };
        if nonce != sent_nonce {
            return;
        }
        self.ping_sent = None;
        let sample = self.last_now.saturating_duration_since(sent_at);
        self.srtt = Some(match self.srtt {
            None => sample,
            Some(srtt) => srtt * 7 / 8 + sample / 8,
        });
    }

    /// Pongs owed, then our ping if one is due.
    pub(super) fn poll_ping(&mut self, out: &mut Transmit) {
        for nonce in self.pongs.drain(..) {
            out.push(&Frame::Pong { nonce });
        }
        if self.ping_due {
            self.ping_due = false;
            self.ping_nonce += 1;
            out.push(&Frame::Ping { nonce: self.ping_nonce });
            self.ping_sent = Some((self.ping_nonce, self.last_now));
        }
    }

    /// Queues a terminal frame to ride along with the next output, or to go
    /// alone after [`ACK_DELAY`].
    pub(super) fn queue_lazy(&mut self, ctl: Ctl) {
        self.lazy.push(ctl);
        self.ack_due.get_or_insert(self.last_now + ACK_DELAY);
        // Queued by a command, the deadline is news to the driver.
        self.wants_transmit = true;
    }

    /// Received reliable frames wait at most [`ACK_DELAY`] for their
    /// acknowledgement.
    pub(super) fn arm_ack_delay(&mut self, now: Instant) {
        if self.ack_point() > self.acked_sent && self.ack_due.is_none() {
            self.ack_due = Some(now + ACK_DELAY);
        }
    }
}
