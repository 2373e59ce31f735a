//! The head that opens every message: its port table, and the trace
//! context, sizes and compression it may carry.
//!
//! The first `Data` chunk of a message starts with the ports the message
//! carries, so that the receiving mux knows them before any frame of those
//! ports can arrive, and can close them if the message is never read:
//!
//! ```text
//!  u16 word: bit 15 = traced, bit 14 = sized, bit 13 = packed,
//!            bits 0..13 = count
//!  count × { u32 port, u8 end }                     (big-endian)
//!  if traced: 16-byte trace id, 8-byte parent span id, 1 flags byte
//!  if sized: u32 bytes after the head, u32 bytes of blobs at their end
//!  if packed: u8 algorithm, u32 plain length, u32 packed length
//! ```
//!
//! `end` names which end of the port travelled inside the message: 0 the
//! sender end, 1 the receiver end. The trace context is W3C's `traceparent`
//! (version 00) in binary. Blobs ([`Blob`](crate::Blob)) travel after the
//! encoded value, uncopied; the value refers to them by offset. A packed
//! message's first `packed` bytes after the head are the compressed form
//! of `plain` bytes, which stand in their place: the message is those
//! bytes, then the rest as sent (see [`Packing`]). The sizes count the bytes
//! as sent, the blobs as they are once unpacked. The whole head is inside
//! the first chunk.

use bytes::{Buf, BufMut};

use super::{PortId, WireError};

/// Bytes of one table entry.
pub(crate) const ENTRY_LEN: usize = 5;

/// Bit 15 of the head's first word: a trace context follows the table.
const TRACED: u16 = 0x8000;

/// Bit 14 of the head's first word: the message's [`Sizes`] follow the
/// table (and trace context).
const SIZED: u16 = 0x4000;

/// Bit 13 of the head's first word: the message's [`Packing`] follows the
/// sizes (or what comes before them).
const PACKED: u16 = 0x2000;

/// The flag bits of the head's first word; the rest is the port count.
const FLAGS: u16 = TRACED | SIZED | PACKED;

/// The most ports one message can carry (the count's 13 bits).
pub(crate) const MAX_PORTS: usize = 0x1fff;

/// Bytes of [`Packing`] on the wire.
pub(crate) const PACKING_LEN: usize = 9;

/// Bytes of [`Sizes`] on the wire.
const SIZES_LEN: usize = 8;

/// Messages at least this long (after their head) carry their [`Sizes`],
/// so that the receiver reassembles them in a buffer of the right size.
pub(crate) const SIZED_MIN: usize = 16 * 1024;

/// Bytes of a trace context on the wire.
pub(crate) const TRACE_LEN: usize = 25;

/// Where a message sits in a distributed trace: the W3C trace context of
/// the span that sent it (`traceparent`, version 00, without `tracestate`).
/// See [`trace`](crate::trace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id.
    pub trace_id: [u8; 16],
    /// The id of the span that sent the message: the parent of the span
    /// that handles it.
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Whether it names a span: W3C makes an all-zero trace or span id
    /// invalid, and a receiver ignores such a context.
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }
}

/// Which end of a port travelled inside a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum End {
    /// The sending end: its new holder writes to the port.
    Sender,
    /// The receiving end: its new holder reads from the port.
    Receiver,
}

/// One entry of a message's port table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PortEntry {
    /// The port, allocated by the message's sender.
    pub(crate) port: PortId,
    /// The end that travelled.
    pub(crate) end: End,
}

/// What a message's head says: the ports it carries, where it sits in a
/// trace, for a long message or one with blobs its sizes, and for a
/// compressed one how it is packed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) ports: Vec<PortEntry>,
    pub(crate) trace: Option<Box<TraceContext>>,
    pub(crate) sizes: Option<Sizes>,
    pub(crate) packing: Option<Packing>,
}

/// How a message's body is compressed: the first `packed` bytes after its
/// head are `algorithm`'s encoding of `plain` bytes, which take their
/// place; the bytes after them are as sent. The wire checks nothing more:
/// whether the algorithm was agreed, and what the bytes unpack to, are the
/// receiver's to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packing {
    /// The algorithm, by its bit in the `Hello`'s compression byte
    /// (`ACCEPTS_LZ4`, `ACCEPTS_ZSTD`).
    pub(crate) algorithm: u8,
    /// Bytes the packed part unpacks to.
    pub(crate) plain: u32,
    /// Bytes of the packed part, as sent.
    pub(crate) packed: u32,
}

/// The most a packed part may grow when unpacked: about LZ4's own limit
/// (a match token yields at most 255 bytes a byte). A sender sends plain
/// what would shrink more; a receiver refuses a head that claims more, so a
/// few bytes on the wire never make it allocate and fill megabytes.
pub(crate) const MAX_PACK_RATIO: u64 = 256;

impl Packing {
    /// Whether the plain part is at most [`MAX_PACK_RATIO`] times the
    /// packed part.
    pub(crate) fn ratio_ok(&self) -> bool {
        u64::from(self.plain) <= u64::from(self.packed) * MAX_PACK_RATIO
    }

    /// Bytes the message grows by once unpacked (0 if it would shrink: a
    /// lying head, refused when it is unpacked).
    pub(crate) fn growth(&self) -> usize {
        self.plain.saturating_sub(self.packed) as usize
    }
}

/// How long a message is, and how much of it are blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    /// Bytes of the message after its head.
    pub(crate) len: u32,
    /// Bytes at the end of the message that are blobs, attached out of the
    /// encoded value (see [`Blob`](crate::Blob)).
    pub(crate) attached: u32,
}

impl Sizes {
    /// The sizes a message of `len` bytes after its head, `attached` of
    /// them blobs, carries: none if it is short and has no blobs.
    pub(crate) fn of(len: u32, attached: u32) -> Option<Sizes> {
        (attached > 0 || len as usize >= SIZED_MIN).then_some(Sizes { len, attached })
    }
}

/// Bytes the table of `n` ports takes.
pub(crate) const fn table_len(n: usize) -> usize {
    2 + n * ENTRY_LEN
}

/// Bytes the head takes at the start of `message` (an encoded message, or
/// its first chunk): what its first chunk must hold whole.
pub(crate) fn head_len(message: &[u8]) -> usize {
    match message {
        [hi, lo, ..] => {
            let word = u16::from_be_bytes([*hi, *lo]);
            encoded_head_len((word & !FLAGS) as usize, word & TRACED != 0, word & SIZED != 0, word & PACKED != 0)
        }
        _ => message.len(),
    }
}

/// Bytes the head of a message with `ports` ports, a trace context or not,
/// sizes or not, and packing or not takes.
pub(crate) const fn encoded_head_len(ports: usize, traced: bool, sized: bool, packed: bool) -> usize {
    table_len(ports)
        + if traced { TRACE_LEN } else { 0 }
        + if sized { SIZES_LEN } else { 0 }
        + if packed { PACKING_LEN } else { 0 }
}

/// Writes a message's head: its port table (at most [`MAX_PORTS`]
/// entries), then its trace context if it has one, then its sizes if it
/// has them, then its packing if it is compressed.
/// (`out` has room for [`encoded_head_len`] bytes, or grows.)
pub(crate) fn encode_head(
    ports: &[PortEntry],
    trace: Option<&TraceContext>,
    sizes: Option<Sizes>,
    packing: Option<Packing>,
    out: &mut impl BufMut,
) {
    // Callers cap the table (`chan::attach_port`); a longer one would set
    // the flag bits, so it is never written.
    assert!(ports.len() <= MAX_PORTS, "a port table of {} entries", ports.len());
    let flags = if trace.is_some() { TRACED } else { 0 }
        | if sizes.is_some() { SIZED } else { 0 }
        | if packing.is_some() { PACKED } else { 0 };
    out.put_u16(ports.len() as u16 | flags);
    for p in ports {
        out.put_u32(p.port);
        out.put_u8(match p.end {
            End::Sender => 0,
            End::Receiver => 1,
        });
    }
    if let Some(t) = trace {
        out.put_slice(&t.trace_id);
        out.put_slice(&t.span_id);
        out.put_u8(t.flags);
    }
    if let Some(sizes) = sizes {
        out.put_u32(sizes.len);
        out.put_u32(sizes.attached);
    }
    if let Some(p) = packing {
        out.put_u8(p.algorithm);
        out.put_u32(p.plain);
        out.put_u32(p.packed);
    }
}

/// Writes a port table, without a trace context or sizes.
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) fn encode_table(ports: &[PortEntry], out: &mut impl BufMut) {
    encode_head(ports, None, None, None, out);
}

/// Splits the head off the front of a first chunk.
/// (`chunk` is a `Bytes` or a `&[u8]`: one contiguous piece.)
#[inline]
pub(crate) fn decode_head(chunk: &mut impl Buf) -> Result<Head, WireError> {
    let bytes = chunk.chunk();
    if bytes.len() < 2 {
        return Err(WireError::TruncatedPortTable);
    }
    let word = u16::from_be_bytes([bytes[0], bytes[1]]);
    if word == 0 {
        // Most messages: no ports, no trace context, no blobs.
        chunk.advance(2);
        return Ok(Head::default());
    }
    let traced = word & TRACED != 0;
    let n = (word & !FLAGS) as usize;
    if bytes.len() < head_len(bytes) {
        return Err(WireError::TruncatedPortTable);
    }
    chunk.advance(2);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let port = chunk.get_u32();
        let end = match chunk.get_u8() {
            0 => End::Sender,
            1 => End::Receiver,
            b => return Err(WireError::BadPortEnd(b)),
        };
        ports.push(PortEntry { port, end });
    }
    let trace = traced.then(|| {
        let mut t = Box::new(TraceContext { trace_id: [0; 16], span_id: [0; 8], flags: 0 });
        chunk.copy_to_slice(&mut t.trace_id);
        chunk.copy_to_slice(&mut t.span_id);
        t.flags = chunk.get_u8();
        t
    });
    let sizes = (word & SIZED != 0).then(|| Sizes { len: chunk.get_u32(), attached: chunk.get_u32() });
    let packing = (word & PACKED != 0).then(|| Packing {
        algorithm: chunk.get_u8(),
        plain: chunk.get_u32(),
        packed: chunk.get_u32(),
    });
    Ok(Head { ports, trace, sizes, packing })
}

/// Splits the port table off the front of a first chunk, ignoring the
/// rest of the head.
#[cfg(test)]
fn decode_table(chunk: &mut bytes::Bytes) -> Result<Vec<PortEntry>, WireError> {
    decode_head(chunk).map(|head| head.ports)
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;

    #[test]
    fn roundtrip() {
        let ports = vec![PortEntry { port: 4, end: End::Sender }, PortEntry { port: 7, end: End::Receiver }];
        let mut buf = BytesMut::new();
        encode_table(&ports, &mut buf);
        buf.extend_from_slice(b"payload");
        let mut chunk = buf.freeze();
        assert_eq!(decode_table(&mut chunk).unwrap(), ports);
        assert_eq!(&chunk[..], b"payload");
    }

    #[test]
    fn a_trace_context_follows_the_table() {
        let ports = vec![PortEntry { port: 9, end: End::Receiver }];
        let trace = TraceContext { trace_id: [7; 16], span_id: [3; 8], flags: 1 };
        let mut buf = BytesMut::new();
        encode_head(&ports, Some(&trace), None, None, &mut buf);
        assert_eq!(buf.len(), table_len(1) + TRACE_LEN);
        assert_eq!(head_len(&buf), buf.len());
        assert_eq!(buf[0], 0x80, "bit 15 says a trace context follows");
        buf.extend_from_slice(b"payload");
        let mut chunk = buf.freeze();
        let want = Head { ports, trace: Some(Box::new(trace)), sizes: None, packing: None };
        assert_eq!(decode_head(&mut chunk).unwrap(), want);
        assert_eq!(&chunk[..], b"payload");
        // Without one, the head is the table alone.
        let mut plain = BytesMut::new();
        encode_head(&[], None, None, None, &mut plain);
        assert_eq!(&plain[..], &[0, 0]);
        assert_eq!(decode_head(&mut plain.freeze()).unwrap(), Head::default());
    }

    #[test]
    fn the_sizes_end_the_head() {
        let ports = vec![PortEntry { port: 9, end: End::Sender }];
        let trace = TraceContext { trace_id: [7; 16], span_id: [3; 8], flags: 1 };
        let sizes = Sizes { len: 0x0102_0304, attached: 0x0506_0708 };
        for trace in [None, Some(trace)] {
            let mut buf = BytesMut::new();
            encode_head(&ports, trace.as_ref(), Some(sizes), None, &mut buf);
            assert_eq!(buf.len(), encoded_head_len(1, trace.is_some(), true, false));
            assert_eq!(head_len(&buf), buf.len());
            assert_eq!(buf[0] & 0x40, 0x40, "bit 14 says sizes follow");
            assert_eq!(&buf[buf.len() - 8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
            buf.extend_from_slice(b"payload");
            let mut chunk = buf.freeze();
            let head = decode_head(&mut chunk).unwrap();
            assert_eq!(
                head,
                Head { ports: ports.clone(), trace: trace.map(Box::new), sizes: Some(sizes), packing: None }
            );
            assert_eq!(&chunk[..], b"payload");
        }
        // Cut inside the sizes: truncated, not misread.
        let cut: &[u8] = &[0x40, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(decode_head(&mut Bytes::from_static(cut)), Err(WireError::TruncatedPortTable));
    }

    #[test]
    fn the_packing_ends_the_head() {
        let ports = vec![PortEntry { port: 9, end: End::Sender }];
        let packing = Packing { algorithm: 2, plain: 0x0102_0304, packed: 0x0506_0708 };
        for sizes in [None, Some(Sizes { len: 77, attached: 5 })] {
            let mut buf = BytesMut::new();
            encode_head(&ports, None, sizes, Some(packing), &mut buf);
            assert_eq!(buf.len(), encoded_head_len(1, false, sizes.is_some(), true));
            assert_eq!(head_len(&buf), buf.len());
            assert_eq!(&buf[..2], &[0x20 | u8::from(sizes.is_some()) << 6, 1], "bit 13 says a packing follows");
            assert_eq!(&buf[buf.len() - 9..], &[2, 1, 2, 3, 4, 5, 6, 7, 8]);
            buf.extend_from_slice(b"packed");
            let mut chunk = buf.freeze();
            let head = decode_head(&mut chunk).unwrap();
            assert_eq!(head, Head { ports: ports.clone(), trace: None, sizes, packing: Some(packing) });
            assert_eq!(&chunk[..], b"packed");
        }
        // Cut inside the packing: truncated, not misread.
        let cut: &[u8] = &[0x20, 0, 1, 0, 0, 0, 9, 0, 0, 0];
        assert_eq!(decode_head(&mut Bytes::from_static(cut)), Err(WireError::TruncatedPortTable));
        assert_eq!(MAX_PORTS, 8191, "the count keeps 13 bits");
    }

    #[test]
    fn a_trace_context_cut_short_is_a_truncated_head() {
        let mut head = vec![0x80, 0];
        head.extend_from_slice(&[1; TRACE_LEN - 1]);
        assert_eq!(decode_head(&mut Bytes::from(head)), Err(WireError::TruncatedPortTable));
    }

    #[test]
    fn truncated_and_bad_entries() {
        assert_eq!(decode_table(&mut Bytes::from_static(&[0])), Err(WireError::TruncatedPortTable));
        assert_eq!(decode_table(&mut Bytes::from_static(&[0, 2, 0, 0, 0, 4, 0])), Err(WireError::TruncatedPortTable));
        assert_eq!(decode_table(&mut Bytes::from_static(&[0, 1, 0, 0, 0, 4, 9])), Err(WireError::BadPortEnd(9)));
    }
}
