//! Codecs.
/// codec kind
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecKind {
    /// postcard
    Postcard,
}
