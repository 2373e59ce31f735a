//! Property tests of the decoders, through the entry points of `tether::fuzz`.
//!
//! What this file proves (for the inputs proptest draws, plus fixed hostile cases):
//! - arbitrary bytes never panic the frame decoder, the `Hello` decoder or the
//!   mux; they give a frame count / hello / summary, or a typed error's text;
//! - valid streams built by `encode_frames` decode back to exactly the frames
//!   they were built from, however the bytes are cut into pieces, and a
//!   truncated stream decodes to a prefix of them;
//! - a valid client stream is accepted by the mux, which counts and delivers
//!   every frame of it;
//! - valid streams with bytes flipped, cut, inserted or spliced never panic;
//! - headers claiming huge lengths never make a single allocation larger than
//!   twice the largest frame payload (a counting global allocator watches), and
//!   a mux whose application stops reading buffers no more than its windows
//!   (counted in credit), however many (empty) chunks it is sent; the message
//!   it reassembles meanwhile is bounded by the message limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use tether::fuzz::{
    decode_frame_specs, decode_frames, decode_hello, encode_frames, encode_hello, gossip, gossip_step, handshake_input,
    mux_input, mux_input_with, FrameSpec, HelloSpec, CHUNK_OVERHEAD, DEFAULT_PIECES, GOSSIP_MAX_MEMBERS, MAX_HELLO_LEN,
    MAX_MESSAGE, MAX_PAYLOAD, PORT_WINDOW,
};
use tether::trace::TraceContext;

// ----- a global allocator that measures -----------------------------------

/// Wraps the system allocator; while the current thread has `TRACKING` set,
/// records the largest single request and the high-water mark of net bytes.
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(request: usize, delta: isize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            LARGEST.with(|l| l.set(l.get().max(request)));
            LIVE.with(|live| {
                let now = live.get() + delta;
                live.set(now);
                PEAK.with(|p| p.set(p.get().max(now)));
            });
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, -(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What `f` allocated on this thread.
#[derive(Debug)]
struct Measured {
    /// Largest single allocation request.
    largest: usize,
    /// Highest net growth of live bytes.
    peak: isize,
}

fn measure<R>(f: impl FnOnce() -> R) -> (R, Measured) {
    LARGEST.with(|l| l.set(0));
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, Measured { largest: LARGEST.with(Cell::get), peak: PEAK.with(Cell::get) })
}

/// No single allocation may exceed this while decoding hostile input.
const ALLOC_BOUND: usize = 2 * MAX_PAYLOAD as usize;

// ----- generators -----------------------------------------------------------

/// A plain `Data` chunk: no ports announced, no trace context, no sizes.
fn chunk(port: u32, first: bool, last: bool, payload: Vec<u8>) -> FrameSpec {
    FrameSpec::Data { port, first, last, ports: Vec::new(), trace: None, sizes: None, packing: None, payload }
}

const KIND_DATA: u8 = 1;
const KIND_GOAWAY: u8 = 8;
const FLAG_FIRST: u8 = 1;

fn header(kind: u8, flags: u8, port: u32, len: u32) -> Vec<u8> {
    let mut h = vec![kind, flags];
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn nonzero_port() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..16, any::<u32>().prop_map(|p| p.max(1))]
}

/// Any frame the decoder accepts.
fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    prop_oneof![
        4 => (
            nonzero_port(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec((any::<u32>(), any::<bool>()), 0..4),
            prop::option::of((any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())),
            prop::option::of((any::<u32>(), any::<u32>())),
            prop::option::of((any::<u8>(), any::<u32>(), any::<u32>())),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(port, first, last, ports, trace, sizes, packing, payload)| FrameSpec::Data {
                port,
                first,
                last,
                ports: if first { ports } else { Vec::new() },
                trace: trace
                    .filter(|_| first)
                    .map(|(trace_id, span_id, flags)| TraceContext { trace_id, span_id, flags }),
                sizes: sizes.filter(|_| first),
                packing: packing.filter(|_| first),
                payload,
            }),
        1 => (any::<u32>(), any::<u32>()).prop_map(|(port, bytes)| FrameSpec::Credit { port, bytes }),
        1 => nonzero_port().prop_map(|port| FrameSpec::Fin { port }),
        1 => nonzero_port().prop_map(|port| FrameSpec::Stop { port }),
        1 => any::<u64>().prop_map(|received| FrameSpec::Ack { received }),
        1 => any::<u64>().prop_map(|nonce| FrameSpec::Ping { nonce }),
        1 => any::<u64>().prop_map(|nonce| FrameSpec::Pong { nonce }),
        1 => (any::<u32>(), "\\PC{0,40}").prop_map(|(code, reason)| FrameSpec::GoAway { code, reason }),
    ]
}

fn hello_spec() -> impl Strategy<Value = HelloSpec> {
    (
        any::<[u8; 16]>(),
        any::<u8>(),
        0u8..4,
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<[u32; 5]>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(node_id, codec, accepts, session_id, resume_received, limits, auth)| HelloSpec {
            node_id,
            codec,
            accepts,
            session_id,
            resume_received,
            limits,
            auth,
        })
}

/// Piece sizes for feeding a stream.
fn pieces() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..16, 1usize..5000], 1..6)
}

/// One step of a well-behaved client talking to the fuzz mux (a server).
#[derive(Clone, Debug)]
enum ClientOp {
    /// A message on the root port 2 (or on port 5, which the server opened
    /// for the client to send on), cut into chunks, announcing `announce`
    /// fresh client ports.
    Message {
        on_root: bool,
        chunks: Vec<Vec<u8>>,
        announce: Vec<bool>,
    },
    /// Credit for the connection (port 0) or a port the server sends on (3, 7).
    Credit {
        port: u32,
        bytes: u32,
    },
    Ping(u64),
    Pong(u64),
    /// Acknowledges nothing, which is always true.
    AckNothing,
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        4 => (
            prop::bool::weighted(0.8),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..4),
            prop::collection::vec(any::<bool>(), 0..3),
        )
            .prop_map(|(on_root, chunks, announce)| ClientOp::Message { on_root, chunks, announce }),
        1 => (prop::sample::select(vec![0u32, 3, 7]), 0u32..1 << 20)
            .prop_map(|(port, bytes)| ClientOp::Credit { port, bytes }),
        1 => any::<u64>().prop_map(ClientOp::Ping),
        1 => any::<u64>().prop_map(ClientOp::Pong),
        1 => Just(ClientOp::AckNothing),
    ]
}

/// Turns client steps into frames the mux must accept: fresh even port ids
/// from 4, at most 60 of them (the mux allows 64 peer ports).
fn client_frames(ops: &[ClientOp]) -> Vec<FrameSpec> {
    let mut next_port = 4u32;
    let mut frames = Vec::new();
    for op in ops {
        match op {
            ClientOp::Message { on_root, chunks, announce } => {
                let port = if *on_root { 2 } else { 5 };
                let mut ports = Vec::new();
                for &sender in announce {
                    if next_port < 4 + 2 * 60 {
                        ports.push((next_port, sender));
                        next_port += 2;
                    }
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    frames.push(FrameSpec::Data {
                        port,
                        first: i == 0,
                        last: i + 1 == chunks.len(),
                        ports: if i == 0 { std::mem::take(&mut ports) } else { Vec::new() },
                        trace: None,
                        sizes: None,
                        packing: None,
                        payload: chunk.clone(),
                    });
                }
            }
            ClientOp::Credit { port, bytes } => frames.push(FrameSpec::Credit { port: *port, bytes: *bytes }),
            ClientOp::Ping(nonce) => frames.push(FrameSpec::Ping { nonce: *nonce }),
            ClientOp::Pong(nonce) => frames.push(FrameSpec::Pong { nonce: *nonce }),
            ClientOp::AckNothing => frames.push(FrameSpec::Ack { received: 0 }),
        }
    }
    frames
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    /// Copies a range of the stream to another place (duplicated or moved frames).
    Splice {
        from: usize,
        len: usize,
        to: usize,
    },
    /// Overwrites four bytes with a big-endian number (hits length and port fields).
    Word {
        at: usize,
        value: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => (any::<usize>(), 1usize..64, any::<usize>()).prop_map(|(from, len, to)| Mutation::Splice { from, len, to }),
        1 => (any::<usize>(), prop_oneof![Just(u32::MAX), Just(MAX_PAYLOAD), Just(MAX_PAYLOAD + 1), any::<u32>()])
            .prop_map(|(at, value)| Mutation::Word { at, value }),
    ]
}

fn mutate(data: &mut Vec<u8>, m: &Mutation) {
    let n = data.len();
    let pick = |at: usize| if n == 0 { 0 } else { at % n };
    match m {
        Mutation::Flip { at, mask } => {
            if n > 0 {
                data[pick(*at)] ^= mask;
            }
        }
        Mutation::Truncate { at } => data.truncate(pick(*at)),
        Mutation::Insert { at, bytes } => {
            let at = pick(*at);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = pick(*at);
            data.drain(at..(at + len).min(n));
        }
        Mutation::Splice { from, len, to } => {
            let from = pick(*from);
            let piece = data[from..(from + len).min(n)].to_vec();
            let to = pick(*to);
            data.splice(to..to, piece);
        }
        Mutation::Word { at, value } => {
            let at = pick(*at);
            for (i, b) in value.to_be_bytes().into_iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
    }
}

// ----- (a) random bytes -----------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_bytes_never_panic_the_frame_decoder(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frames(&data);
    }

    #[test]
    fn random_bytes_never_panic_the_hello_decoder(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_hello(&data);
        // Past the magic and version, so the rest of the decoder runs too.
        let mut full = b"TETHER\x00\x03".to_vec();
        full.extend_from_slice(&data);
        let _ = decode_hello(&full);
    }

    #[test]
    fn random_bytes_never_panic_the_mux(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = mux_input(&data);
    }

    /// Random frames with random fields: most pass the decoder and reach
    /// the mux's own checks.
    #[test]
    fn random_frames_never_panic_the_mux(frames in prop::collection::vec(frame_spec(), 0..24), read in any::<bool>()) {
        let data = encode_frames(&frames);
        let _ = mux_input_with(&data, DEFAULT_PIECES, read);
    }
}

// ----- (b) valid streams round-trip ----------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_frames_roundtrip(frames in prop::collection::vec(frame_spec(), 0..24), pieces in pieces()) {
        let data = encode_frames(&frames);
        let decoded = decode_frame_specs(&data, &pieces).unwrap();
        prop_assert_eq!(decoded.leftover, 0);
        prop_assert_eq!(decoded.frames, frames);
    }

    #[test]
    fn truncated_stream_decodes_to_a_prefix(frames in prop::collection::vec(frame_spec(), 1..12), cut in any::<prop::sample::Index>()) {
        let data = encode_frames(&frames);
        let cut = cut.index(data.len());
        let decoded = decode_frame_specs(&data[..cut], DEFAULT_PIECES).unwrap();
        prop_assert!(decoded.frames.len() < frames.len());
        prop_assert_eq!(&frames[..decoded.frames.len()], &decoded.frames[..]);
        let whole = encode_frames(&decoded.frames).len();
        prop_assert_eq!(whole + decoded.leftover, cut);
    }

    #[test]
    fn valid_hello_roundtrips(spec in hello_spec(), rest in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut data = encode_hello(&spec);
        for cut in [0, 1, 6, 8, 73, data.len() - 1] {
            prop_assert_eq!(decode_hello(&data[..cut]), Ok(None));
        }
        data.extend_from_slice(&rest);
        prop_assert_eq!(decode_hello(&data), Ok(Some(spec)));
    }

    /// The mux is reached: a well-behaved client stream is accepted whole,
    /// every reliable frame counted, every root-port chunk delivered.
    #[test]
    fn valid_client_stream_is_accepted(ops in prop::collection::vec(client_op(), 0..40), pieces in pieces()) {
        let frames = client_frames(&ops);
        let data = encode_frames(&frames);
        let summary = mux_input_with(&data, &pieces, true).unwrap();
        let reliable = frames.iter().filter(|f| f.is_reliable()).count() as u64;
        let root_chunks = frames.iter().filter(|f| matches!(f, FrameSpec::Data { port: 2, .. })).count();
        prop_assert_eq!(summary.reliable_received, reliable);
        prop_assert_eq!(summary.chunks_popped, root_chunks);
        prop_assert!(summary.transmitted > 0);
    }
}

// ----- (c) mutated valid streams ------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn mutated_frames_never_panic(
        frames in prop::collection::vec(frame_spec(), 1..16),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut data = encode_frames(&frames);
        for m in &mutations {
            mutate(&mut data, m);
        }
        let _ = decode_frames(&data);
        let _ = mux_input(&data);
    }

    #[test]
    fn mutated_client_stream_never_panics(
        ops in prop::collection::vec(client_op(), 1..24),
        mutations in prop::collection::vec(mutation(), 1..5),
        read in any::<bool>(),
    ) {
        let mut data = encode_frames(&client_frames(&ops));
        for m in &mutations {
            mutate(&mut data, m);
        }
        let _ = mux_input_with(&data, DEFAULT_PIECES, read);
    }

    #[test]
    fn mutated_hello_never_panics(spec in hello_spec(), mutations in prop::collection::vec(mutation(), 1..5)) {
        let mut data = encode_hello(&spec);
        for m in &mutations {
            mutate(&mut data, m);
        }
        let _ = decode_hello(&data);
    }

    /// The whole accepting handshake, cookie proofs included, on a valid
    /// hello offering a cookie, followed by a made-up proof, then mutated:
    /// it refuses with an error's text and never panics or succeeds.
    #[test]
    fn hostile_dialers_never_pass_the_cookie_handshake(
        nonce in any::<[u8; 32]>(),
        proof in prop::collection::vec(any::<u8>(), 0..48),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let mut data = encode_hello(&cookie_hello(nonce));
        data.extend_from_slice(&proof);
        for m in &mutations {
            mutate(&mut data, m);
        }
        prop_assert!(handshake_input(&data).is_err());
    }
}

/// A hello the handshake entry point takes up to the proof: its codec and
/// limits, offering a cookie with `nonce`.
fn cookie_hello(nonce: [u8; 32]) -> HelloSpec {
    let mut auth = vec![1u8];
    auth.extend_from_slice(&nonce);
    HelloSpec { codec: 1, limits: [256 * 1024, 16 << 20, 1 << 20, 128 << 20, 16384], auth, ..HelloSpec::default() }
}

#[test]
fn the_cookie_handshake_refuses_each_way_in_by_its_name() {
    let hello = encode_hello(&cookie_hello([9; 32]));
    let with_proof = [&hello[..], &[0u8; 32]].concat();
    assert_eq!(handshake_input(&with_proof).unwrap_err(), "authentication failed: the peer does not know our cookie");
    assert_eq!(handshake_input(&hello).unwrap_err(), "peer closed the transport during the handshake");
    let no_offer = encode_hello(&HelloSpec { auth: Vec::new(), ..cookie_hello([0; 32]) });
    assert_eq!(handshake_input(&no_offer).unwrap_err(), "authentication mismatch: ours cookie, theirs none");
    let bad_offer = encode_hello(&HelloSpec { auth: vec![7; 33], ..cookie_hello([0; 32]) });
    assert_eq!(handshake_input(&bad_offer).unwrap_err(), "authentication mismatch: ours cookie, theirs unknown");
}

// ----- (d) no allocation beyond the limits ----------------------------------

/// Fixed hostile inputs: (what, bytes).
fn hostile_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = vec![
        ("Data len u32::MAX", header(KIND_DATA, FLAG_FIRST, 2, u32::MAX)),
        ("Data len max+1", header(KIND_DATA, FLAG_FIRST, 2, MAX_PAYLOAD + 1)),
        ("Data len max, no payload", header(KIND_DATA, FLAG_FIRST, 2, MAX_PAYLOAD)),
        ("GoAway len u32::MAX", header(KIND_GOAWAY, 0, 0, u32::MAX)),
        ("GoAway len 1028, no payload", header(KIND_GOAWAY, 0, 0, 1028)),
        ("Credit len u32::MAX", header(2, 0, 0, u32::MAX)),
    ];
    // A first chunk whose port table claims 65535 entries but holds none.
    let mut short_table = header(KIND_DATA, FLAG_FIRST, 2, 2);
    short_table.extend_from_slice(&[0xff, 0xff]);
    cases.push(("port table count 0xffff, truncated", short_table));
    // The largest first chunk, all port table: as many entries as fit.
    let n = (MAX_PAYLOAD as usize - 2) / 5;
    let mut full_table = header(KIND_DATA, FLAG_FIRST, 2, (2 + 5 * n) as u32);
    full_table.extend_from_slice(&(n as u16).to_be_bytes());
    for i in 0..n as u32 {
        full_table.extend_from_slice(&(4 + 2 * i).to_be_bytes());
        full_table.push(0);
    }
    cases.push(("port table of a whole max frame", full_table));
    // Each hostile header again after a valid frame, so it arrives in an
    // already-allocated buffer.
    let ping = encode_frames(&[FrameSpec::Ping { nonce: 1 }]);
    let again: Vec<_> = cases.iter().map(|(_, c)| [ping.clone(), c.clone()].concat()).collect();
    cases.extend(again.into_iter().map(|c| ("after a Ping", c)));
    cases
}

#[test]
fn hostile_frame_headers_allocate_within_limits() {
    for (what, data) in hostile_frames() {
        let (_, m) = measure(|| decode_frames(&data));
        assert!(m.largest <= ALLOC_BOUND, "{what}: decoder allocated {} bytes at once", m.largest);
        let (res, m) = measure(|| mux_input(&data));
        assert!(m.largest <= ALLOC_BOUND, "{what}: mux allocated {} bytes at once ({res:?})", m.largest);
    }
}

#[test]
fn hostile_hello_allocates_within_limits() {
    for auth_len in [0xffffu16, 1025, 1024, 0x8000] {
        let mut data = encode_hello(&HelloSpec::default());
        data[72..74].copy_from_slice(&auth_len.to_be_bytes());
        let (res, m) = measure(|| decode_hello(&data));
        assert!(res.is_err() || res == Ok(None), "auth length {auth_len}: {res:?}");
        assert!(m.largest <= 2 * MAX_HELLO_LEN, "auth length {auth_len}: allocated {} bytes at once", m.largest);
    }
}

#[test]
fn hostile_messages_are_typed_errors() {
    // A message announcing more ports than the limit, and one larger than max_message.
    let too_many = encode_frames(&[FrameSpec::Data {
        port: 2,
        first: true,
        last: true,
        ports: (0..65).map(|i| (4 + 2 * i, true)).collect(),
        trace: None,
        sizes: None,
        packing: None,
        payload: Vec::new(),
    }]);
    assert!(mux_input(&too_many).unwrap_err().contains("limit of 64 open ports"));
    let middle = chunk(2, false, false, vec![0; 60_000]);
    let mut frames = vec![chunk(2, true, false, Vec::new())];
    frames.extend(std::iter::repeat_n(middle, (MAX_MESSAGE as usize / 60_000) + 1));
    let data = encode_frames(&frames);
    let (res, m) = measure(|| mux_input(&data));
    assert!(res.unwrap_err().contains("exceeds our max_message of"));
    // The mux reassembles the message as its chunks arrive: its buffer
    // grows with them, never past the message limit.
    assert!(m.largest <= MAX_MESSAGE as usize, "allocated {} bytes at once", m.largest);
    // A packed message said to unpack beyond the limit is refused from its
    // head, before anything is allocated for it; an algorithm nobody
    // announced (the fuzz mux accepts LZ4 and Zstd) likewise.
    let packed = |algorithm: u8, plain: u32, packed: u32| {
        let f = FrameSpec::Data {
            port: 2,
            first: true,
            last: false,
            ports: Vec::new(),
            trace: None,
            sizes: None,
            packing: Some((algorithm, plain, packed)),
            payload: vec![0; 10],
        };
        encode_frames(&[f])
    };
    // (Its packed part, 100,000 bytes, has yet to arrive: the head alone says.)
    let (res, m) = measure(|| mux_input(&packed(2, MAX_MESSAGE + 1, 100_000)));
    assert!(res.unwrap_err().contains("exceeds our max_message of"));
    assert!(m.largest <= ALLOC_BOUND, "allocated {} bytes at once", m.largest);
    for unknown in [0, 3, 4, 0xff] {
        let err = mux_input(&packed(unknown, 100, 10)).unwrap_err();
        assert!(err.contains("which we do not accept"), "{unknown}: {err}");
    }
    // Nor may the head claim more than 256 times its packed bytes: a few
    // bytes must not make the receiver allocate and fill megabytes.
    let (res, m) = measure(|| mux_input(&packed(1, 10 * 256 + 1, 10)));
    assert!(res.unwrap_err().contains("beyond 256 times"));
    assert!(m.largest <= ALLOC_BOUND, "allocated {} bytes at once", m.largest);
    assert!(mux_input(&packed(1, 10 * 256, 10)).is_ok(), "within the limits, read as sent");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any header with any length field, after any valid prefix, followed by
    /// a few bytes: no single allocation beyond twice the payload limit.
    #[test]
    fn any_header_allocates_within_limits(
        prefix in prop::collection::vec(frame_spec(), 0..4),
        kind in 0u8..10,
        flags in prop_oneof![0u8..4, any::<u8>()],
        port in prop_oneof![0u32..8, any::<u32>()],
        len in prop_oneof![Just(u32::MAX), Just(MAX_PAYLOAD), MAX_PAYLOAD - 16..MAX_PAYLOAD + 16, any::<u32>()],
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut data = encode_frames(&prefix);
        data.extend_from_slice(&header(kind, flags, port, len));
        data.extend_from_slice(&tail);
        let (_, m) = measure(|| decode_frames(&data));
        prop_assert!(m.largest <= ALLOC_BOUND, "decoder allocated {} bytes at once", m.largest);
        let (_, m) = measure(|| mux_input(&data));
        prop_assert!(m.largest <= ALLOC_BOUND, "mux allocated {} bytes at once", m.largest);
    }

    /// An application that never reads: whatever a client sends, the mux
    /// buffers at most one port window per port it reads from.
    #[test]
    fn stalled_reader_buffers_within_windows(ops in prop::collection::vec(client_op(), 0..40)) {
        let data = encode_frames(&client_frames(&ops));
        let res = mux_input_with(&data, DEFAULT_PIECES, false);
        if let Ok(summary) = res {
            prop_assert!(summary.peak_recv_buffered <= 2 * PORT_WINDOW as usize);
        }
    }
}

// ----- mux bugs found by this file (fixed; kept as regression tests) -------

/// Empty continuation chunks once took no credit, yet each one was queued: a
/// client could grow the server's memory without bound while the application
/// was not reading (10 bytes of input per ~72 bytes of queue). Every `Data`
/// frame now costs `len + CHUNK_OVERHEAD` of credit, so the port window
/// admits at most `PORT_WINDOW / CHUNK_OVERHEAD` chunks and the next one is
/// refused.
#[test]
fn empty_chunks_do_not_grow_memory_without_bound() {
    let first = chunk(2, true, false, Vec::new());
    let empty = chunk(2, false, false, Vec::new());
    let run = |empties: usize| {
        let mut frames = vec![first.clone()];
        frames.extend(std::iter::repeat_n(empty.clone(), empties));
        let data = encode_frames(&frames);
        measure(|| mux_input_with(&data, &[4096], false))
    };
    // The mux with one chunk queued: its own state, the read buffer, the
    // transmit of its outgoing message.
    let (res, base) = run(0);
    assert!(res.is_ok(), "{res:?}");
    // The first chunk costs 2 (its port table) + CHUNK_OVERHEAD, each empty
    // one CHUNK_OVERHEAD: after this many the port window is used up.
    let fit = ((PORT_WINDOW as u64 - 2 - CHUNK_OVERHEAD) / CHUNK_OVERHEAD) as usize;
    let (res, _) = run(fit);
    assert!(res.is_ok(), "{fit} empty chunks fit the window: {res:?}");
    let (res, m) = run(100_000);
    assert!(res.as_ref().is_err_and(|e| e.contains("exceeded its credit on port 2")), "{res:?}");
    // So at most PORT_WINDOW / CHUNK_OVERHEAD = 1024 chunks are ever queued.
    // Each takes one slot of the port's chunk queue (a VecDeque entry of
    // about 72 bytes; the deque may hold twice the slots in use), and an
    // empty payload allocates nothing. 128 bytes per slot bounds the queue
    // at 2 * 1024 * 128 = 256 KiB above the one-chunk run, however many
    // empty chunks the input holds (it held 100,000 here).
    let max_chunks = PORT_WINDOW as u64 / CHUNK_OVERHEAD;
    let bound = base.peak + (2 * max_chunks * 128) as isize;
    assert!(m.peak <= bound, "live memory grew by {} bytes (one-chunk run: {}, bound {bound})", m.peak, base.peak);
}

/// The server stops reading a port (Stop) while the client is in the middle
/// of a message on it; the client drops the rest of that message and answers
/// with Fin, as the protocol says. The server must accept that Fin.
#[test]
fn fin_after_stop_in_the_middle_of_a_message_is_accepted() {
    // The client announces port 4, whose receiver end travels to the server;
    // the fuzz mux discards it on reading, so it sends Stop(4).
    let announce = encode_frames(&[FrameSpec::Data {
        port: 2,
        first: true,
        last: true,
        ports: vec![(4, false)],
        trace: None,
        sizes: None,
        packing: None,
        payload: Vec::new(),
    }]);
    // Sent before the client saw the Stop: the first chunk of a message on 4.
    // Then, having seen the Stop: Fin, the rest of the message dropped.
    let rest = encode_frames(&[chunk(4, true, false, b"partial".to_vec()), FrameSpec::Fin { port: 4 }]);
    let data = [announce.clone(), rest].concat();
    let res = mux_input_with(&data, &[announce.len(), usize::MAX], true);
    assert!(res.is_ok(), "{res:?}");
}

// ----- gossip ---------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Scripts of raw, sealed and described datagrams and timer firings keep
    /// the rules `gossip` checks (it panics otherwise); the view stays within
    /// its bound.
    #[test]
    fn gossip_scripts_keep_the_engine_within_its_rules(
        steps in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..64)), 0..48),
    ) {
        let script: Vec<u8> = steps.iter().flat_map(|(op, body)| gossip_step(*op, body)).collect();
        let summary = gossip(&script);
        prop_assert!(summary.peak_members <= GOSSIP_MAX_MEMBERS, "{summary:?}");
    }

    /// Arbitrary bytes as a script: no panic.
    #[test]
    fn random_bytes_never_panic_the_gossip_engine(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        gossip(&data);
    }
}

/// Scripts that broke a rule once, kept fixed.
#[test]
fn gossip_cases_that_failed_once_pass() {
    // A known member's restarted self first heard of as already down: the
    // view reported the new id down without ever reporting it up.
    let down_restart = gossip_step(3, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 129, 0, 47]);
    // Told it was declared down, then a restarted member heard of again:
    // after the engine rejoined afresh the view reported a restart of an id
    // it had already replaced.
    let rejoin_then_restart = [
        gossip_step(3, &[145, 0, 54, 0, 0, 0]),
        gossip_step(3, &[2, 0, 55, 0, 0, 0, 97, 0, 176]),
        gossip_step(3, &[2, 0, 10, 0, 0, 0, 177, 0, 0]),
    ]
    .concat();
    for script in [down_restart, rejoin_then_restart] {
        let summary = gossip(&script);
        assert_eq!(summary.opened, summary.datagrams, "{summary:?}");
    }
}
