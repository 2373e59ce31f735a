//! The port table that opens every message.
//!
//! The first `Data` chunk of a message starts with the ports the message
//! carries, so that the receiving mux knows them before any frame of those
//! ports can arrive, and can close them if the message is never read:
//!
//! ```text
//!  u16 count, then count × { u32 port, u8 end }     (big-endian)
//! ```
//!
//! `end` names which end of the port travelled inside the message: 0 the
//! sender end, 1 the receiver end. The whole table is inside the first chunk.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{PortId, WireError};

/// Bytes of one table entry.
pub(crate) const ENTRY_LEN: usize = 5;

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

/// Bytes the table of `n` ports takes.
pub(crate) fn table_len(n: usize) -> usize {
    2 + n * ENTRY_LEN
}

/// Writes a port table.
pub(crate) fn encode_table(ports: &[PortEntry], out: &mut BytesMut) {
    out.reserve(table_len(ports.len()));
    out.put_u16(ports.len() as u16);
    for p in ports {
        out.put_u32(p.port);
        out.put_u8(match p.end {
            End::Sender => 0,
            End::Receiver => 1,
        });
    }
}

/// Splits the port table off the front of a first chunk.
pub(crate) fn decode_table(chunk: &mut Bytes) -> Result<Vec<PortEntry>, WireError> {
    if chunk.len() < 2 {
        return Err(WireError::TruncatedPortTable);
    }
    let n = u16::from_be_bytes([chunk[0], chunk[1]]) as usize;
    if chunk.len() < table_len(n) {
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
    Ok(ports)
}

#[cfg(test)]
mod tests {
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
    fn truncated_and_bad_entries() {
        assert_eq!(decode_table(&mut Bytes::from_static(&[0])), Err(WireError::TruncatedPortTable));
        assert_eq!(decode_table(&mut Bytes::from_static(&[0, 2, 0, 0, 0, 4, 0])), Err(WireError::TruncatedPortTable));
        assert_eq!(decode_table(&mut Bytes::from_static(&[0, 1, 0, 0, 0, 4, 9])), Err(WireError::BadPortEnd(9)));
    }
}
