//! One connection: the async driver of one mux over one transport, its
//! handshake, and its recovery.
//!
//! - `connection.rs`: the [`Connection`] handle, and how one is made.
//! - `shared.rs`: the state the driver and the handles share, who keeps it
//!   open, and how it ends.
//! - `driver.rs`: the one task per connection that moves bytes between the
//!   mux and the transport.
//! - `handshake.rs`: the hello exchange and cookie proofs before any frame.
//! - `dial.rs`: making (and remaking) a dialer's transport, bounded in time.
//! - `recovery.rs`: backoff, linger, give-up and resume as a state machine
//!   without I/O or clock; `supervisor.rs` is the actor that runs it, one
//!   per connection, and the node-level actor a node links them to.
//! - `acceptor.rs`: accepting, and handing a returning dialer its session.
//! - `error.rs`: why a connection could not be made, or ended.
//!
//! This layer knows nothing of channels or nodes. Whoever takes a
//! connection in may leave an opaque owner on it (`Shared::set_owner`),
//! which the layers above find again while decoding a message.

mod acceptor;
mod connection;
mod dial;
mod driver;
mod error;
pub(crate) mod handshake;
mod recovery;
mod shared;
mod supervisor;

pub use acceptor::{Accepted, Acceptor};
#[cfg(feature = "metrics")]
pub(crate) use connection::Counters;
pub use connection::{Connection, ConnectionStats, Role};
pub(crate) use dial::{dialer, Dialer};
pub use error::{ConnectError, ConnectionError, SessionLost};
pub use recovery::ConnectionEvent;
pub(crate) use shared::{Shared, State};
pub(crate) use supervisor::Parent as SupervisorParent;
