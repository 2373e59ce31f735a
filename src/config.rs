//! Connection configuration.

use std::time::Duration;

use crate::auth::{Cookie, MIN_COOKIE_LEN};
use crate::codec::CodecKind;
use crate::compress::Compression;
use crate::wire::HelloLimits;

/// Settings of one connection. Each field documents its default and why.
///
/// Receive limits (`port_window`, `conn_window`, `max_frame`,
/// `max_message`, `max_ports`) are announced in the handshake, so the peer
/// never exceeds them; a peer that does is cut off with a typed error.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Largest chunk a message is cut into. Default 32 KiB: small enough
    /// that a round trip on another port waits at most a few microseconds
    /// behind a large transfer, large enough that headers cost nothing.
    pub chunk_size: u32,
    /// Credit granted to each port's sender, in bytes: how much may be in
    /// flight or queued at the receiver per port. Default 2 MiB: a port
    /// whose window is smaller than what its link carries in a round trip
    /// stalls waiting for credit (256 KiB held one busy port on loopback to
    /// a third of its speed), and a stream of large messages needs room for
    /// the next one to arrive while the application decodes the last (1 MiB
    /// messages on loopback: 1.8 GB/s with a 1 MiB window, 2.4–2.9 GB/s with
    /// 2 MiB, no faster with 4 MiB).
    pub port_window: u32,
    /// Credit for all ports of the connection together: what a receiver
    /// holds at most. A port whose reader is slow (a channel nobody reads, a
    /// route to a slow actor) keeps up to `port_window` of it meanwhile, so
    /// `conn_window / port_window` such ports stall the others. Default
    /// 16 MiB.
    pub conn_window: u32,
    /// Bytes a port may hold queued at the sender before `send` waits (one
    /// message may overshoot it). Each message counts 64 bytes beyond its
    /// encoding, for its bookkeeping. Default 256 KiB.
    pub send_buffer: u32,
    /// Bytes all ports together may hold queued at the sender before their
    /// sends wait, counted as for `send_buffer`; a port with nothing queued
    /// still takes one message, so a large message on one port never holds
    /// up another. Default 512 KiB: queued data only has to keep the
    /// transport busy until the next write; more costs memory, and past the
    /// CPU caches, speed.
    pub conn_send_buffer: u32,
    /// Largest `Data` frame payload accepted. Default 1 MiB; must be at
    /// least the peer's chunk size.
    pub max_frame: u32,
    /// Largest message accepted. Default 128 MiB.
    pub max_message: u32,
    /// Most ports open at once on this connection. Default 16,384.
    pub max_ports: u32,
    /// Time between pings. Default 1 s.
    pub ping_interval: Duration,
    /// A peer silent for this long is declared dead. Default 5 s.
    pub idle_timeout: Duration,
    /// Longest time connecting may take (each dial, reconnections too),
    /// and then the handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Codec for messages; both sides must use the same. Default postcard.
    pub codec: CodecKind,
    /// Which compression algorithms this side accepts and uses for what it
    /// sends, and from what size on (announced in the handshake; a side
    /// compresses only with an algorithm the peer accepts). Default off:
    /// compression costs more CPU than it saves time on loopback and LAN
    /// links, most actor messages are too small to shrink, and bulk
    /// binary data is often compressed already; see [`Compression`].
    pub compression: Compression,
    /// How a dialing side reconnects after its transport breaks (for
    /// connections made with [`Connection::dial`](crate::Connection::dial)
    /// or [`Node::connect`](crate::Node::connect)).
    pub reconnect: ReconnectPolicy,
    /// How long an accepting side keeps a session whose transport broke,
    /// waiting for the dialer to resume it. Default 30 s.
    pub linger: Duration,
    /// The cluster secret. When set, a connection comes up only if the peer
    /// proves it knows the same secret (and this side proves it back); when
    /// unset, only with peers that have none either. It must be random (a
    /// dialer's proof can be attacked offline by whoever it dials), and it
    /// does not protect the stream after the handshake: use TLS for that.
    /// Default none.
    pub cookie: Option<Cookie>,
    /// Most connections a node's listener keeps at once, counting those
    /// still in their handshake; a transport beyond it is closed at once.
    /// Default 1,024.
    pub max_connections: u32,
    /// Most incoming transports a node's listener lets wait in their
    /// handshake (TLS included) at once. When another arrives (or the
    /// listener is full and some wait), the oldest waiting one from the
    /// source address holding the most is dropped: a burst of connections
    /// that never finish their handshake cannot keep a real peer out.
    /// Default 64.
    pub max_handshakes: u32,
    /// Most asks a node waits on at once per peer node; more fail at once
    /// with [`AskError::TooManyPending`](crate::AskError::TooManyPending),
    /// so a peer that never answers cannot make them pile up. Default 4,096.
    pub max_pending_asks: u32,
    /// Most messages a node holds for sends that do not wait
    /// ([`RemoteRef::post`](crate::RemoteRef::post), and through it actix's
    /// `do_send` and ractor's `cast`) while their actors' windows are full
    /// or their routes are being opened, for all actors together. They are
    /// held as the values given, so the memory they take is about this many
    /// times the message type's size (plus what the messages own). A post
    /// past it is refused with `Full`, counted and logged. Default
    /// 1,048,576: a burst of a million small messages to a slow actor is
    /// taken in whole, as actix and ractor take it locally.
    pub max_outbox: u32,
    /// Whether this node sends the trace context of the sending span with
    /// every message, and makes the span that delivers a received one its
    /// child (see [`trace`](crate::trace)). Default none: nothing is added
    /// to a message, and a context a peer sends is ignored.
    pub trace_propagation: Option<crate::trace::TracePropagation>,
    /// How often a node records its counters through the `metrics` facade
    /// (feature `metrics`; without it the field is there and unused, so
    /// that a configuration compiles either way). Each sample reads the
    /// node's and every live connection's stats under their locks, so its
    /// cost grows with the peers, not with the traffic. Default 1 s: finer
    /// than any scrape interval worth having, and nothing at rest.
    pub metrics_interval: Duration,
}

/// Reconnection with exponential backoff and full jitter: attempt `n` waits
/// a random time up to `min(cap, base × 2^(n-1))`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Whether a dialing side reconnects and resumes at all. Default on:
    /// surviving a broken link without losing or repeating a message is
    /// what a session is for; monitors then report `NodeLost` only when
    /// reconnection gives up. Off, a broken transport ends the connection
    /// at once: messages in flight on it are lost, asks waiting on it fail,
    /// and monitors report `NodeLost` at once.
    pub enabled: bool,
    /// First backoff step. Default 50 ms.
    pub base: Duration,
    /// Largest backoff step. Default 2 s.
    pub cap: Duration,
    /// Give up (the session is lost) after this long. Default 30 s.
    pub give_up_after: Duration,
    /// Give up after this many attempts. Default unlimited (`u32::MAX`).
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            give_up_after: Duration::from_secs(30),
            max_attempts: u32::MAX,
        }
    }
}

impl ReconnectPolicy {
    /// The wait before attempt `attempt` (1-based), given a random `unit` in [0, 1).
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let step = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.cap);
        step.mul_f64(unit.clamp(0.0, 1.0))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chunk_size: 32 * 1024,
            port_window: 2 * 1024 * 1024,
            conn_window: 16 * 1024 * 1024,
            send_buffer: 256 * 1024,
            conn_send_buffer: 512 * 1024,
            max_frame: 1024 * 1024,
            max_message: 128 * 1024 * 1024,
            max_ports: 16 * 1024,
            ping_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            codec: CodecKind::Postcard,
            compression: Compression::off(),
            reconnect: ReconnectPolicy::default(),
            linger: Duration::from_secs(30),
            cookie: None,
            max_connections: 1024,
            max_handshakes: 64,
            max_pending_asks: 4096,
            max_outbox: 1 << 20,
            trace_propagation: None,
            metrics_interval: Duration::from_secs(1),
        }
    }
}

/// The smallest port window that can carry anything: every frame costs 64
/// bytes of credit beyond its payload, and a receiver may hold back a
/// quarter of its window until the next grant.
pub(crate) const MIN_WINDOW: u32 = 256;

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub(crate) &'static str);

impl Config {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(ConfigError(what)) };
        check(self.chunk_size >= 64, "chunk_size must be at least 64 bytes")?;
        check(self.max_frame >= self.chunk_size, "max_frame must be at least chunk_size")?;
        check(self.port_window >= self.chunk_size, "port_window must be at least chunk_size")?;
        check(self.port_window >= MIN_WINDOW, "port_window must be at least 256 bytes")?;
        check(self.conn_window >= self.port_window, "conn_window must be at least port_window")?;
        check(self.send_buffer > 0, "send_buffer must not be zero")?;
        check(self.conn_send_buffer >= self.send_buffer, "conn_send_buffer must be at least send_buffer")?;
        check(self.max_message > 0, "max_message must not be zero")?;
        check(self.max_ports >= 2, "max_ports must be at least 2")?;
        check(!self.ping_interval.is_zero(), "ping_interval must not be zero")?;
        check(self.idle_timeout > self.ping_interval, "idle_timeout must exceed ping_interval")?;
        check(self.cookie.as_ref().is_none_or(|c| c.len() >= MIN_COOKIE_LEN), "cookie must be at least 16 bytes")?;
        check(self.max_connections > 0, "max_connections must not be zero")?;
        check(self.max_handshakes > 0, "max_handshakes must not be zero")?;
        check(self.max_pending_asks > 0, "max_pending_asks must not be zero")?;
        check(!self.handshake_timeout.is_zero(), "handshake_timeout must not be zero")?;
        check(!self.metrics_interval.is_zero(), "metrics_interval must not be zero")?;
        check(self.compression.level_is_valid(), "compression.zstd_level must be a level zstd takes")?;
        Ok(())
    }

    pub(crate) fn hello_limits(&self) -> HelloLimits {
        HelloLimits {
            port_window: self.port_window,
            conn_window: self.conn_window,
            max_frame: self.max_frame,
            max_message: self.max_message,
            max_ports: self.max_ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn a_connection_send_limit_below_the_port_limit_is_refused() {
        let cfg = Config { conn_send_buffer: 64 * 1024, send_buffer: 128 * 1024, ..Config::default() };
        assert_eq!(cfg.validate(), Err(ConfigError("conn_send_buffer must be at least send_buffer")));
    }
}
