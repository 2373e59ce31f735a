//! [`Blob`]: bytes a message carries without copying them.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that a tether message carries out of line, without copying them.
///
/// A `Vec<u8>` or `serde_bytes::ByteBuf` field is copied into the encoded
/// message when it is sent and out of it when it is received. A `Blob`
/// field is not: its buffer goes to the connection as it is (the encoded
/// value only says where the blob lies), and on the receiving side a large
/// blob is a slice of the buffer its message was received in. A `Blob` is
/// the way to send large binary payloads (file contents, images, columns of
/// numbers) at the speed of the transport.
///
/// Outside a tether message (a `Blob` serialized with serde into JSON, say)
/// it is an ordinary byte string.
///
/// Cloning a `Blob` is cheap: it is a reference-counted [`Bytes`].
///
/// ```
/// use tether::Blob;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Frame {
///     seq: u64,
///     pixels: Blob,
/// }
///
/// let frame = Frame { seq: 1, pixels: Blob::from(vec![0u8; 1 << 20]) };
/// assert_eq!(frame.pixels.len(), 1 << 20);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blob(Bytes);

/// Blobs smaller than this are copied next to the message's other small
/// blobs as it is encoded: a chunk of their own would cost more than the
/// copy.
pub(crate) const BLOB_COPY_MAX: usize = 4096;

impl Blob {
    /// An empty blob.
    pub const fn new() -> Blob {
        Blob(Bytes::new())
    }

    /// A blob of static bytes, without allocating.
    pub const fn from_static(bytes: &'static [u8]) -> Blob {
        Blob(Bytes::from_static(bytes))
    }

    /// The blob's bytes as a [`Bytes`], without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The blob's bytes as a [`Bytes`].
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Blob {
    fn from(bytes: Bytes) -> Blob {
        Blob(bytes)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(bytes: Vec<u8>) -> Blob {
        Blob(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for Blob {
    fn from(bytes: &'static [u8]) -> Blob {
        Blob(Bytes::from_static(bytes))
    }
}

impl From<Blob> for Bytes {
    fn from(blob: Blob) -> Bytes {
        blob.0
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // In a tether message: where the blob lies among the message's
        // attached bytes.
        match super::attach_blob(&self.0) {
            Some(offset) => (offset, self.0.len() as u64).serialize(s),
            None => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        if super::decoding_blobs() {
            let (offset, len) = <(u64, u64)>::deserialize(d)?;
            super::attached_blob(offset, len).map(Blob)
        } else {
            Bytes::deserialize(d).map(Blob)
        }
    }
}
