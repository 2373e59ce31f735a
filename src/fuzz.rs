//! Entry points for fuzzers and property tests (not a stable API).
//!
//! Every function here takes arbitrary bytes and must never panic, hang or
//! allocate beyond the configured limits: bad input comes back as the error
//! text of the layer that refused it. Input is fed in pieces, the way a
//! transport delivers it, so "need more bytes" paths run as well.
//!
//! [`encode_frames`] and [`encode_hello`] build valid streams from a
//! structured description, so a property test can generate valid streams and
//! then mutate them to get past the first checks.
//!
//! [`gossip`] drives a cluster membership engine and checks rules of its own
//! as it goes (a bounded view, only the members a datagram names affected);
//! it panics when one breaks, so any panic there is a bug too.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::mux::{
    Mux, MuxConfig, OutMessage, Pop, SendLimit, Side, Transmit, ROOT_CLIENT_TO_SERVER, ROOT_SERVER_TO_CLIENT,
};
use crate::wire::{self, End, Frame, FrameDecoder, Hello, HelloLimits, PortEntry, TraceContext, FLAG_FIRST, FLAG_LAST};

/// Largest `Data` payload the fuzz decoders and the fuzz mux accept.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// Per-port window of the fuzz mux, both directions.
pub const PORT_WINDOW: u32 = 64 * 1024;
/// Connection window of the fuzz mux, both directions.
pub const CONN_WINDOW: u32 = 256 * 1024;
/// Largest message the fuzz mux accepts.
pub const MAX_MESSAGE: u32 = 1024 * 1024;
/// Most ports the fuzz mux lets the peer open.
pub const MAX_PORTS: u32 = 64;
/// Chunk size the fuzz mux cuts its own messages into.
pub const CHUNK_SIZE: u32 = 16 * 1024;
/// Credit each `Data` frame costs beyond its payload (the mux's rule, see
/// `docs/PROTOCOL.md`): a window of `w` bytes admits at most
/// `w / CHUNK_OVERHEAD` chunks, however small.
pub const CHUNK_OVERHEAD: u64 = crate::mux::CHUNK_OVERHEAD;
/// Size of the message the fuzz mux queues on its root sender port at start
/// (larger than [`PORT_WINDOW`], so sending it needs the peer's credit).
pub const OUTGOING_MESSAGE: usize = 96 * 1024;

/// Longest valid `Hello`: the fixed part and the largest authentication blob.
pub const MAX_HELLO_LEN: usize = wire::HELLO_FIXED_LEN + wire::MAX_AUTH_LEN;

/// Piece sizes the default entry points cut their input into, cyclically.
pub const DEFAULT_PIECES: &[usize] = &[1, 3, 10, 64, 2, 700, 5, 4096, 11];

/// A frame described by its fields, mirroring the wire's frame kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameSpec {
    /// A chunk of a message on `port`.
    Data {
        /// The port.
        port: u32,
        /// FIRST flag: the payload starts with the port table.
        first: bool,
        /// LAST flag: the chunk ends its message.
        last: bool,
        /// Port table, written only when `first` is set: (port, whether the
        /// sender end travelled).
        ports: Vec<(u32, bool)>,
        /// Trace context after the table, written only when `first` is set
        /// (the table's count then has its top bit set).
        trace: Option<TraceContext>,
        /// The message's length after its head and the bytes of blobs at
        /// its end, written only when `first` is set (bit 14 of the count
        /// then set).
        sizes: Option<(u32, u32)>,
        /// How the message is compressed: algorithm id (1 LZ4, 2 Zstd),
        /// bytes once unpacked, bytes packed; written only when `first` is
        /// set (bit 13 of the count then set).
        packing: Option<(u8, u32, u32)>,
        /// Payload after the port table.
        payload: Vec<u8>,
    },
    /// Credit grant (port 0: the connection).
    Credit {
        /// The port, 0 for the connection.
        port: u32,
        /// Bytes granted.
        bytes: u32,
    },
    /// The sender end finished.
    Fin {
        /// The port.
        port: u32,
    },
    /// The receiver end is gone.
    Stop {
        /// The port.
        port: u32,
    },
    /// Cumulative acknowledgement of reliable frames.
    Ack {
        /// Reliable frames received.
        received: u64,
    },
    /// Liveness probe.
    Ping {
        /// Value echoed by the `Pong`.
        nonce: u64,
    },
    /// Answer to a probe.
    Pong {
        /// The probe's value.
        nonce: u64,
    },
    /// Connection close.
    GoAway {
        /// Close code.
        code: u32,
        /// Reason text (cut to 1024 bytes on encoding).
        reason: String,
    },
}

impl FrameSpec {
    /// Whether the frame counts in the session sequence (Data, Credit, Fin, Stop).
    pub fn is_reliable(&self) -> bool {
        matches!(
            self,
            FrameSpec::Data { .. } | FrameSpec::Credit { .. } | FrameSpec::Fin { .. } | FrameSpec::Stop { .. }
        )
    }

    fn to_frame(&self) -> Frame {
        match self {
            FrameSpec::Data { port, first, last, ports, trace, sizes, packing, payload } => {
                let mut bytes = BytesMut::new();
                if *first {
                    let table: Vec<PortEntry> = ports
                        .iter()
                        .map(|&(port, sender)| PortEntry {
                            port,
                            end: if sender { End::Sender } else { End::Receiver },
                        })
                        .collect();
                    let sizes = sizes.map(|(len, attached)| wire::Sizes { len, attached });
                    let packing = packing.map(|(algorithm, plain, packed)| wire::Packing { algorithm, plain, packed });
                    wire::encode_head(&table, trace.as_ref(), sizes, packing, &mut bytes);
                }
                bytes.extend_from_slice(payload);
                let flags = if *first { FLAG_FIRST } else { 0 } | if *last { FLAG_LAST } else { 0 };
                Frame::Data { port: *port, flags, payload: bytes.freeze() }
            }
            FrameSpec::Credit { port, bytes } => Frame::Credit { port: *port, bytes: *bytes },
            FrameSpec::Fin { port } => Frame::Fin { port: *port },
            FrameSpec::Stop { port } => Frame::Stop { port: *port },
            FrameSpec::Ack { received } => Frame::Ack { received: *received },
            FrameSpec::Ping { nonce } => Frame::Ping { nonce: *nonce },
            FrameSpec::Pong { nonce } => Frame::Pong { nonce: *nonce },
            FrameSpec::GoAway { code, reason } => Frame::GoAway { code: *code, reason: reason.clone() },
        }
    }

    fn from_frame(frame: Frame) -> Result<FrameSpec, String> {
        Ok(match frame {
            Frame::Data { port, flags, mut payload } => {
                let first = flags & FLAG_FIRST != 0;
                let (ports, trace, sizes, packing) = if first {
                    let head = wire::decode_head(&mut payload).map_err(|e| e.to_string())?;
                    let ports = head.ports.into_iter().map(|e| (e.port, e.end == End::Sender)).collect();
                    let packing = head.packing.map(|p| (p.algorithm, p.plain, p.packed));
                    (ports, head.trace.map(|t| *t), head.sizes.map(|s| (s.len, s.attached)), packing)
                } else {
                    (Vec::new(), None, None, None)
                };
                let last = flags & FLAG_LAST != 0;
                FrameSpec::Data { port, first, last, ports, trace, sizes, packing, payload: payload.to_vec() }
            }
            Frame::Credit { port, bytes } => FrameSpec::Credit { port, bytes },
            Frame::Fin { port } => FrameSpec::Fin { port },
            Frame::Stop { port } => FrameSpec::Stop { port },
            Frame::Ack { received } => FrameSpec::Ack { received },
            Frame::Ping { nonce } => FrameSpec::Ping { nonce },
            Frame::Pong { nonce } => FrameSpec::Pong { nonce },
            Frame::GoAway { code, reason } => FrameSpec::GoAway { code, reason },
        })
    }
}

/// Encodes `frames` as one valid byte stream (valid as far as the frame
/// decoder goes; whether the mux accepts it depends on the sequence).
pub fn encode_frames(frames: &[FrameSpec]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        f.to_frame().encode(&mut out);
    }
    out.to_vec()
}

/// Frames decoded from a stream, and how many bytes of an incomplete frame were left over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedFrames {
    /// The complete frames, in order.
    pub frames: Vec<FrameSpec>,
    /// Bytes at the end that do not yet make a complete frame.
    pub leftover: usize,
}

/// Splits `data` into pieces of the sizes in `pieces`, cyclically (0 counts as 1).
fn split<'a>(data: &'a [u8], pieces: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut sizes = pieces.iter().copied().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes.next().unwrap_or(usize::MAX).max(1).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

/// Runs the frame decoder (limit [`MAX_PAYLOAD`]) over `data` fed in [`DEFAULT_PIECES`]; the frame count or the error.
pub fn decode_frames(data: &[u8]) -> Result<usize, String> {
    decode_frame_specs(data, DEFAULT_PIECES).map(|d| d.frames.len())
}

/// Runs the frame decoder over `data` fed in pieces of the sizes in `pieces`
/// (cyclically), parsing the port table of first chunks too.
pub fn decode_frame_specs(data: &[u8], pieces: &[usize]) -> Result<DecodedFrames, String> {
    let decoder = FrameDecoder::new(MAX_PAYLOAD);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in split(data, pieces) {
        buf.extend_from_slice(piece);
        while let Some(frame) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            frames.push(FrameSpec::from_frame(frame)?);
        }
    }
    Ok(DecodedFrames { frames, leftover: buf.len() })
}

/// The fields of a handshake `Hello` (magic and version are always this build's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelloSpec {
    /// Node id (uuid bytes).
    pub node_id: [u8; 16],
    /// Codec id.
    pub codec: u8,
    /// Compression algorithms accepted (bit 0 LZ4, bit 1 Zstd).
    pub accepts: u8,
    /// Session to resume (all zero: a new one).
    pub session_id: [u8; 16],
    /// Resume position.
    pub resume_received: u64,
    /// port_window, conn_window, max_frame, max_message, max_ports.
    pub limits: [u32; 5],
    /// Authentication blob (cut to 1024 bytes on encoding).
    pub auth: Vec<u8>,
}

/// Encodes a valid `Hello`.
pub fn encode_hello(spec: &HelloSpec) -> Vec<u8> {
    let [port_window, conn_window, max_frame, max_message, max_ports] = spec.limits;
    let hello = Hello {
        version: wire::VERSION,
        node_id: uuid::Uuid::from_bytes(spec.node_id),
        codec: spec.codec,
        accepts: spec.accepts,
        session_id: uuid::Uuid::from_bytes(spec.session_id),
        resume_received: spec.resume_received,
        resumable: false,
        limits: HelloLimits { port_window, conn_window, max_frame, max_message, max_ports },
        auth: spec.auth.clone(),
    };
    let mut out = BytesMut::new();
    hello.encode(&mut out);
    out.to_vec()
}

/// Runs the `Hello` decoder over `data` fed in [`DEFAULT_PIECES`]: the hello once complete, `None` if the data ends first, or the error.
pub fn decode_hello(data: &[u8]) -> Result<Option<HelloSpec>, String> {
    let mut buf = BytesMut::new();
    for piece in split(data, DEFAULT_PIECES) {
        buf.extend_from_slice(piece);
        if let Some(h) = Hello::decode(&mut buf).map_err(|e| e.to_string())? {
            return Ok(Some(spec_of(&h)));
        }
    }
    Ok(None)
}

/// The cookie the accepting side of [`handshake_input`] knows.
pub const HANDSHAKE_COOKIE: [u8; 32] = [0x42; 32];

/// Runs the accepting side's real handshake, configured with
/// [`HANDSHAKE_COOKIE`], on `data` as everything the dialer sends (then the
/// end of the stream): its `Hello`, and the proof of the cookie after the
/// acceptor's answer. The dialer's hello on success (only possible with a
/// proof made for that very answer, so in practice never), else the error
/// text: a refused hello, an authentication mismatch or failure, or the end
/// of the stream.
pub fn handshake_input(data: &[u8]) -> Result<HelloSpec, String> {
    use tokio::io::AsyncWriteExt;
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    }
    let cfg = crate::Config { cookie: Some(crate::Cookie::new(HANDSHAKE_COOKIE)), ..crate::Config::default() };
    RUNTIME.with(|rt| {
        rt.block_on(async {
            // Room for all of it, so that feeding never waits on the reader.
            let (mut dialer, mut acceptor) = tokio::io::duplex(data.len() + 4096);
            dialer.write_all(data).await.map_err(|e| e.to_string())?;
            dialer.shutdown().await.map_err(|e| e.to_string())?;
            let peer =
                crate::conn::handshake::server(&mut acceptor, &cfg, uuid::Uuid::nil(), |_| (uuid::Uuid::nil(), 0))
                    .await
                    .map_err(|e| e.to_string())?;
            Ok(spec_of(&peer.hello))
        })
    })
}

fn spec_of(h: &Hello) -> HelloSpec {
    let l = h.limits;
    HelloSpec {
        node_id: *h.node_id.as_bytes(),
        codec: h.codec,
        accepts: h.accepts,
        session_id: *h.session_id.as_bytes(),
        resume_received: h.resume_received,
        limits: [l.port_window, l.conn_window, l.max_frame, l.max_message, l.max_ports],
        auth: h.auth.clone(),
    }
}

/// What a run of the fuzz mux did with its input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuxSummary {
    /// Reliable frames the mux received (its session sequence).
    pub reliable_received: u64,
    /// Chunks popped from the root receiving port.
    pub chunks_popped: usize,
    /// Bytes the mux handed to the transport.
    pub transmitted: usize,
    /// Ports open at the end, root ports included.
    pub open_ports: usize,
    /// Largest number of received bytes buffered unread at any point.
    pub peak_recv_buffered: usize,
}

fn limits() -> HelloLimits {
    HelloLimits {
        port_window: PORT_WINDOW,
        conn_window: CONN_WINDOW,
        max_frame: MAX_PAYLOAD,
        max_message: MAX_MESSAGE,
        max_ports: MAX_PORTS,
    }
}

/// Feeds `data` to a server-side mux in [`DEFAULT_PIECES`], reading the root port between pieces; the summary or the `MuxError` text.
pub fn mux_input(data: &[u8]) -> Result<MuxSummary, String> {
    mux_input_with(data, DEFAULT_PIECES, true)
}

/// The state a fuzz run starts from: a server mux (the input plays the
/// client) with small limits, which has already queued a message on its root
/// sender port 3 announcing two ports it opened (5: the client will send on
/// it; 7: the server sends on it and has queued a message there).
fn fuzz_mux(now: Instant) -> Mux {
    let cfg = MuxConfig {
        local: limits(),
        peer: limits(),
        chunk_size: CHUNK_SIZE,
        send_buffer: PORT_WINDOW,
        conn_send_buffer: CONN_WINDOW,
        ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        accepts: wire::ACCEPTS_LZ4 | wire::ACCEPTS_ZSTD,
    };
    let mut mux = Mux::new(Side::Server, cfg, now);
    let carry = |mux: &mut Mux, port, entries: &[PortEntry], len: usize| {
        let mut bytes = BytesMut::new();
        wire::encode_table(entries, &mut bytes);
        bytes.resize(wire::table_len(entries.len()) + len, 0x5a);
        let ports = entries.iter().map(|e| e.port).collect();
        // Cannot fail on a fresh mux: the port is open and the buffers empty.
        let _ = mux.send(port, OutMessage::new(bytes.freeze(), ports), SendLimit::Buffers);
    };
    let (Ok(recv), Ok(send)) = (mux.open_port(End::Sender), mux.open_port(End::Receiver)) else {
        return mux;
    };
    let table = [PortEntry { port: recv, end: End::Sender }, PortEntry { port: send, end: End::Receiver }];
    carry(&mut mux, ROOT_SERVER_TO_CLIENT, &table, OUTGOING_MESSAGE);
    carry(&mut mux, send, &[], 1000);
    mux
}

/// Like [`mux_input`] with the piece sizes given; with `read` false the
/// application never reads, so only the windows bound what is buffered.
pub fn mux_input_with(data: &[u8], pieces: &[usize], read: bool) -> Result<MuxSummary, String> {
    let now = Instant::now();
    let mut mux = fuzz_mux(now);
    let mut summary = MuxSummary::default();
    let mut buf = BytesMut::new();
    let mut out = Transmit::default();
    let mut step = |mux: &mut Mux, summary: &mut MuxSummary| {
        summary.peak_recv_buffered = summary.peak_recv_buffered.max(mux.stats().recv_buffered);
        if read {
            while mux.poll_event().is_some() {}
            while let Pop::Chunk(chunk) = mux.pop_chunk(ROOT_CLIENT_TO_SERVER) {
                summary.chunks_popped += 1;
                // Nobody will claim the ports a message carried.
                mux.discard_ports(&chunk.ports);
            }
        }
        mux.poll_transmit(&mut out, 64 * 1024);
        summary.transmitted += out.len();
        out.advance(out.len());
    };
    step(&mut mux, &mut summary);
    for piece in split(data, pieces) {
        buf.extend_from_slice(piece);
        mux.handle_input(&mut buf, now).map_err(|e| e.to_string())?;
        summary.reliable_received = mux.stats().received_seq;
        step(&mut mux, &mut summary);
    }
    summary.open_ports = mux.stats().open_ports;
    Ok(summary)
}

/// Most members the view of [`gossip`]'s engine may hold (small, so that
/// making room is exercised).
pub const GOSSIP_MAX_MEMBERS: usize = crate::cluster::tests::hostile::FUZZ_MAX_MEMBERS;

/// What a run of [`gossip`] did with its input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipSummary {
    /// Datagrams handed to the engine.
    pub datagrams: usize,
    /// Those that passed the envelope (sealed with the cluster cookie).
    pub opened: usize,
    /// Timers fired.
    pub timers_fired: usize,
    /// Cluster events the engine reported.
    pub events: usize,
    /// Most members its view held at any point (at most [`GOSSIP_MAX_MEMBERS`]).
    pub peak_members: usize,
    /// Most members the gossip engine (foca) tracked, live and down.
    pub peak_tracked: usize,
}

/// Runs a cluster membership engine (cookie fixed, [`GOSSIP_MAX_MEMBERS`],
/// four members known from the start) over `data`, read as a script of
/// steps: an opcode byte, a length (two bytes, little-endian), and that
/// many bytes of body ([`gossip_step`] writes one):
///
/// - `op % 4 == 0`: the body is a datagram, handed over as received (it
///   must fail the envelope and change nothing);
/// - `1`: the body is a gossip payload, sealed with the cookie first, so
///   that it reaches the engine's decoder;
/// - `2`: the engine's earliest timer, and those due with it, fire;
/// - `3`: the body describes a payload (sender, message, destination,
///   updates, each picked by a byte from known members, their restarted or
///   rejoined or leaving selves, the engine itself, and strangers), which is
///   encoded and sealed: the fuzzer reaches the membership logic at once.
///
/// Panics (which is what a fuzzer reports) if the engine panics, if its view
/// holds more than [`GOSSIP_MAX_MEMBERS`], if a datagram without the cookie
/// changes anything, if a sealed one changes a member it does not name
/// (unless it made the engine rejoin), or if the events of the run do not
/// replay, member by member, to the engine's final view.
pub fn gossip(data: &[u8]) -> GossipSummary {
    let s = crate::cluster::tests::hostile::run(data);
    GossipSummary {
        datagrams: s.datagrams,
        opened: s.opened,
        timers_fired: s.timers_fired,
        events: s.events,
        peak_members: s.peak_members,
        peak_tracked: s.peak_tracked,
    }
}

/// One step of a [`gossip`] script (the body is cut to 65,535 bytes).
pub fn gossip_step(op: u8, body: &[u8]) -> Vec<u8> {
    let body = &body[..body.len().min(u16::MAX as usize)];
    let mut step = vec![op];
    step.extend_from_slice(&(body.len() as u16).to_le_bytes());
    step.extend_from_slice(body);
    step
}
