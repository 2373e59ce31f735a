//! The wire format: handshake, frames and the message port table.
//!
//! Pure encoding and decoding over byte buffers: no I/O, no clock. The byte
//! layouts are written down in `docs/PROTOCOL.md`. The lowest layer: it
//! imports nothing else of the crate.
//!
//! - `mod.rs`: [`WireError`], every way bytes can fail to decode.
//! - `handshake.rs`: the `Hello` each side sends first, and its decoder's
//!   early checks (magic, version, authentication length).
//! - `frame.rs`: the frame header and the eight frame kinds (`Frame`), and
//!   `FrameDecoder`, which checks a header before buffering its payload.
//! - `envelope.rs`: the head that opens every message: its port table and
//!   its trace context, sizes and packing (compression), if any.

mod envelope;
mod frame;
mod handshake;

#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) use envelope::encode_table;
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) use envelope::table_len;
pub use envelope::TraceContext;
pub(crate) use envelope::{
    decode_head, encode_head, encoded_head_len, head_len, End, Head, Packing, PortEntry, Sizes, MAX_PORTS, PACKING_LEN,
    SIZED_MIN,
};
pub(crate) use frame::{Frame, FrameDecoder, PortId, FLAG_FIRST, FLAG_LAST};
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub(crate) use handshake::HELLO_FIXED_LEN;
pub(crate) use handshake::{Hello, HelloLimits, ACCEPTS_LZ4, ACCEPTS_ZSTD, MAGIC, MAX_AUTH_LEN, VERSION};

/// A byte stream that breaks the protocol. The connection that produced it
/// cannot continue.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The stream does not start with tether's magic.
    #[error("not a tether peer: expected magic {:?}, got {:?}", MAGIC, String::from_utf8_lossy(.theirs))]
    BadMagic {
        /// The bytes received where the magic belongs (zero-padded).
        theirs: [u8; 6],
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// Reserved handshake flags were set.
    #[error("unknown handshake flags {0:#06x}")]
    BadHelloFlags(u16),
    /// The handshake's compression byte (offset 27) names algorithms this
    /// version does not know (bits other than 0, LZ4, and 1, Zstd).
    #[error("handshake names unknown compression algorithms: {0:#04x}")]
    BadHelloCompression(u8),
    /// The handshake's authentication blob exceeds 1024 bytes.
    #[error("handshake authentication of {0} bytes exceeds {MAX_AUTH_LEN}")]
    AuthTooLong(usize),
    /// A frame kind this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    /// A frame whose length cannot be right for its kind.
    #[error("frame kind {kind} with impossible length {len}")]
    BadLength {
        /// The frame kind.
        kind: u8,
        /// The length in the header.
        len: u32,
    },
    /// A `Data` frame larger than the configured maximum.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The length in the header.
        len: u32,
        /// Our limit.
        max: u32,
    },
    /// Flags not defined for this frame kind.
    #[error("frame kind {kind} with unknown flags {flags:#04x}")]
    BadFlags {
        /// The frame kind.
        kind: u8,
        /// The flags.
        flags: u8,
    },
    /// A port number not allowed for this frame kind.
    #[error("frame kind {kind} on port {port}, which it may not use")]
    BadPort {
        /// The frame kind.
        kind: u8,
        /// The port.
        port: u32,
    },
    /// A first chunk too short for the head it announces (the port table
    /// and the trace context).
    #[error("message port table is truncated")]
    TruncatedPortTable,
    /// A port table entry with an unknown end byte.
    #[error("message port table names unknown end {0}")]
    BadPortEnd(u8),
}
