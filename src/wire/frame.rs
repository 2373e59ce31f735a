//! Frames: the unit the multiplexer exchanges after the handshake.
//!
//! Every frame is a 10-byte header followed by `len` payload bytes:
//!
//! ```text
//!  0      1      2                6                10
//!  +------+------+----------------+----------------+==============+
//!  | kind | flags|  port (u32 BE) |  len (u32 BE)  | payload ...  |
//!  +------+------+----------------+----------------+==============+
//! ```
//!
//! The header is checked against the configured limits before any payload is
//! buffered, so a hostile length never causes an allocation.

use bytes::{Buf, Bytes, BytesMut};

use super::WireError;

/// Size of the fixed frame header.
pub(crate) const HEADER_LEN: usize = 10;

/// Flag on `Data`: this chunk starts a message (its payload begins with the
/// port table, see `docs/PROTOCOL.md`).
pub(crate) const FLAG_FIRST: u8 = 0x01;
/// Flag on `Data`: this chunk ends a message.
pub(crate) const FLAG_LAST: u8 = 0x02;

/// Longest reason text carried by a `GoAway` frame.
pub(crate) const MAX_REASON_LEN: usize = 1024;

/// A port identifier. Bit 0 names the side that allocated it: 0 for the
/// dialing side (client), 1 for the accepting side (server). Port 0 is the
/// connection itself.
pub(crate) type PortId = u32;

/// Frame kinds, as on the wire.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Data = 1,
    Credit = 2,
    Fin = 3,
    Stop = 4,
    Ack = 5,
    Ping = 6,
    Pong = 7,
    GoAway = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Data,
            2 => Kind::Credit,
            3 => Kind::Fin,
            4 => Kind::Stop,
            5 => Kind::Ack,
            6 => Kind::Ping,
            7 => Kind::Pong,
            8 => Kind::GoAway,
            _ => return None,
        })
    }
}

/// One decoded frame. This enum is the whole frame vocabulary of the mux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A chunk of a message on `port`, from the port's sender end.
    Data { port: PortId, flags: u8, payload: Bytes },
    /// The receiver end grants `bytes` more credit. Port 0: connection credit.
    Credit { port: PortId, bytes: u32 },
    /// The sender end will send nothing more on `port`.
    Fin { port: PortId },
    /// The receiver end is gone; the sender must stop and answer with `Fin`.
    Stop { port: PortId },
    /// Cumulative count of reliable frames received on this session.
    Ack { received: u64 },
    /// Liveness probe; the peer answers with `Pong` carrying the same value.
    Ping { nonce: u64 },
    /// Answer to `Ping`.
    Pong { nonce: u64 },
    /// The sender closes the connection; `code` and `reason` say why.
    GoAway { code: u32, reason: String },
}

impl Frame {
    /// Reliable frames are counted by the session sequence and replayed after
    /// a resume; the others are per-transport.
    pub(crate) fn is_reliable(&self) -> bool {
        matches!(self, Frame::Data { .. } | Frame::Credit { .. } | Frame::Fin { .. } | Frame::Stop { .. })
    }

    /// Bytes this frame occupies on the wire.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => payload.len(),
            Frame::Credit { .. } => 4,
            Frame::Fin { .. } | Frame::Stop { .. } => 0,
            Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => 8,
            Frame::GoAway { reason, .. } => 4 + truncate_at(reason, MAX_REASON_LEN),
        }
    }

    /// Writes the header into `out`, and the payload too unless it is a
    /// `Data` payload, which the caller may send without copying (see
    /// [`Frame::data_payload`]).
    pub(crate) fn encode_header(&self, out: &mut BytesMut) {
        let (kind, flags, port, value) = match self {
            Frame::Data { port, flags, .. } => (Kind::Data, *flags, *port, None),
            Frame::Credit { port, bytes } => (Kind::Credit, 0, *port, Some(u64::from(*bytes))),
            Frame::Fin { port } => (Kind::Fin, 0, *port, None),
            Frame::Stop { port } => (Kind::Stop, 0, *port, None),
            Frame::Ack { received: v } => (Kind::Ack, 0, 0, Some(*v)),
            Frame::Ping { nonce: v } => (Kind::Ping, 0, 0, Some(*v)),
            Frame::Pong { nonce: v } => (Kind::Pong, 0, 0, Some(*v)),
            Frame::GoAway { code, .. } => (Kind::GoAway, 0, 0, Some(u64::from(*code))),
        };
        // Header and fixed-size payload are assembled on the stack and
        // appended at once: one capacity check per frame, not one per field.
        let mut head = [0u8; HEADER_LEN + 8];
        head[0] = kind as u8;
        head[1] = flags;
        head[2..6].copy_from_slice(&port.to_be_bytes());
        head[6..10].copy_from_slice(&(self.payload_len() as u32).to_be_bytes());
        let n = match (kind, value) {
            (Kind::Credit | Kind::GoAway, Some(v)) => {
                head[10..14].copy_from_slice(&(v as u32).to_be_bytes());
                HEADER_LEN + 4
            }
            (_, Some(v)) => {
                head[10..18].copy_from_slice(&v.to_be_bytes());
                HEADER_LEN + 8
            }
            (_, None) => HEADER_LEN,
        };
        out.extend_from_slice(&head[..n]);
        if let Frame::GoAway { reason, .. } = self {
            out.extend_from_slice(&reason.as_bytes()[..truncate_at(reason, MAX_REASON_LEN)]);
        }
    }

    /// Writes the whole frame into `out` (only tests and the fuzz entry
    /// points need it; the driver writes header and payload separately).
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        self.encode_header(out);
        if let Frame::Data { payload, .. } = self {
            out.extend_from_slice(payload);
        }
    }

    /// The payload of a `Data` frame, which [`Frame::encode_header`] leaves out.
    pub(crate) fn data_payload(&self) -> Option<&Bytes> {
        match self {
            Frame::Data { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

/// The checked header of a whole frame at the front of a read buffer (see
/// [`FrameDecoder::peek`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    kind: Kind,
    pub(crate) flags: u8,
    pub(crate) port: PortId,
    len: u32,
}

impl Head {
    /// Whether this is a `Data` frame.
    pub(crate) fn is_data(&self) -> bool {
        self.kind == Kind::Data
    }

    /// Bytes of the frame, header included.
    pub(crate) fn total(&self) -> usize {
        HEADER_LEN + self.len as usize
    }

    /// The payload, in place in `buf` (which this header was peeked from).
    pub(crate) fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[HEADER_LEN..self.total()]
    }

    /// Takes the frame off the front of `buf`. A `Data` payload is split
    /// off the buffer, not copied; whoever keeps it pins the buffer (the mux
    /// keeps only large ones so, and reads small ones in place).
    pub(crate) fn take(self, buf: &mut BytesMut) -> Frame {
        let Head { kind, flags, port, len } = self;
        if kind == Kind::Data {
            buf.advance(HEADER_LEN);
            let payload = buf.split_to(len as usize).freeze();
            return Frame::Data { port, flags, payload };
        }
        let mut payload = &buf[HEADER_LEN..self.total()];
        let frame = match kind {
            Kind::Data => unreachable!("taken above"),
            Kind::Credit => Frame::Credit { port, bytes: payload.get_u32() },
            Kind::Fin => Frame::Fin { port },
            Kind::Stop => Frame::Stop { port },
            Kind::Ack => Frame::Ack { received: payload.get_u64() },
            Kind::Ping => Frame::Ping { nonce: payload.get_u64() },
            Kind::Pong => Frame::Pong { nonce: payload.get_u64() },
            Kind::GoAway => {
                let code = payload.get_u32();
                let reason = String::from_utf8_lossy(payload).into_owned();
                Frame::GoAway { code, reason }
            }
        };
        buf.advance(self.total());
        frame
    }
}

/// The largest char boundary not above `max`.
fn truncate_at(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Decodes frames from a byte buffer, checking each header against
/// `max_payload` before anything of the payload is taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameDecoder {
    max_payload: u32,
}

impl FrameDecoder {
    /// A decoder that refuses payloads above `max_payload` bytes.
    pub(crate) fn new(max_payload: u32) -> Self {
        FrameDecoder { max_payload }
    }

    /// Takes one frame off the front of `buf`. `Ok(None)` means more bytes are
    /// needed; on error the stream is unusable and the connection must end.
    /// (The mux peeks instead, to read small payloads in place.)
    #[cfg(any(test, fuzzing, feature = "fuzzing"))]
    pub(crate) fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        Ok(self.peek(buf)?.map(|head| head.take(buf)))
    }

    /// The header of the frame at the front of `buf`, checked, once the
    /// whole frame is there (the frame stays in `buf`: see [`Head::take`],
    /// or read a `Data` payload in place with [`Head::payload`]).
    /// `Ok(None)` means more bytes are needed, and room for them is
    /// reserved; on error the stream is unusable and the connection must end.
    pub(crate) fn peek(&self, buf: &mut BytesMut) -> Result<Option<Head>, WireError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind_byte = buf[0];
        let flags = buf[1];
        let port = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
        let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]);
        let kind = Kind::from_u8(kind_byte).ok_or(WireError::UnknownFrameKind(kind_byte))?;
        self.check_header(kind, flags, port, len)?;
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        Ok(Some(Head { kind, flags, port, len }))
    }

    fn check_header(&self, kind: Kind, flags: u8, port: u32, len: u32) -> Result<(), WireError> {
        let expected = match kind {
            Kind::Data => None,
            Kind::Credit => Some(4),
            Kind::Fin | Kind::Stop => Some(0),
            Kind::Ack | Kind::Ping | Kind::Pong => Some(8),
            Kind::GoAway => {
                if !(4..=4 + MAX_REASON_LEN as u32).contains(&len) {
                    return Err(WireError::BadLength { kind: kind as u8, len });
                }
                None
            }
        };
        if let Some(expected) = expected {
            if len != expected {
                return Err(WireError::BadLength { kind: kind as u8, len });
            }
        }
        if kind == Kind::Data && len > self.max_payload {
            return Err(WireError::FrameTooLarge { len, max: self.max_payload });
        }
        let allowed_flags = if kind == Kind::Data { FLAG_FIRST | FLAG_LAST } else { 0 };
        if flags & !allowed_flags != 0 {
            return Err(WireError::BadFlags { kind: kind as u8, flags });
        }
        let port_allowed = match kind {
            Kind::Data | Kind::Fin | Kind::Stop => port != 0,
            Kind::Credit => true,
            Kind::Ack | Kind::Ping | Kind::Pong | Kind::GoAway => port == 0,
        };
        if !port_allowed {
            return Err(WireError::BadPort { kind: kind as u8, port });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn roundtrip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len());
        let dec = FrameDecoder::new(1 << 20);
        // Every strict prefix asks for more bytes.
        for cut in 0..buf.len() {
            let mut part = BytesMut::from(&buf[..cut]);
            assert_eq!(dec.decode(&mut part).unwrap(), None, "prefix {cut}");
        }
        let got = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_kind_roundtrips() {
        roundtrip(Frame::Data { port: 7, flags: FLAG_FIRST | FLAG_LAST, payload: Bytes::from_static(b"hello") });
        roundtrip(Frame::Data { port: 2, flags: 0, payload: Bytes::new() });
        roundtrip(Frame::Credit { port: 0, bytes: 65536 });
        roundtrip(Frame::Fin { port: 9 });
        roundtrip(Frame::Stop { port: 9 });
        roundtrip(Frame::Ack { received: u64::MAX });
        roundtrip(Frame::Ping { nonce: 42 });
        roundtrip(Frame::Pong { nonce: 42 });
        roundtrip(Frame::GoAway { code: 3, reason: "bye".into() });
    }

    /// A reason cut at `MAX_REASON_LEN` inside a character is cut before
    /// it, and the header says the length actually written: the frame
    /// after it still decodes.
    #[test]
    fn a_long_reason_cut_inside_a_character_keeps_the_stream_in_step() {
        let reason = format!("{}é and more", "a".repeat(MAX_REASON_LEN - 1));
        let mut buf = BytesMut::new();
        Frame::GoAway { code: 1, reason }.encode(&mut buf);
        Frame::Ping { nonce: 5 }.encode(&mut buf);
        let dec = FrameDecoder::new(1 << 20);
        let want = Frame::GoAway { code: 1, reason: "a".repeat(MAX_REASON_LEN - 1) };
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(want));
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Frame::Ping { nonce: 5 }));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_data_is_refused_from_the_header_alone() {
        let mut buf = BytesMut::new();
        buf.put_u8(Kind::Data as u8);
        buf.put_u8(FLAG_FIRST);
        buf.put_u32(2);
        buf.put_u32(u32::MAX);
        let err = FrameDecoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(err, WireError::FrameTooLarge { len: u32::MAX, max: 1024 });
        assert!(buf.capacity() < 1024, "nothing was reserved for the payload");
    }

    #[test]
    fn malformed_headers_have_typed_errors() {
        let dec = FrameDecoder::new(1024);
        let header = |kind: u8, flags: u8, port: u32, len: u32| {
            let mut b = BytesMut::new();
            b.put_u8(kind);
            b.put_u8(flags);
            b.put_u32(port);
            b.put_u32(len);
            b.put_bytes(0, len.min(64) as usize);
            b
        };
        assert_eq!(dec.decode(&mut header(99, 0, 0, 0)), Err(WireError::UnknownFrameKind(99)));
        assert_eq!(dec.decode(&mut header(2, 0, 1, 3)), Err(WireError::BadLength { kind: 2, len: 3 }));
        assert_eq!(dec.decode(&mut header(1, 0x80, 1, 0)), Err(WireError::BadFlags { kind: 1, flags: 0x80 }));
        assert_eq!(dec.decode(&mut header(1, 0, 0, 0)), Err(WireError::BadPort { kind: 1, port: 0 }));
        assert_eq!(dec.decode(&mut header(5, 0, 4, 8)), Err(WireError::BadPort { kind: 5, port: 4 }));
        assert_eq!(dec.decode(&mut header(8, 0, 0, 2)), Err(WireError::BadLength { kind: 8, len: 2 }));
    }
}
