//! Message compression: which algorithms a side accepts
//! ([`Compression`], announced in the handshake), the one a sender picks,
//! and packing and unpacking one message's body.
//!
//! A sender packs in `chan::encode`, on the task that sends; a receiver
//! unpacks in `chan::decode`, on the task that receives. The connection's
//! driver never touches a compressed byte, so one connection's compression
//! spreads over the cores its senders and receivers run on.

use std::cell::RefCell;

use bytes::Bytes;

use crate::codec::CodecError;
use crate::pool;
use crate::wire::{Packing, ACCEPTS_LZ4, ACCEPTS_ZSTD, PACKING_LEN};

/// A compression algorithm for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// LZ4's block format ([`lz4_flex`](https://docs.rs/lz4_flex)): fast
    /// on both sides (hundreds of MB/s to pack, GB/s to unpack), a modest
    /// ratio.
    Lz4,
    /// Zstandard ([`zstd`](https://docs.rs/zstd)), one frame per message at
    /// [`Compression::zstd_level`]: a better ratio than LZ4 for a few times
    /// its CPU.
    Zstd,
}

impl Algorithm {
    /// Its bit in the `Hello`'s compression byte, and its id in a packed
    /// message's head.
    fn bit(self) -> u8 {
        match self {
            Algorithm::Lz4 => ACCEPTS_LZ4,
            Algorithm::Zstd => ACCEPTS_ZSTD,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Lz4 => "LZ4",
            Algorithm::Zstd => "Zstd",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which compression a side accepts and uses on a connection
/// ([`Config::compression`](crate::Config::compression)). Off by default.
///
/// Each side announces in its handshake the algorithms it lists in
/// [`algorithms`](Compression::algorithms); those are what it accepts. A
/// side compresses what it sends with the first algorithm of its own list
/// that the peer announced, or not at all if there is none (so nothing is
/// compressed unless both sides turned compression on). The two directions
/// decide apart: with `[Lz4, Zstd]` on one side and `[Zstd, Lz4]` on the
/// other, each sends with its own first choice. The choice holds for the
/// whole session, resumes included.
///
/// A message is compressed only if its encoding (after its head: the
/// encoded value, and the small blobs copied with it) is at least
/// [`threshold`](Compression::threshold) bytes, and sent compressed only if
/// that made it smaller. Large [`Blob`](crate::Blob)s (4 KiB and more) are
/// sent as they are: they are not copied into the encoding, and most large
/// binary payloads (images, archives, media) are compressed already. So are
/// the pieces of a [`pipe`](crate::pipe) (64 KiB each).
///
/// # Why it is off by default
///
/// Compression trades CPU for bytes on the link, and the trade loses
/// where tether usually runs:
///
/// - Loopback and LAN links carry GB/s; LZ4 packs a few hundred MB/s and
///   Zstd less on one core, so a compressed stream is slower than a plain
///   one unless the link is the bottleneck (a WAN, a metered or shared
///   link).
/// - Most actor messages are a few dozen to a few hundred bytes, too small
///   to shrink; below the threshold compression costs one comparison, but
///   turning it on gains nothing for them.
/// - Bulk binary data is often compressed already (images, video,
///   archives) and does not shrink again.
///
/// Turn it on for large, redundant messages (text, JSON, logs, repetitive
/// records) over links slower than the compressor: `benches/channels.rs`
/// (`w3-json`) measures JSON over loopback with and without it.
///
/// # Example
///
/// ```
/// use tether::{Algorithm, Compression, Config, Connection};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cfg = Config::default();
/// cfg.compression = Compression::new([Algorithm::Lz4, Algorithm::Zstd]);
/// cfg.compression.threshold = 4096;
///
/// let (a, b) = tether::transport::memory(64 * 1024);
/// let (client, server) =
///     tokio::try_join!(Connection::connect(a, cfg.clone()), Connection::accept(b, cfg))?;
/// let (tx, _) = client.root::<String, ()>().unwrap();
/// let (_, mut rx) = server.root::<(), String>().unwrap();
/// let text = "tether ".repeat(10_000);
/// tx.send(text.clone()).await?;
/// assert_eq!(rx.recv().await?.unwrap(), text);
/// assert!(client.stats().bytes_out < 2_000, "70,000 bytes of text went as {}", client.stats().bytes_out);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// The algorithms this side accepts, and uses for what it sends, most
    /// preferred first. Default empty: compression off.
    pub algorithms: Vec<Algorithm>,
    /// Messages whose encoding is shorter than this many bytes are sent as
    /// they are. Default 1 KiB: shorter encodings rarely hold enough
    /// repetition to shrink by more than the few bytes the packed head
    /// costs, while every compressed message pays a fixed cost (a buffer,
    /// a compressor's setup, a copy); nearly every actor message is below
    /// it, and costs one comparison.
    pub threshold: u32,
    /// Zstd's compression level (its range, at most 22; negative levels are
    /// faster still). Default 1: zstd's fastest regular level; its default
    /// of 3 shrinks text a few percent more at about half the speed.
    pub zstd_level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::off()
    }
}

impl Compression {
    /// No compression: nothing accepted, nothing compressed (the default).
    pub fn off() -> Compression {
        Compression::new([])
    }

    /// Accepts and uses LZ4 only.
    pub fn lz4() -> Compression {
        Compression::new([Algorithm::Lz4])
    }

    /// Accepts and uses Zstd only.
    pub fn zstd() -> Compression {
        Compression::new([Algorithm::Zstd])
    }

    /// Accepts `algorithms` and uses the first the peer accepts, with the
    /// default threshold and Zstd level.
    pub fn new(algorithms: impl IntoIterator<Item = Algorithm>) -> Compression {
        Compression { algorithms: algorithms.into_iter().collect(), threshold: 1024, zstd_level: 1 }
    }

    /// The `Hello`'s compression byte: the algorithms accepted.
    pub(crate) fn accepts(&self) -> u8 {
        self.algorithms.iter().fold(0, |bits, a| bits | a.bit())
    }

    /// How this side packs what it sends to a peer that accepts `peer`
    /// (its `Hello`'s byte) and messages of at most `peer_max` bytes: with
    /// our most preferred algorithm the peer accepts, if any.
    pub(crate) fn packer(&self, peer: u8, peer_max: u32) -> Option<Packer> {
        let algorithm = *self.algorithms.iter().find(|a| peer & a.bit() != 0)?;
        Some(Packer { algorithm, threshold: self.threshold as usize, level: self.zstd_level, peer_max })
    }

    /// Whether the Zstd level is one zstd takes.
    pub(crate) fn level_is_valid(&self) -> bool {
        zstd::compression_level_range().contains(&self.zstd_level)
    }
}

/// How one side packs what it sends on one connection, agreed in the
/// handshake.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packer {
    pub(crate) algorithm: Algorithm,
    threshold: usize,
    level: i32,
    /// The peer's max message: a message larger than that once unpacked
    /// is sent plain, for the sender's size check to refuse.
    peer_max: u32,
}

thread_local! {
    /// This thread's Zstd contexts, kept between messages (making one costs
    /// more than packing a small message), with the level it was made for.
    static ZSTD_PACK: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static ZSTD_UNPACK: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

impl Packer {
    /// Whether a message whose packable part is `packable` bytes, and
    /// which is `total` bytes once unpacked, is worth trying.
    pub(crate) fn wants(&self, packable: usize, total: usize) -> bool {
        packable >= self.threshold && packable > PACKING_LEN && total <= self.peer_max as usize
    }

    /// Whether a message packed as `packing`, `unpacked_len` bytes once
    /// unpacked, can go on to this side's peer as it is.
    pub(crate) fn passes(&self, packing: Packing, unpacked_len: usize) -> bool {
        packing.algorithm == self.algorithm.bit() && unpacked_len <= self.peer_max as usize
    }

    /// Packs `input` into `out` from `at` on (growing `out` as needed; its
    /// length is left as it was, or larger): the packing and the bytes
    /// written, or `None` if the packed form would not be smaller, head
    /// included.
    pub(crate) fn pack(&self, input: &[u8], out: &mut Vec<u8>, at: usize) -> Option<Packing> {
        // Room for any output worth sending: whatever does not fit is not
        // smaller. LZ4 wants room for its worst case before it starts.
        let room = match self.algorithm {
            Algorithm::Lz4 => lz4_flex::block::get_maximum_output_size(input.len()),
            Algorithm::Zstd => input.len().saturating_sub(PACKING_LEN + 1),
        };
        if out.len() < at + room {
            out.resize(at + room, 0);
        }
        let dst = &mut out[at..at + room];
        let written = match self.algorithm {
            Algorithm::Lz4 => lz4_flex::block::compress_into(input, dst).ok()?,
            Algorithm::Zstd => ZSTD_PACK.with(|c| {
                let mut c = c.borrow_mut();
                if c.as_ref().is_none_or(|(level, _)| *level != self.level) {
                    *c = Some((self.level, zstd::bulk::Compressor::new(self.level).ok()?));
                }
                let (_, compressor) = c.as_mut()?;
                // Too small a destination is "not worth it", not a failure.
                compressor.compress_to_buffer(input, dst).ok()
            })?,
        };
        let packing = Packing { algorithm: self.algorithm.bit(), plain: input.len() as u32, packed: written as u32 };
        // Shrunk beyond what a receiver takes (a long run of one byte): plain.
        (written + PACKING_LEN < input.len() && packing.ratio_ok()).then_some(packing)
    }
}

/// The message `data` (what followed its head) unpacked as `packing`
/// says: the plain bytes, then the rest as sent. Allocates at most
/// `packing.plain` plus the rest (the receiver checked `plain` against its
/// max message before anything was buffered). Corrupt data, an unknown
/// algorithm, a packed part longer than the message, or plain bytes other
/// than the head said are a `Decompress` error.
pub(crate) fn unpack(data: &[u8], packing: Packing) -> Result<Bytes, CodecError> {
    let algorithm = match packing.algorithm {
        ACCEPTS_LZ4 => Algorithm::Lz4,
        ACCEPTS_ZSTD => Algorithm::Zstd,
        other => {
            return Err(CodecError::Decompress {
                algorithm: "unknown",
                message: format!("no algorithm has the id {other:#04x}"),
            })
        }
    };
    let fail = |message: String| CodecError::Decompress { algorithm: algorithm.name(), message };
    let (packed, plain) = (packing.packed as usize, packing.plain as usize);
    if !packing.ratio_ok() {
        // The mux refused such a head already; checked again here, where
        // the head's word alone decides what is allocated.
        return Err(fail(format!("{packed} packed bytes said to unpack to {plain}")));
    }
    let Some(rest) = data.get(packed..) else {
        return Err(fail(format!("a packed part of {packed} bytes in a message of {} bytes", data.len())));
    };
    let total = plain + rest.len();
    let mut out = pool::LARGE.take(total).unwrap_or_else(|| Vec::with_capacity(total));
    out.resize(plain, 0);
    let written = match algorithm {
        Algorithm::Lz4 => lz4_flex::block::decompress_into(&data[..packed], &mut out).map_err(|e| e.to_string()),
        Algorithm::Zstd => ZSTD_UNPACK.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
            }
            let decompressor = d.as_mut().expect("made above");
            decompressor.decompress_to_buffer(&data[..packed], &mut out[..]).map_err(|e| e.to_string())
        }),
    };
    let written = written.map_err(|e| fail(format!("{e} (the packed part of {packed} bytes)")))?;
    if written != plain {
        return Err(fail(format!("{written} bytes unpacked where the head said {plain}")));
    }
    out.extend_from_slice(rest);
    Ok(if out.capacity() > pool::MIN { pool::LARGE.bytes(out) } else { Bytes::from(out) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packer(algorithm: Algorithm) -> Packer {
        Packer { algorithm, threshold: 1024, level: 1, peer_max: u32::MAX }
    }

    /// Words in a pseudo-random order: text that shrinks a few times, as
    /// prose does, not hundreds of times as a repeated pattern would.
    fn text(n: usize) -> Vec<u8> {
        let words = ["actor ", "message ", "tether ", "remote ", "port ", "credit "];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        std::iter::from_fn(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some(words[(x % words.len() as u64) as usize])
        })
        .flat_map(str::bytes)
        .take(n)
        .collect()
    }

    #[test]
    fn each_algorithm_round_trips_behind_a_head_and_before_the_rest() {
        for algorithm in [Algorithm::Lz4, Algorithm::Zstd] {
            let input = text(100_000);
            let mut out = vec![9; 7];
            let packing = packer(algorithm).pack(&input, &mut out, 7).expect("text shrinks");
            assert_eq!(&out[..7], &[9; 7], "the room in front is left alone");
            assert!((packing.packed as usize) < input.len() / 2, "{algorithm}: {} bytes", packing.packed);
            let mut message = out[7..7 + packing.packed as usize].to_vec();
            message.extend_from_slice(b"blobs");
            let plain = unpack(&message, packing).unwrap();
            assert_eq!(&plain[..input.len()], &input[..]);
            assert_eq!(&plain[input.len()..], b"blobs");
        }
    }

    #[test]
    fn what_would_shrink_beyond_the_ratio_a_receiver_takes_goes_plain() {
        let zeros = vec![0u8; 1 << 20];
        for algorithm in [Algorithm::Lz4, Algorithm::Zstd] {
            let packed = packer(algorithm).pack(&zeros, &mut Vec::new(), 0);
            assert!(packed.is_none_or(|p| p.ratio_ok()), "{algorithm}: {packed:?}");
        }
        let bomb = Packing { algorithm: ACCEPTS_ZSTD, plain: 1 << 20, packed: 100 };
        let e = unpack(&[0; 100], bomb).unwrap_err();
        assert!(matches!(e, CodecError::Decompress { .. }), "{e}");
    }

    #[test]
    fn what_does_not_shrink_is_not_packed() {
        let mut noise = vec![0u8; 64 * 1024];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        for algorithm in [Algorithm::Lz4, Algorithm::Zstd] {
            assert_eq!(packer(algorithm).pack(&noise, &mut Vec::new(), 0), None, "{algorithm}");
        }
    }

    #[test]
    fn the_threshold_and_the_peers_limit_decide_what_is_tried() {
        let p = Packer { threshold: 1024, peer_max: 10_000, ..packer(Algorithm::Lz4) };
        assert!(!p.wants(1023, 1023));
        assert!(p.wants(1024, 10_000));
        assert!(!p.wants(5000, 10_001), "larger than the peer takes once unpacked");
    }

    #[test]
    fn each_side_uses_its_first_choice_the_peer_accepts() {
        let both = Compression::new([Algorithm::Zstd, Algorithm::Lz4]);
        assert_eq!(both.accepts(), ACCEPTS_LZ4 | ACCEPTS_ZSTD);
        assert_eq!(both.packer(ACCEPTS_LZ4 | ACCEPTS_ZSTD, 1).unwrap().algorithm, Algorithm::Zstd);
        assert_eq!(both.packer(ACCEPTS_LZ4, 1).unwrap().algorithm, Algorithm::Lz4);
        assert!(both.packer(0, 1).is_none(), "a peer that accepts none gets nothing compressed");
        assert!(Compression::off().packer(ACCEPTS_LZ4 | ACCEPTS_ZSTD, 1).is_none());
        assert_eq!(Compression::default(), Compression::off());
    }

    #[test]
    fn bad_packings_are_typed_errors() {
        let input = text(10_000);
        for algorithm in [Algorithm::Lz4, Algorithm::Zstd] {
            let mut out = Vec::new();
            let good = packer(algorithm).pack(&input, &mut out, 0).unwrap();
            let packed = &out[..good.packed as usize];
            let fails = |data: &[u8], p: Packing| {
                let e = unpack(data, p).unwrap_err();
                assert!(matches!(e, CodecError::Decompress { .. }), "{e}");
                e.to_string()
            };
            let short = fails(packed, Packing { plain: good.plain - 1, ..good });
            assert!(short.contains("decompressing"), "{short}");
            let long = fails(packed, Packing { plain: good.plain + 1, ..good });
            assert!(long.contains(&format!("where the head said {}", good.plain + 1)), "{long}");
            fails(packed, Packing { packed: good.packed + 1, ..good });
            fails(&packed[..packed.len() - 3], Packing { packed: good.packed - 3, ..good });
            let mut garbage = packed.to_vec();
            for b in garbage.iter_mut().skip(4).step_by(5) {
                *b ^= 0x5a;
            }
            unpack(&garbage, good).map(|b| assert_ne!(&b[..], &input[..])).unwrap_or(());
            fails(packed, Packing { algorithm: 3, ..good });
        }
    }
}
