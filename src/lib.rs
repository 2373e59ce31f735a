//! tether: remote channels and actors over one multiplexed connection.
//!
//! - [`Node`] is a process's identity: it listens, connects (one connection
//!   per peer node), exports actors by name and looks them up.
//! - [`RemoteRef<M>`] is a typed handle to an actor anywhere; it travels
//!   inside messages. The adapter crates `tether-actix` and `tether-ractor`
//!   wrap it in each framework's idiom.
//! - [`Connection`] carries typed channels ([`mpsc`], [`oneshot`],
//!   [`watch`], [`broadcast`]) over one transport; [`Connection::dial`] and [`Acceptor`]
//!   keep a session alive across broken transports and resume it with
//!   nothing lost or duplicated.
//!
//! A [`Connection`] runs over any ordered byte stream (TCP, Unix socket,
//! TLS, memory). It carries many typed channels ([`mpsc`], [`oneshot`],
//! [`watch`], [`broadcast`]); every channel end is `Serialize + Deserialize`, so it can sit
//! anywhere inside a message and is live when the message arrives.
//! Large binary payloads go in a [`Blob`], which a message carries without
//! copying it into or out of the encoding.
//!
//! ```text
//!  Sender::send(msg)                     Receiver::recv()
//!    │ encode (refs inside become ports)    ▲ decode (ports become ends)
//!    ▼                                      │
//!  mux: frame, chunk, credit, sequence    mux: reassemble, grant credit, ack
//!    │                                      ▲
//!  driver task: batched writes ──── transport ──── driver task: large reads
//! ```
//!
//! The mux is a state machine without I/O or clock; one driver task per
//! connection moves its bytes. Every queue is bounded: a sender that
//! outruns its receiver waits in `send` (or gets `Full` from `try_send`).
//! The wire format is in `docs/PROTOCOL.md`.
//!
//! Who may connect is decided by TLS (feature `tls`:
//! `Node::listen_tls`, `Node::connect_tls`, mutual TLS included) and by
//! a cluster [`Cookie`] (`Config::cookie`) that both sides prove they know.
//! What a connected peer may reach is decided by capabilities: a
//! [`RemoteRef`] carries a token only its owner can mint, so only actors
//! exported by name or whose refs a peer was sent are reachable.
//!
//! What goes through is counted ([`Connection::stats`], [`Node::stats`]);
//! with the feature `metrics` every node records these counts through the
//! [`metrics`](https://docs.rs/metrics) facade every
//! [`Config::metrics_interval`], labelled by node, peer and exported actor
//! name (the README's "Metrics" lists the series). The application installs
//! the recorder, before it makes its nodes.
//!
//! Features: `msgpack` (default: the MessagePack codec), `tls` (TLS and
//! mutual TLS), `metrics`, `opentelemetry` (trace contexts through
//! `tracing-opentelemetry`, see [`trace`]), `fault-injection`
//! (`transport::fault`, for tests), `fuzzing` (entry points for the
//! decoders' fuzz targets).
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tether::{mpsc, oneshot, Config, Connection};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Question {
//!     text: String,
//!     reply: oneshot::Sender<usize>,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two ends of one transport; over TCP this would be a TcpStream each.
//! let (a, b) = tether::transport::memory(64 * 1024);
//! let (client, server) = tokio::try_join!(
//!     Connection::connect(a, Config::default()),
//!     Connection::accept(b, Config::default()),
//! )?;
//! let (questions, _) = client.root::<Question, ()>().unwrap();
//! let (_, mut incoming) = server.root::<(), Question>().unwrap();
//!
//! tokio::spawn(async move {
//!     while let Ok(Some(q)) = incoming.recv().await {
//!         let _ = q.reply.send(q.text.len());
//!     }
//! });
//!
//! let (reply, answer) = oneshot::channel();
//! questions.send(Question { text: "how long?".into(), reply }).await?;
//! assert_eq!(answer.await?, 9);
//! # Ok(()) }
//! ```
#![warn(unreachable_pub, missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod chan;
pub mod cluster;
pub mod codec;
mod compress;
mod config;
mod conn;
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod mux;
mod node;
mod pool;
pub mod trace;
pub mod transport;
mod wire;

pub use auth::Cookie;
pub use chan::{broadcast, mpsc, oneshot, pipe, watch, Blob, RecvError};
pub use compress::{Algorithm, Compression};
pub use config::{Config, ConfigError, ReconnectPolicy};
pub use conn::{
    Accepted, Acceptor, ConnectError, Connection, ConnectionError, ConnectionEvent, ConnectionStats, Role, SessionLost,
};
pub use mux::MuxError as ProtocolError;
pub use node::{
    message_tag, ActorExit, ActorId, AnyRef, AskError, AskPermit, Exporter, LookupError, Mailbox, Monitor, NameTaken,
    Node, NodeStats, OpenRequest, RemoteError, RemoteMessage, RemoteRef, Replies, ReplyPort, ReplyStream, RequestPort,
    TellError, WatchEvent,
};
pub use wire::WireError;

use std::sync::OnceLock;

/// A node's identity: a random uuid drawn once per process, so it changes
/// whenever the process restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub uuid::Uuid);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// This process's node id.
pub fn node_id() -> NodeId {
    static ID: OnceLock<NodeId> = OnceLock::new();
    *ID.get_or_init(|| NodeId(uuid::Uuid::new_v4()))
}

/// The README's examples, run as doc tests so that they keep compiling and
/// doing what they claim.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

/// The "coming from" guide's programs (`docs/COMING_FROM.md`), run the same
/// way.
#[cfg(doctest)]
#[doc = include_str!("../docs/COMING_FROM.md")]
pub struct ComingFromExamples;
