//! Deterministic tests of the mux, after quinn-proto's `Pair` harness: two
//! muxes, a virtual clock, and a `drive` that moves bytes between them until
//! both go quiet. No runtime, no sleeping.
//!
//! One file per area, as in the mux itself; this file holds the harness.

mod credit;
mod limits;
mod ports;
mod recv;
mod reliability;
mod send;
mod timers;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::wire::{encode_table, End, Frame, FrameDecoder, HelloLimits, PortEntry, PortId, FLAG_FIRST, FLAG_LAST};

/// Explicit small limits; both sides use the same ones.
#[derive(Clone, Copy, Debug)]
struct Setup {
    port_window: u32,
    conn_window: u32,
    max_frame: u32,
    max_message: u32,
    max_ports: u32,
    chunk_size: u32,
    send_buffer: u32,
    conn_send_buffer: u32,
    ping_interval: Duration,
    idle_timeout: Duration,
    /// The compression algorithms accepted (the `Hello`'s byte).
    accepts: u8,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            port_window: 4096,
            conn_window: 16384,
            max_frame: 1024,
            max_message: 1 << 20,
            max_ports: 64,
            chunk_size: 256,
            send_buffer: 8192,
            conn_send_buffer: 16384,
            ping_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            accepts: crate::wire::ACCEPTS_LZ4 | crate::wire::ACCEPTS_ZSTD,
        }
    }
}

impl Setup {
    fn limits(&self) -> HelloLimits {
        HelloLimits {
            port_window: self.port_window,
            conn_window: self.conn_window,
            max_frame: self.max_frame,
            max_message: self.max_message,
            max_ports: self.max_ports,
        }
    }

    fn config(&self) -> MuxConfig {
        MuxConfig {
            local: self.limits(),
            peer: self.limits(),
            chunk_size: self.chunk_size,
            send_buffer: self.send_buffer,
            conn_send_buffer: self.conn_send_buffer,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            accepts: self.accepts,
        }
    }
}

const C: Side = Side::Client;
const S: Side = Side::Server;

/// Two muxes connected by a virtual, lossless, ordered link.
struct Pair {
    client: Mux,
    server: Mux,
    epoch: Instant,
    offset: Duration,
    /// Largest `budget` handed to `poll_transmit`.
    budget: usize,
    /// Messages partly popped by `recv_whole`, by (side, port).
    partial: std::collections::HashMap<(bool, PortId), Vec<u8>>,
}

/// A received, reassembled message.
#[derive(Debug, PartialEq, Eq)]
struct Msg {
    ports: Vec<PortEntry>,
    data: Vec<u8>,
}

impl Pair {
    fn new(setup: Setup) -> Pair {
        let epoch = Instant::now();
        Pair {
            client: Mux::new(Side::Client, setup.config(), epoch),
            server: Mux::new(Side::Server, setup.config(), epoch),
            epoch,
            offset: Duration::ZERO,
            budget: 64 * 1024,
            partial: Default::default(),
        }
    }

    fn now(&self) -> Instant {
        self.epoch + self.offset
    }

    fn advance(&mut self, d: Duration) {
        self.offset += d;
    }

    fn mux(&mut self, side: Side) -> &mut Mux {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// One `poll_transmit` of `side`, as contiguous bytes.
    fn transmit(&mut self, side: Side) -> BytesMut {
        let budget = self.budget;
        let mut t = Transmit::default();
        self.mux(side).poll_transmit(&mut t, budget);
        let mut bytes = BytesMut::with_capacity(t.len());
        for seg in &t.segments {
            bytes.extend_from_slice(seg);
        }
        assert_eq!(bytes.len(), t.len());
        bytes
    }

    /// Feeds `bytes` to `to`, which must accept them.
    fn deliver(&mut self, to: Side, mut bytes: BytesMut) {
        let now = self.now();
        if let Err(e) = self.mux(to).handle_input(&mut bytes, now) {
            panic!("{to:?} refused input: {e}");
        }
        assert!(bytes.is_empty(), "a transmit holds whole frames");
    }

    /// Moves one transmit each way; true if any byte moved.
    fn step(&mut self) -> bool {
        let c = self.transmit(C);
        let moved_c = !c.is_empty();
        if moved_c {
            self.deliver(S, c);
        }
        let s = self.transmit(S);
        let moved_s = !s.is_empty();
        if moved_s {
            self.deliver(C, s);
        }
        moved_c || moved_s
    }

    /// Moves bytes until both sides are quiet.
    /// Acknowledgements wait up to `ACK_DELAY` for other output; when only
    /// they are left, the clock moves on to their deadline.
    fn drive(&mut self) {
        for _ in 0..100_000 {
            if self.step() {
                continue;
            }
            let due = [self.client.ack_due, self.server.ack_due].into_iter().flatten().max();
            let Some(due) = due else { return };
            self.offset = self.offset.max(due - self.epoch);
            let now = self.now();
            assert_eq!(self.client.handle_timeout(now), Ok(Liveness::Alive), "client alive");
            assert_eq!(self.server.handle_timeout(now), Ok(Liveness::Alive), "server alive");
        }
        panic!("the pair never went quiet");
    }

    fn send(&mut self, side: Side, port: PortId, carried: &[PortEntry], payload: &[u8]) {
        if let Err(e) = self.mux(side).send(port, msg(carried, payload), SendLimit::Buffers) {
            panic!("send on {port} refused: {e:?}");
        }
    }

    /// Pops every chunk queued on `port` and reassembles whole messages.
    /// Panics on a partial message left over.
    fn recv(&mut self, side: Side, port: PortId) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut cur: Option<Msg> = None;
        while let Pop::Chunk(mut chunk) = self.mux(side).pop_chunk(port) {
            if chunk.first {
                assert!(cur.is_none(), "first chunk inside a message");
                cur = Some(Msg { ports: std::mem::take(&mut chunk.ports), data: Vec::new() });
            } else {
                assert!(chunk.ports.is_empty(), "only first chunks carry ports");
            }
            let last = chunk.last;
            let m = cur.as_mut().expect("continuation without a first chunk");
            m.data.extend(chunk.into_message());
            if last {
                out.push(cur.take().expect("just set"));
            }
        }
        assert!(cur.is_none(), "partial message left over");
        out
    }

    /// Pops whatever is queued on `port`, ignoring message boundaries.
    fn recv_partial(&mut self, side: Side, port: PortId) -> Vec<u8> {
        let mut out = Vec::new();
        while let Pop::Chunk(c) = self.mux(side).pop_chunk(port) {
            out.extend(c.into_message());
        }
        out
    }

    /// Pops every chunk of `port` and returns the messages completed; the
    /// start of an unfinished one is kept for the next call.
    fn recv_whole(&mut self, side: Side, port: PortId) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Pop::Chunk(c) = self.mux(side).pop_chunk(port) {
            let buf = self.partial.entry((side == S, port)).or_default();
            if c.first {
                assert!(buf.is_empty(), "first chunk inside a message");
            }
            let last = c.last;
            buf.extend(c.into_message());
            if last {
                out.push(std::mem::take(buf));
            }
        }
        out
    }

    fn open_ports(&self) -> (usize, usize) {
        (self.client.stats().open_ports, self.server.stats().open_ports)
    }

    /// `from` allocates a port, keeps `kept`, and announces the other end on
    /// its root; `to` receives and claims it. Returns the port id.
    fn open_and_claim(&mut self, from: Side, kept: End) -> PortId {
        let travelling = other_end(kept);
        let id = self.mux(from).open_port(travelling).expect("open_port");
        self.send(from, root_tx(from), &[PortEntry { port: id, end: travelling }], b"here");
        self.drive();
        let msgs = self.recv(peer(from), root_rx(peer(from)));
        assert_eq!(msgs, vec![Msg { ports: vec![PortEntry { port: id, end: travelling }], data: b"here".to_vec() }]);
        id
    }
}

/// The halves of a port, for tests that look inside one.
impl Port {
    fn tx(&self) -> &super::send::SendHalf {
        self.sender().expect("a port whose sender end this side holds")
    }

    fn rx(&self) -> &super::recv::RecvHalf {
        self.receiver().expect("a port whose receiver end this side holds")
    }
}

fn peer(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

fn other_end(end: End) -> End {
    match end {
        End::Sender => End::Receiver,
        End::Receiver => End::Sender,
    }
}

/// The root port `side` sends on.
fn root_tx(side: Side) -> PortId {
    match side {
        Side::Client => ROOT_CLIENT_TO_SERVER,
        Side::Server => ROOT_SERVER_TO_CLIENT,
    }
}

/// The root port `side` receives on.
fn root_rx(side: Side) -> PortId {
    root_tx(peer(side))
}

fn msg(carried: &[PortEntry], payload: &[u8]) -> OutMessage {
    let mut buf = BytesMut::new();
    encode_table(carried, &mut buf);
    buf.extend_from_slice(payload);
    OutMessage::new(buf.freeze(), carried.iter().map(|e| e.port).collect())
}

fn events(mux: &mut Mux) -> Vec<Event> {
    std::iter::from_fn(|| mux.poll_event()).collect()
}

fn frames(mut bytes: BytesMut) -> Vec<Frame> {
    let dec = FrameDecoder::new(u32::MAX);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut bytes).expect("our own frames decode") {
        out.push(f);
    }
    assert!(bytes.is_empty());
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn raw(frames: &[Frame]) -> BytesMut {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b
}

fn first_chunk(port: PortId, carried: &[PortEntry], payload: &[u8], last: bool) -> Frame {
    let mut b = BytesMut::new();
    encode_table(carried, &mut b);
    b.put_slice(payload);
    let flags = FLAG_FIRST | if last { FLAG_LAST } else { 0 };
    Frame::Data { port, flags, payload: b.freeze() }
}

fn assert_quiet_and_clean(pair: &Pair) {
    assert_eq!(pair.open_ports(), (2, 2), "only the roots remain");
    for mux in [&pair.client, &pair.server] {
        let st = mux.stats();
        assert_eq!(st.send_queued, 0);
        assert_eq!(st.recv_buffered, 0);
        assert_eq!(st.replay_bytes, 0);
        assert_eq!(mux.local_count, 0);
        assert_eq!(mux.peer_count, 0);
        assert!(mux.error().is_none());
    }
}
