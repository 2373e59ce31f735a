//! Errors of the mux, and the one path by which a fatal error is recorded.
//!
//! Two kinds of failure, kept apart:
//! - A *refusal* is returned to the caller of a command and does not end
//!   the mux: [`SendError`] from `send`, [`MuxError::TooManyPorts`] from
//!   `open_port`, [`MuxError::BadAck`] from `resume`.
//! - A *fatal error* ends the mux for good. It is recorded once, by
//!   [`Mux::fail`], the only writer of `Mux::error`. From then on
//!   [`Mux::error`] reports it, `handle_input` and `handle_timeout` return a
//!   copy of it, `poll_transmit` produces nothing and sends fail with
//!   `Closed`. Code below the public methods returns `Result` and never
//!   records anything itself; the public method records what came back.
//!   A silent peer is not an error of the mux: `handle_timeout` reports it,
//!   and the driver records [`MuxError::Timeout`] with `time_out` only if
//!   the session ends with it.

use std::time::Duration;

use super::{Mux, OutMessage};
use crate::wire::{PortId, WireError};

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
    #[error("the limit of {0} open ports is reached")]
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
    /// The peer sent a message larger than our `max_message`.
    #[error("message on port {port} exceeds our max_message of {max} bytes")]
    MessageTooLarge {
        /// The port.
        port: PortId,
        /// Our limit.
        max: u32,
    },
    /// A message compressed with an algorithm we did not announce in our
    /// handshake (none, if compression is off here), or with an unknown
    /// one.
    #[error("message on port {port} is compressed with algorithm {algorithm:#04x}, which we do not accept")]
    UnacceptedCompression {
        /// The port.
        port: PortId,
        /// The algorithm's id in the message's head.
        algorithm: u8,
    },
    /// A compressed message's head claims it unpacks to more than
    /// `MAX_PACK_RATIO` (256) times its packed bytes, which no sender makes:
    /// refused before anything is allocated for it.
    #[error("message on port {port} claims {packed} packed bytes unpack to {plain}, beyond 256 times")]
    PackRatio {
        /// The port.
        port: PortId,
        /// Bytes it claims once unpacked.
        plain: u32,
        /// Its packed bytes.
        packed: u32,
    },
    /// The chunks of a message add up to more, or less, than its head said.
    #[error("message on port {port} has {got} bytes where its head said {said}")]
    LengthMismatch {
        /// The port.
        port: PortId,
        /// The length in the message's head.
        said: u32,
        /// Bytes of the message when the mismatch showed.
        got: u64,
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
    /// Nothing was heard from the peer within the idle timeout, and the
    /// session cannot wait for another transport.
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
}

/// Why a send was refused. The message is handed back.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The port's send buffer is full; wait for [`Event::Writable`](super::Event::Writable).
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

impl Mux {
    /// The error that ended this mux, if any.
    pub(crate) fn error(&self) -> Option<&MuxError> {
        self.error.as_ref()
    }

    /// Records `e` as the error that ends the mux, unless one already did,
    /// and returns the one recorded.
    pub(super) fn fail(&mut self, e: MuxError) -> MuxError {
        self.error.get_or_insert(e).clone()
    }

    /// `Err` with the recorded error once the mux has ended: the guard of
    /// every input.
    pub(super) fn check_alive(&self) -> Result<(), MuxError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}
