//! Message codecs.
//!
//! Both sides of a connection encode messages with the same codec, agreed in
//! the handshake. [`Postcard`] is the default: compact and fast.
//! [`MessagePack`] (feature `msgpack`) writes structs as maps with field
//! names, so a field added with `#[serde(default)]` stays compatible with
//! peers built before it.

use std::cell::RefCell;
use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure to encode or decode a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A value of `type_name` could not be encoded.
    #[error("encoding a {type_name} failed: {message}")]
    Encode {
        /// The type being encoded.
        type_name: &'static str,
        /// What serde (or the serializer) said.
        message: String,
    },
    /// The bytes do not decode as a `type_name`.
    #[error("decoding a {type_name} failed: {message}")]
    Decode {
        /// The type expected.
        type_name: &'static str,
        /// What serde (or the deserializer) said.
        message: String,
    },
    /// A compressed message does not decompress to what its head says: its
    /// data is corrupt, or a length in its head lies (see
    /// [`Compression`](crate::Compression)).
    #[error("decompressing a message ({algorithm}) failed: {message}")]
    Decompress {
        /// The algorithm its head names ("LZ4", "Zstd", or "unknown").
        algorithm: &'static str,
        /// What the decompressor said, or which length did not fit.
        message: String,
    },
}

thread_local! {
    /// The text of the last error tether's own serde impls raised on this
    /// thread: postcard keeps no text of custom errors ("Serde Serialization
    /// Error"), so the codec reports this one instead.
    static RAISED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A serializer error with `msg`, whose text survives any codec.
pub(crate) fn ser_error<E: serde::ser::Error>(msg: impl Display) -> E {
    let text = msg.to_string();
    let e = E::custom(&text);
    RAISED.with(|r| *r.borrow_mut() = Some(text));
    e
}

/// A deserializer error with `msg`, whose text survives any codec.
pub(crate) fn de_error<E: serde::de::Error>(msg: impl Display) -> E {
    let text = msg.to_string();
    let e = E::custom(&text);
    RAISED.with(|r| *r.borrow_mut() = Some(text));
    e
}

/// Runs a codec, naming `T` and keeping the text of an error tether raised.
fn run<R, E: Display>(
    f: impl FnOnce() -> Result<R, E>,
    wrap: impl FnOnce(&'static str, String) -> CodecError,
    type_name: &'static str,
) -> Result<R, CodecError> {
    RAISED.with(|r| r.borrow_mut().take());
    f().map_err(|e| {
        let message = RAISED.with(|r| r.borrow_mut().take()).unwrap_or_else(|| e.to_string());
        wrap(type_name, message)
    })
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Postcard {}
    #[cfg(feature = "msgpack")]
    impl Sealed for super::MessagePack {}
}

/// A serde format for messages: one of those tether ships, chosen with
/// [`CodecKind`] in [`Config`](crate::Config) (sealed: both sides must know
/// the codec by its id).
pub trait Codec: sealed::Sealed {
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
        let f = || postcard::serialize_with_flavor(value, VecTail(out));
        run(f, |type_name, message| CodecError::Encode { type_name, message }, std::any::type_name::<T>())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let f = || postcard::from_bytes(bytes);
        run(f, |type_name, message| CodecError::Decode { type_name, message }, std::any::type_name::<T>())
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
        let f = || rmp_serde::encode::write_named(out, value);
        run(f, |type_name, message| CodecError::Encode { type_name, message }, std::any::type_name::<T>())
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
        let f = || rmp_serde::from_slice(bytes);
        run(f, |type_name, message| CodecError::Decode { type_name, message }, std::any::type_name::<T>())
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
    /// The name of the codec with handshake id `id`, for error messages.
    pub(crate) fn name_of(id: u8) -> &'static str {
        match id {
            1 => "postcard",
            2 => "msgpack",
            _ => "unknown",
        }
    }

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
