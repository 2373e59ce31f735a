//! The handshake: each side sends one `Hello` as soon as the transport is up,
//! then reads the peer's. Frames follow only after both checked out.
//!
//! Layout (all integers big-endian), 74 bytes plus the authentication blob:
//!
//! ```text
//!  off  size  field
//!    0     6  magic "TETHER"
//!    6     2  protocol version
//!    8     2  flags: bit 0 = the dialer resumes this session after a
//!             broken transport; other bits reserved (0)
//!   10    16  node id (uuid; new at every process start)
//!   26     1  codec (1 postcard, 2 MessagePack)
//!   27     1  compression this side accepts: bit 0 LZ4, bit 1 Zstd;
//!             other bits reserved (0)
//!   28    16  session id (all zero: a new session)
//!   44     8  resume position: reliable frames received on that session
//!   52     4  per-port window this side grants initially
//!   56     4  connection window this side grants initially
//!   60     4  largest Data payload this side accepts
//!   64     4  largest message this side accepts
//!   68     4  most ports this side keeps open
//!   72     2  authentication length (at most 1024)
//!   74     n  authentication offer: empty, or scheme 1 (cookie) and a
//!             32-byte nonce (see `crate::auth`)
//! ```
//!
//! The handshake is canonical: a decoded `Hello` encodes to exactly the
//! bytes it came from, so cookie proofs can cover the peer's `Hello` by
//! encoding it again.

use bytes::{Buf, BufMut, BytesMut};
use uuid::Uuid;

use super::WireError;

/// The first bytes of every tether connection.
pub(crate) const MAGIC: [u8; 6] = *b"TETHER";
/// The protocol version this build speaks. 8: the `Hello`'s byte 27 (was
/// reserved) lists the compression algorithms a side accepts, and a
/// message's head may say its body is compressed (bit 13 of the port-table
/// count; at most 8,191 ports). 7: a message may end in
/// attached blobs, their length in its head (bit 14 of the port-table count;
/// at most 16,383 ports). 6: a message's head may carry a trace context (the
/// top bit of the count). 5: the answer to a `Watch`
/// says how the actor ended (`ActorExit`), not just `Ok(())`. 4: `Open`
/// and `Exported` carry message tags (`src/node/tag.rs`), not
/// `std::any::type_name`.
pub(crate) const VERSION: u16 = 8;
/// Hello flag: the dialer resumes the session after a broken transport.
pub(crate) const FLAG_RESUMABLE: u16 = 0x0001;
/// Hello compression bit: the sender accepts messages compressed with LZ4
/// (the block format).
pub(crate) const ACCEPTS_LZ4: u8 = 0x01;
/// Hello compression bit: the sender accepts messages compressed with Zstd
/// (one frame).
pub(crate) const ACCEPTS_ZSTD: u8 = 0x02;
/// Length of the fixed part of a `Hello`.
pub(crate) const HELLO_FIXED_LEN: usize = 74;
/// Longest authentication blob accepted in a `Hello`.
pub(crate) const MAX_AUTH_LEN: usize = 1024;

/// One side's opening message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// Protocol version of the sender.
    pub(crate) version: u16,
    /// The sender's node id.
    pub(crate) node_id: Uuid,
    /// Codec id the sender will encode messages with.
    pub(crate) codec: u8,
    /// The compression algorithms the sender accepts ([`ACCEPTS_LZ4`],
    /// [`ACCEPTS_ZSTD`]): the peer may compress what it sends with these.
    pub(crate) accepts: u8,
    /// The session the sender wants to resume; nil for a new one.
    pub(crate) session_id: Uuid,
    /// Reliable frames of that session the sender has received.
    pub(crate) resume_received: u64,
    /// The sender dials again and resumes the session if the transport
    /// breaks, so the acceptor should keep it for a while.
    pub(crate) resumable: bool,
    /// Limits the sender applies to what it receives.
    pub(crate) limits: HelloLimits,
    /// The authentication offer (see `crate::auth::Offer`).
    pub(crate) auth: Vec<u8>,
}

/// The receive limits a side announces, so the peer never exceeds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HelloLimits {
    /// Initial credit per port, in bytes.
    pub(crate) port_window: u32,
    /// Initial credit for the whole connection, in bytes.
    pub(crate) conn_window: u32,
    /// Largest `Data` payload accepted.
    pub(crate) max_frame: u32,
    /// Largest message accepted.
    pub(crate) max_message: u32,
    /// Most ports open at once.
    pub(crate) max_ports: u32,
}

impl Hello {
    /// Appends the encoded hello to `out`.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let auth = &self.auth[..self.auth.len().min(MAX_AUTH_LEN)];
        out.reserve(HELLO_FIXED_LEN + auth.len());
        out.put_slice(&MAGIC);
        out.put_u16(self.version);
        out.put_u16(if self.resumable { FLAG_RESUMABLE } else { 0 });
        out.put_slice(self.node_id.as_bytes());
        out.put_u8(self.codec);
        out.put_u8(self.accepts);
        out.put_slice(self.session_id.as_bytes());
        out.put_u64(self.resume_received);
        let l = &self.limits;
        for v in [l.port_window, l.conn_window, l.max_frame, l.max_message, l.max_ports] {
            out.put_u32(v);
        }
        out.put_u16(auth.len() as u16);
        out.put_slice(auth);
    }

    /// Decodes a hello from the front of `buf`. Wrong magic or version fail
    /// as soon as those bytes are in, so garbage is refused early.
    pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Hello>, WireError> {
        let have = buf.len().min(MAGIC.len());
        if buf[..have] != MAGIC[..have] {
            let mut theirs = [0u8; 6];
            theirs[..have].copy_from_slice(&buf[..have]);
            return Err(WireError::BadMagic { theirs });
        }
        if buf.len() < 8 {
            return Ok(None);
        }
        let version = u16::from_be_bytes([buf[6], buf[7]]);
        if version != VERSION {
            return Err(WireError::VersionMismatch { ours: VERSION, theirs: version });
        }
        if buf.len() < HELLO_FIXED_LEN {
            return Ok(None);
        }
        let auth_len = u16::from_be_bytes([buf[72], buf[73]]) as usize;
        if auth_len > MAX_AUTH_LEN {
            return Err(WireError::AuthTooLong(auth_len));
        }
        if buf.len() < HELLO_FIXED_LEN + auth_len {
            return Ok(None);
        }
        buf.advance(8);
        let flags = buf.get_u16();
        if flags & !FLAG_RESUMABLE != 0 {
            return Err(WireError::BadHelloFlags(flags));
        }
        let node_id = take_uuid(buf);
        let codec = buf.get_u8();
        let accepts = buf.get_u8();
        if accepts & !(ACCEPTS_LZ4 | ACCEPTS_ZSTD) != 0 {
            return Err(WireError::BadHelloCompression(accepts));
        }
        let session_id = take_uuid(buf);
        let resume_received = buf.get_u64();
        let limits = HelloLimits {
            port_window: buf.get_u32(),
            conn_window: buf.get_u32(),
            max_frame: buf.get_u32(),
            max_message: buf.get_u32(),
            max_ports: buf.get_u32(),
        };
        buf.advance(2);
        let auth = buf.split_to(auth_len).to_vec();
        let resumable = flags & FLAG_RESUMABLE != 0;
        Ok(Some(Hello { version, node_id, codec, accepts, session_id, resume_received, resumable, limits, auth }))
    }
}

fn take_uuid(buf: &mut BytesMut) -> Uuid {
    let mut b = [0u8; 16];
    buf.copy_to_slice(&mut b);
    Uuid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: VERSION,
            node_id: Uuid::new_v4(),
            codec: 1,
            accepts: ACCEPTS_ZSTD,
            session_id: Uuid::nil(),
            resume_received: 7,
            resumable: true,
            limits: HelloLimits { port_window: 1, conn_window: 2, max_frame: 3, max_message: 4, max_ports: 5 },
            auth: b"token".to_vec(),
        }
    }

    #[test]
    fn roundtrip_and_prefixes() {
        let h = hello();
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        assert_eq!(buf.len(), HELLO_FIXED_LEN + 5);
        for cut in 0..buf.len() {
            let mut part = BytesMut::from(&buf[..cut]);
            assert_eq!(Hello::decode(&mut part).unwrap(), None);
        }
        buf.extend_from_slice(b"rest");
        assert_eq!(Hello::decode(&mut buf).unwrap(), Some(h));
        assert_eq!(&buf[..], b"rest");
    }

    /// Cookie proofs cover the peer's hello by encoding it again, so every
    /// hello that decodes must encode back to exactly its bytes.
    #[test]
    fn decoding_is_canonical() {
        let mut base = BytesMut::new();
        hello().encode(&mut base);
        for pos in 0..base.len() {
            for v in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                let mut mutated = BytesMut::from(&base[..]);
                mutated[pos] = v;
                let original = mutated.clone();
                let Ok(Some(h)) = Hello::decode(&mut mutated) else { continue };
                let consumed = original.len() - mutated.len();
                let mut again = BytesMut::new();
                h.encode(&mut again);
                assert_eq!(&again[..], &original[..consumed], "byte {pos} set to {v:#x}");
            }
        }
    }

    #[test]
    fn garbage_fails_at_the_first_wrong_byte() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(Hello::decode(&mut buf), Err(WireError::BadMagic { theirs: *b"GET / " }));
        let mut buf = BytesMut::from(&b"TX"[..]);
        assert_eq!(Hello::decode(&mut buf), Err(WireError::BadMagic { theirs: *b"TX\0\0\0\0" }));
    }

    #[test]
    fn version_mismatch_names_both() {
        let mut h = hello();
        h.version = 9;
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        buf.truncate(8);
        assert_eq!(Hello::decode(&mut buf), Err(WireError::VersionMismatch { ours: VERSION, theirs: 9 }));
    }

    #[test]
    fn nonzero_flags_or_unknown_compression_are_refused() {
        let mut buf = BytesMut::new();
        hello().encode(&mut buf);
        assert_eq!(buf[27], ACCEPTS_ZSTD, "byte 27 lists the algorithms accepted");
        let mut flagged = buf.clone();
        flagged[9] |= 2;
        assert_eq!(Hello::decode(&mut flagged), Err(WireError::BadHelloFlags(3)));
        for value in [0u8, ACCEPTS_LZ4, ACCEPTS_LZ4 | ACCEPTS_ZSTD] {
            let mut known = buf.clone();
            known[27] = value;
            assert_eq!(Hello::decode(&mut known).unwrap().unwrap().accepts, value);
        }
        for value in [4u8, 0x80, 0xff] {
            let mut unknown = buf.clone();
            unknown[27] = value;
            assert_eq!(Hello::decode(&mut unknown), Err(WireError::BadHelloCompression(value)));
        }
        // Refused only once the whole hello is in: a prefix still asks for more.
        let mut prefix = buf.clone();
        prefix[27] = 4;
        prefix.truncate(HELLO_FIXED_LEN);
        assert_eq!(Hello::decode(&mut prefix), Ok(None));
    }

    #[test]
    fn oversized_auth_is_refused() {
        let mut buf = BytesMut::new();
        hello().encode(&mut buf);
        buf[72] = 0xff;
        assert_eq!(Hello::decode(&mut buf), Err(WireError::AuthTooLong(0xff05)));
    }
}
