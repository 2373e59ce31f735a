//! Message codecs.
//!
//! Both sides of a connection encode messages with the same codec, agreed in
//! the handshake. [`Postcard`] is the default: compact and fast.
//! [`MessagePack`] (feature `msgpack`) writes structs as maps with field
//! names, so a field added with `#[serde(default)]` stays compatible with
//! peers built before it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure to encode or decode a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The bytes do not decode as the expected type.
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// A serde format for messages.
pub trait Codec {
    /// Identifier carried in the handshake.
    const ID: u8;
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;
    /// Decodes a whole message.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError>;
}

/// The postcard format (default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Codec for Postcard {
    const ID: u8 = 1;

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        postcard::serialize_with_flavor(value, VecTail(out)).map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        postcard::from_bytes(bytes).map_err(|e| CodecError::Decode(e.to_string()))
    }
}

/// Appends postcard's output to a `Vec`, a byte at a time with `push`
/// (postcard's own `Extend` flavor goes through `extend` for every byte,
/// which costs a quarter of a small message's encoding).
struct VecTail<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecTail<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// MessagePack with named fields (feature `msgpack`).
#[cfg(feature = "msgpack")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

#[cfg(feature = "msgpack")]
impl Codec for MessagePack {
    const ID: u8 = 2;

    fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        rmp_serde::encode::write_named(out, value).map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
    }
}

/// The codec a connection uses, chosen in [`Config`](crate::Config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecKind {
    /// [`Postcard`].
    #[default]
    Postcard,
    /// [`MessagePack`].
    #[cfg(feature = "msgpack")]
    MessagePack,
}

impl CodecKind {
    /// The identifier sent in the handshake.
    pub fn id(self) -> u8 {
        match self {
            CodecKind::Postcard => Postcard::ID,
            #[cfg(feature = "msgpack")]
            CodecKind::MessagePack => MessagePack::ID,
        }
    }

    pub(crate) fn encode<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            CodecKind::Postcard => Postcard::encode(value, out),
            #[cfg(feature = "msgpack")]
            CodecKind::MessagePack => MessagePack::encode(value, out),
        }
    }

    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        match self {
            CodecKind::Postcard => Postcard::decode(bytes),
            #[cfg(feature = "msgpack")]
            CodecKind::MessagePack => MessagePack::decode(bytes),
        }
    }
}
