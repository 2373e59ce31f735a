//! The frame decoder on arbitrary bytes: once fed in the default piece sizes,
//! then again in piece sizes taken from the input's first bytes, so the
//! "need more bytes" paths run at every offset. Only a panic is a failure;
//! a refused stream comes back as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// How many leading bytes may describe piece sizes.
const MAX_PIECES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let _ = tether::fuzz::decode_frames(data);

    // First byte: how many piece sizes follow (0..=MAX_PIECES); each of those
    // bytes is a piece size (0 counts as 1). The rest is the stream.
    let Some((&n, rest)) = data.split_first() else { return };
    let n = (n as usize % (MAX_PIECES + 1)).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let pieces: Vec<usize> = sizes.iter().map(|&b| b as usize).collect();
    let pieces: &[usize] = if pieces.is_empty() { &[1] } else { &pieces };
    let _ = tether::fuzz::decode_frame_specs(stream, pieces);
});
