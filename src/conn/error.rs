//! Why a connection could not be made, why it ended, and why its session
//! could not be resumed.

use std::sync::Arc;

use crate::config::ConfigError;
use crate::mux::MuxError;
use crate::wire::WireError;

/// Why a connection could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport failed.
    #[error("transport error during handshake: {0}")]
    Io(std::io::Error),
    /// The TLS handshake failed (certificate not trusted, no client
    /// certificate where one is required, no common protocol version...).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The peer closed the transport during the handshake.
    #[error("peer closed the transport during the handshake")]
    Eof,
    /// Connecting, or the handshake after it, did not complete in time
    /// ([`Config::handshake_timeout`](crate::Config::handshake_timeout) bounds each).
    #[error("connecting or the handshake did not complete within {0:?}")]
    Timeout(std::time::Duration),
    /// The peer's hello is not acceptable (wrong magic or version, or malformed).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The two sides are configured with different codecs.
    #[error(
        "codec mismatch: ours {} ({ours}), theirs {} ({theirs})",
        crate::codec::CodecKind::name_of(*ours),
        crate::codec::CodecKind::name_of(*theirs)
    )]
    CodecMismatch {
        /// Our codec id.
        ours: u8,
        /// The peer's codec id.
        theirs: u8,
    },
    /// The peer announced limits that cannot work (described in the text).
    #[error("peer announced unusable limits: {0}")]
    BadLimits(String),
    /// One side requires cookie authentication and the other does not
    /// offer it (or offers a scheme this version does not know).
    #[error("authentication mismatch: ours {ours}, theirs {theirs}")]
    AuthMismatch {
        /// Our scheme: "none" or "cookie".
        ours: &'static str,
        /// The peer's scheme: "none", "cookie" or "unknown".
        theirs: &'static str,
    },
    /// The peer's proof of the cluster secret is wrong: it has another
    /// cookie (or none of ours). Nothing of the connection was used.
    #[error("authentication failed: the peer does not know our cookie")]
    AuthFailed,
    /// The dialer asked to resume a session this side does not have (it
    /// expired, or this node is a new incarnation); it was told so and the
    /// transport closed.
    #[error("the dialer asked to resume an unknown session")]
    UnknownSession,
    /// The local node is shut down: it makes no new connections.
    #[error("the node is shut down")]
    NodeShutDown,
    /// Connecting to `addr` failed; `error` says how.
    #[error("connecting to {addr}: {error}")]
    At {
        /// The address as the caller gave it (or as it resolved).
        addr: String,
        /// What went wrong.
        error: Box<ConnectError>,
    },
}

impl ConnectError {
    /// What went wrong, without the address [`ConnectError::At`] adds.
    pub fn cause(&self) -> &ConnectError {
        match self {
            ConnectError::At { error, .. } => error.cause(),
            e => e,
        }
    }

    /// Whether connecting, or the handshake after it, ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.cause(), ConnectError::Timeout(_))
    }

    /// Whether the peer could not prove it knows our cookie, or we could
    /// not agree on authentication.
    pub fn is_auth(&self) -> bool {
        matches!(self.cause(), ConnectError::AuthFailed | ConnectError::AuthMismatch { .. })
    }

    /// This error, naming the address it happened at.
    pub(crate) fn at(self, addr: impl std::fmt::Display) -> ConnectError {
        match self {
            e @ (ConnectError::At { .. } | ConnectError::NodeShutDown | ConnectError::Config(_)) => e,
            e => ConnectError::At { addr: addr.to_string(), error: Box::new(e) },
        }
    }
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        match crate::transport::TlsFailure::unwrap(e) {
            Ok(tls) => ConnectError::Tls(tls),
            Err(e) => ConnectError::Io(e),
        }
    }
}

/// Why an established connection ended.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(Arc<std::io::Error>),
    /// The peer closed the transport without saying goodbye.
    #[error("transport closed by peer")]
    Eof,
    /// The peer broke the protocol or went silent.
    #[error(transparent)]
    Protocol(#[from] MuxError),
    /// This side closed the connection.
    #[error("connection closed")]
    Closed,
    /// The peer said goodbye, with its close code and reason.
    #[error("peer closed the connection (code {code}): {reason}")]
    PeerClosed {
        /// The peer's close code: 0 for an application's
        /// [`Connection::close`](crate::Connection::close); a node that shuts
        /// down, or a connection with nothing left to carry, say so with their
        /// own codes (`docs/PROTOCOL.md`, GoAway).
        code: u32,
        /// The peer's reason, as it wrote it.
        reason: String,
    },
    /// The task driving the connection is gone (its runtime shut down).
    #[error("connection driver stopped")]
    DriverGone,
    /// The transport broke and the session could not be resumed.
    #[error("session lost: {0}")]
    SessionLost(SessionLost),
    /// The task driving the connection panicked.
    #[error("connection driver panicked")]
    DriverPanicked,
    /// The connection's supervisor actor failed (it panicked), so nothing
    /// would recover or end the connection any more.
    #[error("connection supervisor failed")]
    SupervisorFailed,
}

impl ConnectionError {
    /// Whether a new transport could carry on where this one stopped: the
    /// transport failed or went silent, not the peer's protocol or will.
    pub fn is_transport_failure(&self) -> bool {
        matches!(self, ConnectionError::Io(_) | ConnectionError::Eof | ConnectionError::Protocol(MuxError::Timeout(_)))
    }

    /// Whether the connection ended by someone's will (a close on either
    /// side), not by a failure: receivers see the end of their streams.
    pub fn is_graceful(&self) -> bool {
        matches!(self, ConnectionError::Closed | ConnectionError::PeerClosed { .. })
    }

    pub(crate) fn io(e: std::io::Error) -> Self {
        ConnectionError::Io(Arc::new(e))
    }
}

/// Why a session could not be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionLost {
    /// The peer answered with a new identity: it restarted.
    #[error("the peer restarted")]
    PeerRestarted,
    /// The peer no longer has the session (its linger time ran out).
    #[error("the peer no longer has the session")]
    Expired,
    /// Reconnection gave up.
    #[error("reconnection gave up after {attempts} attempts")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// The resume positions do not fit: frames would be lost.
    #[error("resume positions do not match")]
    Mismatch,
}
