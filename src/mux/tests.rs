//! Deterministic tests of the mux, after quinn-proto's `Pair` harness: two
//! muxes, a virtual clock, and a `drive` that moves bytes between them until
//! both go quiet. No runtime, no sleeping.

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
            self.client.handle_timeout(now).expect("client alive");
            self.server.handle_timeout(now).expect("server alive");
        }
        panic!("the pair never went quiet");
    }

    fn send(&mut self, side: Side, port: PortId, carried: &[PortEntry], payload: &[u8]) {
        if let Err(e) = self.mux(side).send(port, msg(carried, payload)) {
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
    OutMessage { bytes: buf.freeze(), ports: carried.iter().map(|e| e.port).collect() }
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

// ----- 1. root ports ----------------------------------------------------

#[test]
fn root_ports_carry_messages_both_ways() {
    let mut p = Pair::new(Setup::default());
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], b"hello server");
    p.send(S, ROOT_SERVER_TO_CLIENT, &[], b"hello client");
    p.drive();
    assert_eq!(p.recv(S, ROOT_CLIENT_TO_SERVER), vec![Msg { ports: vec![], data: b"hello server".to_vec() }]);
    assert_eq!(p.recv(C, ROOT_SERVER_TO_CLIENT), vec![Msg { ports: vec![], data: b"hello client".to_vec() }]);
    assert!(matches!(p.server.pop_chunk(ROOT_CLIENT_TO_SERVER), Pop::Empty));
    assert!(matches!(p.client.pop_chunk(ROOT_SERVER_TO_CLIENT), Pop::Empty));
    assert!(events(&mut p.server).contains(&Event::Readable(ROOT_CLIENT_TO_SERVER)));
    assert!(events(&mut p.client).contains(&Event::Readable(ROOT_SERVER_TO_CLIENT)));
    p.drive();
    assert_quiet_and_clean(&p);
}

// ----- 2. opening and closing ports ----------------------------------------

#[test]
fn client_allocated_port_carries_data_to_server() {
    let mut p = Pair::new(Setup::default());
    let id = p.open_and_claim(C, End::Sender);
    assert_eq!(id % 2, 0, "client ports are even");
    assert_eq!(p.open_ports(), (3, 3));
    p.send(C, id, &[], b"on the new port");
    p.drive();
    assert_eq!(p.recv(S, id), vec![Msg { ports: vec![], data: b"on the new port".to_vec() }]);
    p.client.close_end(id);
    p.server.close_end(id);
    p.drive();
    assert_quiet_and_clean(&p);
}

#[test]
fn server_allocated_port_carries_data_to_client() {
    let mut p = Pair::new(Setup::default());
    let id = p.open_and_claim(S, End::Sender);
    assert_eq!(id % 2, 1, "server ports are odd");
    p.send(S, id, &[], b"from the server");
    p.drive();
    assert_eq!(p.recv(C, id), vec![Msg { ports: vec![], data: b"from the server".to_vec() }]);
    // And a port whose receiver end the server keeps.
    let back = p.open_and_claim(S, End::Receiver);
    p.send(C, back, &[], b"reply");
    p.drive();
    assert_eq!(p.recv(S, back), vec![Msg { ports: vec![], data: b"reply".to_vec() }]);
    for id in [id, back] {
        p.client.close_end(id);
        p.server.close_end(id);
    }
    p.drive();
    assert_quiet_and_clean(&p);
}

/// Every order of dropping the two ends, for both allocators and both kept
/// ends, releases the port on both sides.
#[test]
fn closing_in_any_order_releases_the_port_on_both_sides() {
    for from in [C, S] {
        for kept in [End::Sender, End::Receiver] {
            for order in 0..4 {
                let mut p = Pair::new(Setup::default());
                let id = p.open_and_claim(from, kept);
                let (sender_side, receiver_side) =
                    if kept == End::Sender { (from, peer(from)) } else { (peer(from), from) };
                p.send(sender_side, id, &[], b"x");
                p.drive();
                let ctx = format!("from {from:?}, kept {kept:?}, order {order}");
                match order {
                    // Allocator first, delivered before the peer closes.
                    0 => {
                        p.mux(from).close_end(id);
                        p.drive();
                        p.mux(peer(from)).close_end(id);
                    }
                    // Claimer first.
                    1 => {
                        p.mux(peer(from)).close_end(id);
                        p.drive();
                        p.mux(from).close_end(id);
                    }
                    // Both at once: terminal frames cross on the wire.
                    2 => {
                        p.client.close_end(id);
                        p.server.close_end(id);
                    }
                    // Receiver closes while data is still unread.
                    _ => {
                        p.send(sender_side, id, &[], b"unread");
                        p.drive();
                        p.mux(receiver_side).close_end(id);
                        p.drive();
                        assert!(p.mux(sender_side).is_send_closed(id), "{ctx}");
                        p.mux(sender_side).close_end(id);
                    }
                }
                p.drive();
                assert_eq!(p.open_ports(), (2, 2), "{ctx}");
                assert_quiet_and_clean(&p);
            }
        }
    }
}

#[test]
fn ten_thousand_open_close_cycles_reuse_port_ids() {
    let mut p = Pair::new(Setup::default());
    let start = p.open_ports();
    let mut seen = std::collections::HashSet::new();
    for i in 0..10_000u32 {
        let from = if i % 2 == 0 { C } else { S };
        let kept = if i % 4 < 2 { End::Sender } else { End::Receiver };
        let id = p.open_and_claim(from, kept);
        seen.insert(id);
        let (tx, rx) = if kept == End::Sender { (from, peer(from)) } else { (peer(from), from) };
        p.send(tx, id, &[], &i.to_be_bytes());
        p.drive();
        assert_eq!(p.recv(rx, id), vec![Msg { ports: vec![], data: i.to_be_bytes().to_vec() }]);
        if i % 3 == 0 {
            p.mux(tx).close_end(id);
            p.drive();
            assert!(matches!(p.mux(rx).pop_chunk(id), Pop::Finished));
            p.mux(rx).close_end(id);
        } else {
            p.mux(rx).close_end(id);
            p.mux(tx).close_end(id);
        }
        p.drive();
        assert_eq!(p.open_ports(), start, "cycle {i}");
    }
    // One id per allocator is enough when each port dies before the next.
    assert_eq!(seen.len(), 2, "ids were reused: {seen:?}");
    assert!(p.client.next_local <= FIRST_ALLOCATED + 2 && p.server.next_local <= FIRST_ALLOCATED + 3);
    assert_quiet_and_clean(&p);
}

/// The handle of a port is dropped while the message announcing it is still
/// queued: the message still tells the peer, so the port must live until it
/// has left and then close like any other.
#[test]
fn closing_a_port_before_its_announcement_leaves() {
    for kept in [End::Sender, End::Receiver] {
        let mut p = Pair::new(Setup::default());
        let id = p.client.open_port(other_end(kept)).unwrap();
        p.send(C, ROOT_CLIENT_TO_SERVER, &[PortEntry { port: id, end: other_end(kept) }], b"m");
        p.client.close_end(id);
        // A second port, so that a wrongly freed id would be reused at once.
        let id2 = p.client.open_port(End::Sender).unwrap();
        assert_ne!(id, id2, "the announced port is still in use");
        p.send(C, ROOT_CLIENT_TO_SERVER, &[PortEntry { port: id2, end: End::Sender }], b"m2");
        p.drive();
        let msgs = p.recv(S, ROOT_CLIENT_TO_SERVER);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].ports, vec![PortEntry { port: id, end: other_end(kept) }]);
        // The server learns the client end is gone.
        match kept {
            End::Sender => assert!(matches!(p.server.pop_chunk(id), Pop::Finished)),
            End::Receiver => assert!(p.server.is_send_closed(id)),
        }
        p.server.close_end(id);
        p.server.close_end(id2);
        p.client.close_end(id2);
        p.drive();
        assert_quiet_and_clean(&p);
    }
}

/// A port opened and dropped without ever being put in a message is
/// forgotten at once, without a frame.
#[test]
fn a_port_never_announced_is_dropped_silently() {
    let mut p = Pair::new(Setup::default());
    let id = p.client.open_port(End::Receiver).unwrap();
    assert_eq!(p.client.stats().open_ports, 3);
    p.client.close_end(id);
    assert_eq!(p.client.stats().open_ports, 2);
    assert!(p.transmit(C).is_empty());
    assert_eq!(p.client.open_port(End::Receiver).unwrap(), id, "id reused");
}

// ----- 3. chunking and interleaving ---------------------------------------------

/// Pops every chunk of `port` and returns the last one, which carries the
/// whole message; panics if no message completed.
fn recv_long(p: &mut Pair, side: Side, port: PortId) -> Chunk {
    let mut whole = None;
    while let Pop::Chunk(c) = p.mux(side).pop_chunk(port) {
        if c.last {
            whole = Some(c);
        } else {
            assert!(c.data.is_empty() && c.tail.is_empty(), "a message of several chunks comes with its last chunk");
        }
    }
    whole.expect("a message completed")
}

#[test]
fn chunks_of_a_long_message_do_not_pin_the_read_buffer() {
    // Chunks this large are split off the read buffer without a copy; the
    // mux copies them into the message being reassembled at once, so the
    // transport's buffer is free for the next read even while none of the
    // message has been popped.
    let setup = Setup {
        chunk_size: 32 * 1024,
        max_frame: 64 * 1024,
        port_window: 1 << 20,
        conn_window: 1 << 22,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    p.budget = 1 << 20;
    let body = pattern(200_000, 3);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
    let mut buf = p.transmit(C);
    assert!(frames(buf.clone()).iter().filter(|f| matches!(f, Frame::Data { .. })).count() > 1, "several chunks");
    let cap = buf.capacity();
    let now = p.now();
    p.server.handle_input(&mut buf, now).expect("valid input");
    assert!(buf.is_empty());
    assert!(buf.try_reclaim(cap), "no received chunk still refers to the read buffer");
    assert_eq!(recv_long(&mut p, S, ROOT_CLIENT_TO_SERVER).into_message(), body);
}

#[test]
fn a_stream_of_long_messages_reuses_the_reassembly_buffer() {
    let setup = Setup { chunk_size: 1024, port_window: 1 << 16, conn_window: 1 << 18, ..Setup::default() };
    let mut p = Pair::new(setup);
    let mut buffers = Vec::new();
    for seed in 0..3 {
        let body = pattern(10_000, seed);
        p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
        p.drive();
        let last = recv_long(&mut p, S, ROOT_CLIENT_TO_SERVER);
        // The first message came in segments; the next ones fit the buffer
        // handed back.
        assert_eq!(last.tail.is_empty(), seed > 0, "message {seed} in one segment");
        let data = last.into_message();
        assert_eq!(data, body);
        buffers.push(data.as_ptr());
        // What a receiver does once it decoded the message.
        let buf = data.try_into_mut().expect("the only reference");
        let unkept = p.server.reclaim(ROOT_CLIENT_TO_SERVER, buf.into());
        assert_eq!(unkept.capacity(), 0, "nothing was kept before");
        assert_eq!(p.server.ports[&ROOT_CLIENT_TO_SERVER].spare.as_ptr(), buffers[seed as usize], "kept");
    }
    assert!(buffers.iter().all(|&b| b == buffers[0]), "each message reassembled in the one before's buffer");
}

#[test]
fn a_long_message_is_reassembled_in_segments_within_the_message_limit() {
    // A segment that fills up is never grown (that would copy the message
    // so far while the connection lock is held): the next one is as large
    // as all before it, and together they never exceed max_message.
    let max = 50_000;
    let setup =
        Setup { chunk_size: 1024, max_message: max, port_window: 1 << 17, conn_window: 1 << 18, ..Setup::default() };
    let mut p = Pair::new(setup);
    p.budget = 4096; // a few chunks per step
    let body = pattern(max as usize - 2, 5);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
    let mut largest = 0;
    while p.step() {
        let port = &p.server.ports[&ROOT_CLIENT_TO_SERVER];
        let reserved = port.asm.capacity() + port.asm_full.iter().map(Bytes::len).sum::<usize>();
        largest = largest.max(reserved);
    }
    assert!(largest > max as usize / 2, "the segments grew with the message: {largest}");
    assert!(largest <= max as usize, "{largest} bytes reserved for a message of at most {max}");
    let last = recv_long(&mut p, S, ROOT_CLIENT_TO_SERVER);
    let sizes: Vec<usize> = std::iter::once(&last.data).chain(&last.tail).map(Bytes::len).collect();
    assert!(sizes.len() > 2, "several segments: {sizes:?}");
    for (i, pair) in sizes.windows(2).enumerate() {
        if i + 2 < sizes.len() {
            let before: usize = sizes[..=i].iter().sum();
            assert_eq!(pair[1], before, "segment {} as large as all before it: {sizes:?}", i + 1);
        }
    }
    assert_eq!(last.into_message(), body);
}

#[test]
fn small_messages_overtake_a_large_one() {
    let setup = Setup {
        chunk_size: 64,
        port_window: 1 << 16,
        conn_window: 1 << 20,
        send_buffer: 1 << 16,
        conn_send_buffer: 1 << 20,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    p.budget = 150; // about two chunks per transmit
    let b = p.open_and_claim(C, End::Sender);
    let a = ROOT_CLIENT_TO_SERVER;
    let big = pattern(20_000, 7);
    p.send(C, a, &[], &big);
    for i in 0..5u8 {
        p.send(C, b, &[], &[i; 40]);
    }
    // Completion order as seen by the receiver, chunk by chunk.
    let mut done = Vec::new();
    let mut big_rx = Vec::new();
    let mut small_rx = Vec::new();
    loop {
        let moved = p.step();
        while let Pop::Chunk(c) = p.server.pop_chunk(a) {
            let last = c.last;
            big_rx.extend(c.into_message());
            if last {
                done.push("big");
            }
        }
        // Popped after the large one: a tie would count against the test.
        for m in p.recv(S, b) {
            small_rx.push(m);
            done.push("small");
        }
        if !moved {
            break;
        }
    }
    assert_eq!(done, vec!["small", "small", "small", "small", "small", "big"]);
    assert_eq!(big_rx, big, "the large message is reassembled exactly");
    assert_eq!(
        small_rx.iter().map(|m| m.data.clone()).collect::<Vec<_>>(),
        (0..5u8).map(|i| vec![i; 40]).collect::<Vec<_>>()
    );
    p.client.close_end(b);
    p.server.close_end(b);
    p.drive();
    assert_quiet_and_clean(&p);
}

#[test]
fn chunks_never_exceed_chunk_size_and_table_stays_in_first_chunk() {
    let setup = Setup { chunk_size: 64, ..Setup::default() };
    let mut p = Pair::new(setup);
    // 20 ports: a 102-byte table, larger than a chunk.
    let carried: Vec<_> =
        (0..20).map(|_| PortEntry { port: p.client.open_port(End::Receiver).unwrap(), end: End::Receiver }).collect();
    p.send(C, ROOT_CLIENT_TO_SERVER, &carried, &pattern(300, 1));
    let fs = frames(p.transmit(C));
    let data: Vec<_> = fs.iter().filter_map(|f| f.data_payload()).collect();
    assert_eq!(data[0].len(), crate::wire::table_len(20), "the first chunk holds the whole table");
    assert!(data[1..].iter().all(|d| d.len() <= 64));
    p.deliver(S, raw(&fs));
    p.drive();
    let msgs = p.recv(S, ROOT_CLIENT_TO_SERVER);
    assert_eq!(msgs, vec![Msg { ports: carried.clone(), data: pattern(300, 1) }]);
    for e in &carried {
        p.client.close_end(e.port);
        p.server.close_end(e.port);
    }
    p.drive();
    assert_quiet_and_clean(&p);
}

// ----- 4. control frames first ------------------------------------------------

#[test]
fn control_frames_are_not_queued_behind_data() {
    let setup = Setup {
        chunk_size: 128,
        port_window: 1 << 16,
        conn_window: 1 << 16,
        send_buffer: 1 << 16,
        conn_send_buffer: 1 << 16,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    // A port the client receives on, to be stopped.
    let stopped = p.open_and_claim(S, End::Sender);
    // Enough for the client to owe credit on its receiving root.
    for _ in 0..40 {
        p.send(S, ROOT_SERVER_TO_CLIENT, &[], &[0; 500]);
    }
    p.drive();
    p.budget = 300;
    // The large message must fit the server's windows whole, overhead
    // included, so that one drive delivers all of it: 40,002 bytes in
    // 128-byte chunks cost 40,002 + 313 * CHUNK_OVERHEAD = 60,034 <= 65,536.
    let big = 40_000;
    let cost = (big + 2) as u64 + (big as u64 + 2).div_ceil(128) * CHUNK_OVERHEAD;
    assert!(cost <= 1 << 16, "{cost}");
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &pattern(big, 3));
    let first = frames(p.transmit(C));
    assert!(first.iter().any(|f| matches!(f, Frame::Data { port: ROOT_CLIENT_TO_SERVER, .. })));
    // Now credit and a stop become due while data remains queued.
    assert_eq!(p.recv(C, ROOT_SERVER_TO_CLIENT).len(), 40);
    p.client.close_end(stopped);
    let next = frames(p.transmit(C));
    let pos = |pred: &dyn Fn(&Frame) -> bool| next.iter().position(pred);
    let credit = pos(&|f| matches!(f, Frame::Credit { port: ROOT_SERVER_TO_CLIENT, .. })).expect("port credit sent");
    let conn_credit = pos(&|f| matches!(f, Frame::Credit { port: 0, .. })).expect("connection credit sent");
    let stop = pos(&|f| *f == Frame::Stop { port: stopped }).expect("stop sent");
    let data = pos(&|f| matches!(f, Frame::Data { .. })).expect("data follows");
    assert!(credit < data && conn_credit < data && stop < data, "{next:?}");
    p.budget = 64 * 1024;
    p.deliver(S, raw(&first));
    p.deliver(S, raw(&next));
    p.drive();
    assert_eq!(p.recv(S, ROOT_CLIENT_TO_SERVER), vec![Msg { ports: vec![], data: pattern(big, 3) }]);
    p.server.close_end(stopped);
    p.drive();
    assert_quiet_and_clean(&p);
}

// ----- 5. credit ----------------------------------------------------------------

#[test]
fn port_window_bounds_bytes_in_flight_and_pops_refill_it() {
    let setup = Setup { chunk_size: 64, port_window: 256, send_buffer: 1 << 16, ..Setup::default() };
    let mut p = Pair::new(setup);
    let body = pattern(2000, 9);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
    let total = 2 + body.len();
    // A window of 256 holds two 64-byte chunks at 64 + CHUNK_OVERHEAD = 128
    // of credit each: 128 payload bytes per window.
    let per_window = (256 / (64 + CHUNK_OVERHEAD) * 64) as usize;
    assert_eq!(per_window, 128);
    p.drive();
    assert_eq!(p.server.stats().recv_buffered, 256, "exactly one window in flight");
    assert_eq!(p.client.stats().send_queued, total - per_window + MSG_OVERHEAD);
    let mut got = Vec::new();
    let mut rounds = 0;
    loop {
        let mut popped = false;
        while let Pop::Chunk(c) = p.server.pop_chunk(ROOT_CLIENT_TO_SERVER) {
            got.extend(c.into_message());
            popped = true;
        }
        p.drive();
        assert!(p.server.stats().recv_buffered <= 256, "the receiver never buffers more than its window");
        if !popped {
            break;
        }
        rounds += 1;
    }
    assert_eq!(got, body);
    assert!(rounds >= total / per_window, "credit came back in steps ({rounds})");
    assert_quiet_and_clean(&p);
}

/// A stream of tiny messages is bounded by what each costs to hold, not by
/// its bytes alone: a 1-byte message counts its 2-byte port table header
/// and MSG_OVERHEAD.
#[test]
fn tiny_messages_count_their_overhead_against_the_send_buffer() {
    let setup = Setup { send_buffer: 10 * 67, ..Setup::default() };
    let mut p = Pair::new(setup);
    let port = ROOT_CLIENT_TO_SERVER;
    let mut accepted = 0;
    let refused = loop {
        match p.client.send(port, msg(&[], &[7])) {
            Ok(()) => accepted += 1,
            Err(SendError::Full(m)) => break m,
            Err(e) => panic!("{e:?}"),
        }
        assert!(accepted <= 10, "more than the buffer holds");
    };
    assert_eq!(accepted, 10);
    assert_eq!(p.client.stats().send_queued, 10 * (3 + MSG_OVERHEAD));
    // A refused message given up was never counted.
    p.client.discard_unsent(refused);
    assert_eq!(p.client.stats().send_queued, 10 * (3 + MSG_OVERHEAD));
    // Once sent, the overhead is released with the bytes.
    p.drive();
    assert_eq!(p.client.stats().send_queued, 0);
    assert_eq!(p.recv(S, port).len(), 10);
}

#[test]
fn full_send_buffer_reports_full_then_writable() {
    // Three messages of 200 bytes, each counting MSG_OVERHEAD more, fill it.
    let setup = Setup { chunk_size: 64, port_window: 256, send_buffer: 700, ..Setup::default() };
    let mut p = Pair::new(setup);
    let port = ROOT_CLIENT_TO_SERVER;
    for i in 0..3u8 {
        p.send(C, port, &[], &[i; 198]);
    }
    assert!(!p.client.send_ready(port));
    match p.client.send(port, msg(&[], &[3; 198])) {
        Err(SendError::Full(m)) => {
            assert_eq!(&m.bytes[2..], &[3; 198][..], "the message is handed back")
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(events(&mut p.client).is_empty());
    // One window leaves: 256 bytes of credit, two 64-byte chunks at
    // 64 + CHUNK_OVERHEAD each, so 128 payload bytes; 664 stay counted,
    // below the limit.
    p.drive();
    let per_window = (256 / (64 + CHUNK_OVERHEAD) * 64) as usize;
    assert_eq!(p.client.stats().send_queued, 3 * (200 + MSG_OVERHEAD) - per_window);
    assert_eq!(3 * (200 + MSG_OVERHEAD) - per_window, 664);
    assert_eq!(events(&mut p.client), vec![Event::Writable(port)]);
    assert!(p.client.send_ready(port));
    p.send(C, port, &[], &[3; 198]);
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(p.recv_partial(S, port));
        p.drive();
    }
    let want: Vec<u8> = (0..4u8).flat_map(|i| [i; 198]).collect();
    assert_eq!(got, want);
    assert_quiet_and_clean(&p);
}

#[test]
fn conn_window_bounds_bytes_in_flight_across_ports() {
    let setup = Setup {
        chunk_size: 64,
        port_window: 4096,
        conn_window: 512,
        send_buffer: 1 << 16,
        conn_send_buffer: 512,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    let b = p.open_and_claim(C, End::Sender);
    let c = p.open_and_claim(C, End::Sender);
    // Let the opening messages' connection credit come back.
    p.drive();
    let ports = [ROOT_CLIENT_TO_SERVER, b, c];
    for (i, &port) in ports.iter().enumerate() {
        p.send(C, port, &[], &[i as u8; 198]);
    }
    // 600 bytes queued (792 counted): above the connection's send limit.
    match p.client.send(b, msg(&[], b"more")) {
        Err(SendError::Full(_)) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    p.drive();
    // The opening messages took 22 bytes that are read but not yet granted
    // back (below a quarter window): the rest of the window is in flight.
    assert_eq!(p.server.conn_window_left, 0, "the whole connection window is used");
    assert_eq!(p.server.stats().recv_buffered + p.server.conn_unreported as usize, 512);
    assert!(p.server.stats().recv_buffered > 512 - 64);
    let per_port: Vec<usize> = ports.iter().map(|&port| p.server.ports[&port].buffered).collect();
    assert!(per_port.iter().all(|&n| n >= 128), "round robin shares the window: {per_port:?}");
    let mut got = vec![Vec::new(); 3];
    for _ in 0..10 {
        for (i, &port) in ports.iter().enumerate() {
            got[i].extend(p.recv_partial(S, port));
        }
        p.drive();
        assert!(p.server.stats().recv_buffered <= 512);
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &vec![i as u8; 198]);
    }
    assert!(events(&mut p.client).contains(&Event::Writable(b)));
    for port in [b, c] {
        p.client.close_end(port);
        p.server.close_end(port);
    }
    p.drive();
    assert_quiet_and_clean(&p);
}

// ----- 6. liveness ------------------------------------------------------------------

#[test]
fn silent_peer_times_out() {
    let setup = Setup::default();
    let mut p = Pair::new(setup);
    assert_eq!(p.client.poll_timeout(), p.epoch + setup.ping_interval);
    p.advance(setup.idle_timeout - Duration::from_millis(1));
    assert_eq!(p.client.handle_timeout(p.now()), Ok(()));
    // The ping goes out but nothing comes back.
    assert!(frames(p.transmit(C)).iter().any(|f| matches!(f, Frame::Ping { .. })));
    p.advance(Duration::from_millis(1));
    assert_eq!(p.client.handle_timeout(p.now()), Err(MuxError::Timeout(setup.idle_timeout)));
    assert_eq!(p.client.error(), Some(&MuxError::Timeout(setup.idle_timeout)));
    assert!(p.transmit(C).is_empty(), "a dead mux sends nothing");
    assert!(matches!(p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x")), Err(SendError::Closed(_))));
}

#[test]
fn answered_pings_keep_the_connection_alive() {
    let setup = Setup::default();
    let mut p = Pair::new(setup);
    let mut pings = 0;
    // Three idle timeouts pass; only the client's clock runs, so all traffic
    // is the client's pings and the server's pongs.
    while p.offset < setup.idle_timeout * 3 {
        p.advance(setup.ping_interval);
        let now = p.now();
        assert_eq!(p.client.poll_timeout(), now, "a ping is due now");
        p.client.handle_timeout(now).expect("alive");
        let out = p.transmit(C);
        let fs = frames(out.clone());
        assert_eq!(fs.len(), 1);
        let Frame::Ping { nonce } = fs[0] else { panic!("expected a ping, got {fs:?}") };
        pings += 1;
        p.deliver(S, out);
        let back = p.transmit(S);
        assert_eq!(frames(back.clone()), vec![Frame::Pong { nonce }]);
        p.deliver(C, back);
    }
    assert!(pings >= 15);
    assert!(p.client.error().is_none());
    let now = p.now();
    p.server.handle_timeout(now).expect("the server heard the pings");
    // Once the pongs stop, the timeout is the idle time after the last one.
    p.advance(setup.idle_timeout);
    assert_eq!(p.client.handle_timeout(p.now()), Err(MuxError::Timeout(setup.idle_timeout)));
}

// ----- 7. half close ----------------------------------------------------------------

#[test]
fn sender_close_lets_the_receiver_drain_then_finish() {
    let mut p = Pair::new(Setup { chunk_size: 64, ..Setup::default() });
    let id = p.open_and_claim(C, End::Sender);
    p.send(C, id, &[], &pattern(300, 1));
    p.send(C, id, &[], b"last");
    // Closed with messages still queued: they go out before the Fin.
    p.client.close_end(id);
    p.drive();
    assert!(events(&mut p.server).contains(&Event::Readable(id)));
    let msgs = p.recv(S, id);
    assert_eq!(msgs.iter().map(|m| m.data.clone()).collect::<Vec<_>>(), vec![pattern(300, 1), b"last".to_vec()]);
    assert!(matches!(p.server.pop_chunk(id), Pop::Finished));
    assert!(matches!(p.server.pop_chunk(id), Pop::Finished));
    assert_eq!(p.open_ports(), (3, 3), "the server still holds its end");
    p.server.close_end(id);
    p.drive();
    assert_quiet_and_clean(&p);
}

#[test]
fn receiver_close_fails_later_sends_with_closed() {
    let mut p = Pair::new(Setup::default());
    let id = p.open_and_claim(S, End::Receiver);
    assert!(!p.client.is_send_closed(id));
    p.server.close_end(id);
    p.drive();
    assert!(p.client.is_send_closed(id));
    assert!(events(&mut p.client).contains(&Event::Writable(id)), "a waiting writer wakes up");
    match p.client.send(id, msg(&[], b"too late")) {
        Err(SendError::Closed(m)) => assert_eq!(&m.bytes[2..], b"too late"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(p.client.send_ready(id), "a send would not block (it fails)");
    assert_eq!(p.open_ports(), (3, 3), "the server keeps its end until the client's Fin");
    p.client.close_end(id);
    p.drive();
    assert_quiet_and_clean(&p);
}

/// The receiver stops in the middle of a chunked message: the sender drops
/// the rest and its Fin must not look like a protocol violation.
#[test]
fn receiver_close_in_the_middle_of_a_message() {
    let setup = Setup { chunk_size: 64, port_window: 256, ..Setup::default() };
    let mut p = Pair::new(setup);
    let id = p.open_and_claim(C, End::Sender);
    p.send(C, id, &[], &pattern(2000, 4));
    p.send(C, id, &[], b"never read");
    p.drive();
    assert_eq!(p.server.stats().recv_buffered, 256);
    p.server.close_end(id);
    p.client.close_end(id);
    p.drive();
    assert_quiet_and_clean(&p);

    // Same, with the sender's handle still open when Stop arrives.
    let id = p.open_and_claim(S, End::Sender);
    p.send(S, id, &[], &pattern(2000, 4));
    p.drive();
    let first = p.client.pop_chunk(id);
    assert!(matches!(first, Pop::Chunk(Chunk { first: true, last: false, .. })));
    p.client.close_end(id);
    p.drive();
    assert!(p.server.is_send_closed(id));
    assert_eq!(p.server.stats().send_queued, 0, "the rest of the message was dropped");
    p.server.close_end(id);
    p.drive();
    assert_quiet_and_clean(&p);
}

// ----- 8. discarding --------------------------------------------------------------------

#[test]
fn dropping_an_unread_message_closes_the_ports_it_carries() {
    let mut p = Pair::new(Setup::default());
    let carrier = p.open_and_claim(C, End::Sender);
    let start = p.open_ports();
    // The message carries two ports: one whose sender end travels, one whose
    // receiver end travels.
    let x = p.client.open_port(End::Sender).unwrap();
    let y = p.client.open_port(End::Receiver).unwrap();
    let carried = [PortEntry { port: x, end: End::Sender }, PortEntry { port: y, end: End::Receiver }];
    p.send(C, carrier, &carried, b"payload");
    p.drive();
    assert_eq!(p.open_ports(), (start.0 + 2, start.1 + 2));
    // The server drops the carrier port without reading.
    p.server.close_end(carrier);
    p.drive();
    assert_eq!(p.server.stats().recv_buffered, 0);
    assert!(p.client.is_send_closed(y), "the server's unclaimed receiver end stopped");
    assert!(matches!(p.client.pop_chunk(x), Pop::Finished), "the server's unclaimed sender end finished");
    for id in [carrier, x, y] {
        p.client.close_end(id);
    }
    p.drive();
    assert_quiet_and_clean(&p);
}

#[test]
fn a_message_stopped_before_it_left_drops_its_ports_silently() {
    // A window of exactly one 64-byte chunk: 64 + CHUNK_OVERHEAD. (A window
    // of 64 could carry nothing at all.)
    let setup = Setup { port_window: 64 + CHUNK_OVERHEAD as u32, chunk_size: 64, ..Setup::default() };
    let mut p = Pair::new(setup);
    let carrier = p.open_and_claim(C, End::Sender);
    // Use up the carrier's credit so the next message stays queued: a
    // 64-byte message (2-byte table) in one chunk takes the whole window.
    p.send(C, carrier, &[], &[0; 62]);
    p.drive();
    assert_eq!(p.client.ports[&carrier].credit, 0);
    assert_eq!(p.server.stats().recv_buffered, 64 + CHUNK_OVERHEAD as usize);
    let x = p.client.open_port(End::Sender).unwrap();
    let y = p.client.open_port(End::Receiver).unwrap();
    let carried = [PortEntry { port: x, end: End::Sender }, PortEntry { port: y, end: End::Receiver }];
    p.send(C, carrier, &carried, b"never sent");
    // Data queued on y: it can never leave either.
    p.send(C, y, &[], b"inner");
    assert_eq!(p.client.stats().open_ports, 5);
    p.server.close_end(carrier);
    assert!(p.transmit(S).is_empty(), "a lone Stop waits to ride along, or for ACK_DELAY");
    p.advance(crate::mux::ACK_DELAY);
    let now = p.now();
    p.server.handle_timeout(now).unwrap();
    let stop = p.transmit(S);
    assert!(frames(stop.clone()).contains(&Frame::Stop { port: carrier }));
    p.deliver(C, stop);
    // The client learns that x and y are dead.
    let evs = events(&mut p.client);
    assert!(evs.contains(&Event::Readable(x)) && evs.contains(&Event::Writable(y)), "{evs:?}");
    assert!(matches!(p.client.pop_chunk(x), Pop::Finished));
    assert!(p.client.is_send_closed(y));
    assert_eq!(p.client.stats().send_queued, 0);
    // Nothing about x or y reaches the server.
    for id in [x, y, carrier] {
        p.client.close_end(id);
    }
    p.advance(crate::mux::ACK_DELAY);
    let now = p.now();
    p.client.handle_timeout(now).unwrap();
    let out = frames(p.transmit(C));
    assert_eq!(out.iter().filter(|f| f.is_reliable()).cloned().collect::<Vec<_>>(), vec![Frame::Fin { port: carrier }]);
    p.deliver(S, raw(&out));
    p.drive();
    assert_quiet_and_clean(&p);
}

// ----- 9. sequence numbers, acks, resume ------------------------------------------

#[test]
fn sequence_numbers_count_reliable_frames_and_acks_trim_replay() {
    let setup = Setup { chunk_size: 64, port_window: 512, conn_window: 512, ..Setup::default() };
    let mut p = Pair::new(setup);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &[1; 200]); // 4 chunks
    let out = p.transmit(C);
    let fs = frames(out.clone());
    assert_eq!(fs.len(), 4);
    assert_eq!(p.client.stats().sent_seq, 4);
    assert_eq!(p.client.stats().replay_bytes, 202);
    p.deliver(S, out);
    assert_eq!(p.server.stats().received_seq, 4);
    // A lone acknowledgement waits for other output, or ACK_DELAY.
    assert!(p.transmit(S).is_empty(), "no ack-only write at once");
    p.advance(crate::mux::ACK_DELAY);
    let now = p.now();
    p.server.handle_timeout(now).unwrap();
    let back = frames(p.transmit(S));
    assert_eq!(back, vec![Frame::Ack { received: 4 }], "acks are not counted");
    assert_eq!(p.server.stats().sent_seq, 0);
    p.deliver(C, raw(&back));
    assert_eq!(p.client.stats().replay_bytes, 0);
    // Credit frames count too.
    p.recv(S, ROOT_CLIENT_TO_SERVER);
    p.drive();
    let (c, s) = (p.client.stats(), p.server.stats());
    assert_eq!(s.sent_seq, 2, "port and connection credit");
    assert_eq!(c.received_seq, 2);
    assert_eq!(c.sent_seq, s.received_seq);
    assert_eq!((c.replay_bytes, s.replay_bytes), (0, 0));
    assert_eq!((p.client.replay.len(), p.server.replay.len()), (0, 0));
}

#[test]
fn resume_after_a_lost_transmit_delivers_each_message_once_in_order() {
    for cut_at in 1..6 {
        let setup = Setup { chunk_size: 64, port_window: 1024, ..Setup::default() };
        let mut p = Pair::new(setup);
        p.budget = 200;
        let id = p.open_and_claim(S, End::Sender);
        let mut sent = Vec::new();
        for i in 0..30u32 {
            let body = pattern(10 + (i as usize * 37) % 150, i as u8);
            sent.push(body.clone());
            p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
            p.send(S, id, &[], &body);
        }
        let mut got_s = Vec::new();
        let mut got_c = Vec::new();
        for round in 0..cut_at {
            let c = p.transmit(C);
            let s = p.transmit(S);
            if round + 1 == cut_at {
                // The link breaks: both transmits in flight are lost.
                break;
            }
            p.deliver(S, c);
            p.deliver(C, s);
            got_s.extend(p.recv_whole(S, ROOT_CLIENT_TO_SERVER));
            got_c.extend(p.recv_whole(C, id));
        }
        p.advance(Duration::from_secs(1));
        let now = p.now();
        let (c_seen, s_seen) = (p.client.received_seq(), p.server.received_seq());
        p.client.resume(s_seen, c_seen, now).unwrap();
        p.server.resume(c_seen, s_seen, now).unwrap();
        for _ in 0..200 {
            let moved = p.step();
            got_s.extend(p.recv_whole(S, ROOT_CLIENT_TO_SERVER));
            got_c.extend(p.recv_whole(C, id));
            if !moved {
                break;
            }
        }
        assert_eq!(got_s, sent, "client to server, cut at {cut_at}");
        assert_eq!(got_c, sent, "server to client, cut at {cut_at}");
        let (c, s) = (p.client.stats(), p.server.stats());
        assert_eq!(c.sent_seq, s.received_seq);
        assert_eq!(s.sent_seq, c.received_seq);
        p.client.close_end(id);
        p.server.close_end(id);
        p.drive();
        assert_quiet_and_clean(&p);
    }
}

/// An accepting side tells the dialer how much it received, then its old
/// transport still delivers a few frames before it fails: the dialer sends
/// those again, and they are dropped, not delivered twice.
#[test]
fn frames_received_after_the_resume_count_went_out_are_not_delivered_twice() {
    // The new transport's first bytes may come from either side. When the
    // server's come first, its acknowledgement reaches the dialer before the
    // dialer replays: it must not cover the frames that the server will drop
    // as duplicates, or the dialer skips them and the server drops new ones.
    for server_first in [false, true] {
        let setup = Setup { chunk_size: 64, port_window: 4096, ..Setup::default() };
        let mut p = Pair::new(setup);
        p.budget = 200;
        let sent: Vec<Vec<u8>> = (0..30u32).map(|i| pattern(10 + (i as usize * 37) % 150, i as u8)).collect();
        for body in &sent {
            p.send(C, ROOT_CLIENT_TO_SERVER, &[], body);
        }
        let mut got = Vec::new();
        let first = p.transmit(C);
        p.deliver(S, first);
        got.extend(p.recv_whole(S, ROOT_CLIENT_TO_SERVER));
        // The dialer reconnects; the server's count goes out in the handshake...
        let told = p.server.received_seq();
        // ... while its old transport still delivers more.
        let late = p.transmit(C);
        p.deliver(S, late);
        got.extend(p.recv_whole(S, ROOT_CLIENT_TO_SERVER));
        assert!(p.server.received_seq() > told, "frames arrived after the count went out");
        // Then the old transport fails, losing what was in flight.
        let _lost = p.transmit(C);
        let now = p.now();
        let c_seen = p.client.received_seq();
        p.client.resume(told, c_seen, now).unwrap();
        p.server.resume(c_seen, told, now).unwrap();
        if server_first {
            let hello = p.transmit(S);
            assert!(frames(hello.clone()).iter().any(|f| matches!(f, Frame::Ack { .. })), "the server acknowledges");
            p.deliver(C, hello);
        }
        for _ in 0..500 {
            let moved = p.step();
            got.extend(p.recv_whole(S, ROOT_CLIENT_TO_SERVER));
            if !moved {
                break;
            }
        }
        let which: Vec<_> = got.iter().map(|m| sent.iter().position(|s| s == m)).collect();
        let want: Vec<_> = (0..sent.len()).map(Some).collect();
        assert_eq!(which, want, "each message exactly once, in order (server first: {server_first})");
        assert_eq!(p.server.received_seq(), p.client.stats().sent_seq, "the sequences agree again");
    }
}

#[test]
fn resume_rejects_an_impossible_position() {
    let mut p = Pair::new(Setup::default());
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], b"x");
    p.drive();
    let now = p.now();
    assert_eq!(p.client.resume(5, 0, now), Err(MuxError::BadAck { acked: 5, sent: 1 }));
    assert_eq!(p.client.resume(1, 3, now), Err(MuxError::BadAck { acked: 3, sent: 0 }), "told more than received");
}

// ----- 10. protocol violations ------------------------------------------------------

/// Feeds raw frames from the client to a fresh server and returns its error.
fn violation(setup: Setup, frames: &[Frame]) -> MuxError {
    let mut p = Pair::new(setup);
    let now = p.now();
    let err = p.server.handle_input(&mut raw(frames), now).expect_err("the server must refuse");
    assert_eq!(p.server.error(), Some(&err), "the error is final");
    assert_eq!(p.server.handle_input(&mut BytesMut::new(), now), Err(err.clone()));
    err
}

#[test]
fn data_beyond_port_credit_is_refused() {
    let setup = Setup { port_window: 256, ..Setup::default() };
    let ok = first_chunk(ROOT_CLIENT_TO_SERVER, &[], &[0; 200], false);
    let over = Frame::Data { port: ROOT_CLIENT_TO_SERVER, flags: FLAG_LAST, payload: Bytes::from(vec![0; 100]) };
    assert_eq!(violation(setup, &[ok, over]), MuxError::CreditExceeded(ROOT_CLIENT_TO_SERVER));
}

#[test]
fn data_beyond_connection_credit_is_refused() {
    let setup = Setup { port_window: 4096, conn_window: 128, ..Setup::default() };
    let over = first_chunk(ROOT_CLIENT_TO_SERVER, &[], &[0; 200], true);
    assert_eq!(violation(setup, &[over]), MuxError::CreditExceeded(0));
}

#[test]
fn data_for_an_unknown_port_is_refused() {
    let f = first_chunk(40, &[], b"x", true);
    assert_eq!(violation(Setup::default(), &[f]), MuxError::UnknownPort(40));
    assert_eq!(violation(Setup::default(), &[Frame::Credit { port: 41, bytes: 1 }]), MuxError::UnknownPort(41));
}

#[test]
fn data_from_the_wrong_end_is_refused() {
    // The server holds the sender end of its own root.
    let f = first_chunk(ROOT_SERVER_TO_CLIENT, &[], b"x", true);
    assert_eq!(violation(Setup::default(), &[f]), MuxError::WrongEnd(ROOT_SERVER_TO_CLIENT));
}

#[test]
fn announcing_a_port_of_the_wrong_parity_is_refused() {
    // The client may only allocate even ids.
    let f = first_chunk(ROOT_CLIENT_TO_SERVER, &[PortEntry { port: 7, end: End::Sender }], b"", true);
    assert_eq!(violation(Setup::default(), &[f]), MuxError::BadAnnounce(7));
    // Nor the root ports.
    let f = first_chunk(ROOT_CLIENT_TO_SERVER, &[PortEntry { port: 2, end: End::Sender }], b"", true);
    assert_eq!(violation(Setup::default(), &[f]), MuxError::BadAnnounce(2));
}

#[test]
fn announcing_a_port_twice_is_refused() {
    let e = PortEntry { port: 4, end: End::Sender };
    let f = first_chunk(ROOT_CLIENT_TO_SERVER, &[e, e], b"", true);
    assert_eq!(violation(Setup::default(), &[f]), MuxError::BadAnnounce(4));
    // Or in a later message while the first is alive.
    let f1 = first_chunk(ROOT_CLIENT_TO_SERVER, &[e], b"", true);
    let f2 = first_chunk(ROOT_CLIENT_TO_SERVER, &[e], b"", true);
    assert_eq!(violation(Setup::default(), &[f1, f2]), MuxError::BadAnnounce(4));
}

#[test]
fn announcing_more_ports_than_max_ports_is_refused() {
    let setup = Setup { max_ports: 4, ..Setup::default() };
    let table: Vec<_> = (0..5).map(|i| PortEntry { port: 4 + 2 * i, end: End::Receiver }).collect();
    let f = first_chunk(ROOT_CLIENT_TO_SERVER, &table, b"", true);
    assert_eq!(violation(setup, &[f]), MuxError::TooManyPorts(4));
    // And the sending side refuses to open more than the peer allows.
    let mut p = Pair::new(setup);
    for _ in 0..4 {
        p.client.open_port(End::Sender).unwrap();
    }
    assert_eq!(p.client.open_port(End::Sender), Err(MuxError::TooManyPorts(4)));
}

#[test]
fn a_message_beyond_max_message_is_refused() {
    let setup = Setup { max_message: 100, ..Setup::default() };
    let f1 = first_chunk(ROOT_CLIENT_TO_SERVER, &[], &[0; 60], false);
    let f2 = Frame::Data { port: ROOT_CLIENT_TO_SERVER, flags: FLAG_LAST, payload: Bytes::from(vec![0; 60]) };
    assert_eq!(violation(setup, &[f1, f2]), MuxError::MessageTooLarge { port: ROOT_CLIENT_TO_SERVER, max: 100 });
    // The sender checks the peer's limit before queueing.
    let mut p = Pair::new(setup);
    assert!(matches!(
        p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], &[0; 120])),
        Err(SendError::TooLarge { max: 100, .. })
    ));
}

#[test]
fn chunks_out_of_order_are_refused() {
    let cont = Frame::Data { port: ROOT_CLIENT_TO_SERVER, flags: FLAG_LAST, payload: Bytes::from_static(b"x") };
    assert_eq!(violation(Setup::default(), &[cont]), MuxError::ChunkOrder(ROOT_CLIENT_TO_SERVER));
    let a = first_chunk(ROOT_CLIENT_TO_SERVER, &[], b"x", false);
    let b = first_chunk(ROOT_CLIENT_TO_SERVER, &[], b"y", true);
    assert_eq!(violation(Setup::default(), &[a, b]), MuxError::ChunkOrder(ROOT_CLIENT_TO_SERVER));
    // A Fin in the middle of a message the receiver still reads.
    let a = first_chunk(ROOT_CLIENT_TO_SERVER, &[], b"x", false);
    let fin = Frame::Fin { port: ROOT_CLIENT_TO_SERVER };
    assert_eq!(violation(Setup::default(), &[a, fin]), MuxError::ChunkOrder(ROOT_CLIENT_TO_SERVER));
}

#[test]
fn an_ack_beyond_sent_seq_is_refused() {
    assert_eq!(violation(Setup::default(), &[Frame::Ack { received: 1 }]), MuxError::BadAck { acked: 1, sent: 0 });
}

#[test]
fn oversized_frames_and_goaway_end_the_mux() {
    let setup = Setup { max_frame: 128, ..Setup::default() };
    let f = first_chunk(ROOT_CLIENT_TO_SERVER, &[], &[0; 200], true);
    assert_eq!(violation(setup, &[f]), MuxError::Wire(crate::wire::WireError::FrameTooLarge { len: 202, max: 128 }));
    let bye = Frame::GoAway { code: 7, reason: "bye".into() };
    assert_eq!(violation(Setup::default(), &[bye]), MuxError::PeerClosed { code: 7, reason: "bye".into() });
}

#[test]
fn graceful_close_sends_goaway_after_queued_data() {
    let mut p = Pair::new(Setup { chunk_size: 64, ..Setup::default() });
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &pattern(500, 2));
    p.client.close(3, "done");
    assert!(matches!(p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x")), Err(SendError::Closed(_))));
    let out = p.transmit(C);
    let fs = frames(out.clone());
    assert_eq!(fs.last(), Some(&Frame::GoAway { code: 3, reason: "done".into() }));
    assert!(p.client.is_closed());
    let now = p.now();
    let err = p.server.handle_input(&mut out.clone(), now).unwrap_err();
    assert_eq!(err, MuxError::PeerClosed { code: 3, reason: "done".into() });
    assert_eq!(p.recv_partial(S, ROOT_CLIENT_TO_SERVER), pattern(500, 2), "data before the GoAway is kept");
}

#[test]
fn a_port_table_larger_than_a_chunk_waits_for_enough_credit() {
    // A window of 128 could never carry the 102-byte table below plus
    // CHUNK_OVERHEAD; 256 can, and keeps 64-byte chunks (256 / 2 > 64).
    let setup = Setup { chunk_size: 64, port_window: 256, ..Setup::default() };
    let mut p = Pair::new(setup);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &[9; 38]);
    p.drive();
    // The 40-byte message took 40 + CHUNK_OVERHEAD = 104 of the 256: 152 of
    // credit left, room for an 88-byte payload: more than a chunk, less than
    // the 102-byte table.
    let left = p.client.ports[&ROOT_CLIENT_TO_SERVER].credit;
    assert_eq!(left, 256 - (40 + CHUNK_OVERHEAD));
    assert_eq!(left - CHUNK_OVERHEAD, 88);
    let carried: Vec<_> =
        (0..20).map(|_| PortEntry { port: p.client.open_port(End::Sender).unwrap(), end: End::Sender }).collect();
    p.send(C, ROOT_CLIENT_TO_SERVER, &carried, b"tail");
    assert!(frames(p.transmit(C)).iter().all(|f| !matches!(f, Frame::Data { .. })), "waits for credit");
    assert_eq!(p.recv_partial(S, ROOT_CLIENT_TO_SERVER), vec![9; 38]);
    p.drive();
    let msgs = p.recv(S, ROOT_CLIENT_TO_SERVER);
    assert_eq!(msgs, vec![Msg { ports: carried.clone(), data: b"tail".to_vec() }]);
    for e in &carried {
        p.server.close_end(e.port);
        p.client.close_end(e.port);
    }
    p.drive();
    assert_quiet_and_clean(&p);
}

/// The connection's send queue is bounded by `conn_send_buffer`, however
/// large the peer's window: a port that already has something queued is
/// refused while the ports together hold that much, and told when it drains.
#[test]
fn conn_send_buffer_bounds_the_send_queue_below_the_peer_window() {
    let setup = Setup {
        chunk_size: 64,
        port_window: 4096,
        conn_window: 1 << 16,
        send_buffer: 1 << 16,
        conn_send_buffer: 512,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    let a = p.open_and_claim(C, End::Sender);
    let root = ROOT_CLIENT_TO_SERVER;
    p.send(C, a, &[], &[1; 600]);
    // Another port with nothing queued still takes one message...
    p.send(C, root, &[], b"first");
    // ... but not a second while 600 bytes (and more counted) wait, far
    // below the peer's window.
    assert!(matches!(p.client.send(root, msg(&[], b"x")), Err(SendError::Full(_))));
    assert!(matches!(p.client.send(a, msg(&[], b"x")), Err(SendError::Full(_))));
    events(&mut p.client);
    p.step();
    assert!(p.client.stats().send_queued < 512, "the queue drained: {:?}", p.client.stats());
    let woken = events(&mut p.client);
    assert!(woken.contains(&Event::Writable(root)) && woken.contains(&Event::Writable(a)), "{woken:?}");
    p.send(C, root, &[], b"x");
    p.drive();
    assert_eq!(
        p.recv(S, root),
        vec![Msg { ports: vec![], data: b"first".to_vec() }, Msg { ports: vec![], data: b"x".to_vec() }]
    );
}

/// Writers refused because the connection's send queue was full wake up
/// when a Stop drops queued bytes, not only when bytes leave.
#[test]
fn a_stop_wakes_writers_blocked_on_the_connection() {
    let setup = Setup {
        chunk_size: 64,
        port_window: 128,
        conn_window: 512,
        send_buffer: 1 << 16,
        conn_send_buffer: 512,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    let a = p.open_and_claim(C, End::Sender);
    // a's window fills; 600 bytes (and more counted) stay queued, above the
    // connection's send limit.
    p.send(C, a, &[], &[1; 126]);
    p.send(C, a, &[], &[2; 598]);
    // A port with nothing queued always takes one message; the next ones
    // wait for the connection to drain.
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], b"first");
    match p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x")) {
        Err(SendError::Full(_)) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    for _ in 0..3 {
        assert!(matches!(p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x")), Err(SendError::Full(_))));
    }
    assert_eq!(p.client.conn_blocked, vec![ROOT_CLIENT_TO_SERVER], "refusals are remembered once");
    events(&mut p.client);
    p.server.close_end(a);
    p.drive();
    assert!(events(&mut p.client).contains(&Event::Writable(ROOT_CLIENT_TO_SERVER)));
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], b"x");
    p.client.close_end(a);
    p.drive();
    // The root window is small: the second message follows once the first
    // is read and its credit returned.
    let mut got = p.recv(S, ROOT_CLIENT_TO_SERVER);
    p.drive();
    got.extend(p.recv(S, ROOT_CLIENT_TO_SERVER));
    assert_eq!(got, vec![Msg { ports: vec![], data: b"first".to_vec() }, Msg { ports: vec![], data: b"x".to_vec() }]);
    assert_quiet_and_clean(&p);
}

/// A message larger than the connection's send limit, queued on one port,
/// does not refuse (nor delay) the first message of another port: that
/// message is accepted and crosses while the large one is still going.
#[test]
fn a_large_queued_message_does_not_block_another_port() {
    let setup = Setup {
        chunk_size: 64,
        port_window: 256,
        conn_window: 512,
        send_buffer: 1 << 16,
        conn_send_buffer: 512,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    let big = p.open_and_claim(C, End::Sender);
    p.send(C, big, &[], &[7; 4096]);
    assert!(p.client.stats().send_queued > 512, "beyond the connection limit");
    assert!(p.client.send_ready(ROOT_CLIENT_TO_SERVER), "another port with nothing queued is ready");
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], b"small");
    // One exchange each way: the small message arrives while most of the
    // large one is still queued.
    p.step();
    assert_eq!(p.recv(S, ROOT_CLIENT_TO_SERVER), vec![Msg { ports: vec![], data: b"small".to_vec() }]);
    assert!(p.client.stats().send_queued > 2048, "the large message is still going");
    p.client.close_end(big);
    // The rest flows as the server reads (its window is 256 bytes).
    let mut whole = Vec::new();
    for _ in 0..1000 {
        p.drive();
        whole.extend(p.recv_whole(S, big));
        if !whole.is_empty() {
            break;
        }
    }
    assert_eq!(whole, vec![vec![7u8; 4096]]);
}

// ----- 11. per-chunk overhead, chunk cap, unacknowledged frames -----------------

/// Every `Data` frame costs its payload plus CHUNK_OVERHEAD of credit, so
/// however small the chunks, a receiver queues at most `window /
/// CHUNK_OVERHEAD` of them per port and per connection; the next one is
/// refused.
#[test]
fn tiny_chunks_cannot_queue_more_than_the_window_allows() {
    let root = ROOT_CLIENT_TO_SERVER;
    let window = 4096u64;
    // One port: a message of empty (or one-byte) continuation chunks. The
    // connection window is larger, so the port's is the one that fills.
    for len in [0usize, 1] {
        let mut p = Pair::new(Setup { port_window: window as u32, conn_window: 2 * window as u32, ..Setup::default() });
        let now = p.now();
        let mut accepted = 0u64;
        let err = loop {
            let f = if accepted == 0 {
                first_chunk(root, &[], b"", false)
            } else {
                Frame::Data { port: root, flags: 0, payload: Bytes::from(vec![7; len]) }
            };
            match p.server.handle_input(&mut raw(&[f]), now) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            let queued = p.server.ports[&root].chunks.len() as u64;
            assert_eq!(queued, accepted);
            assert!(queued * CHUNK_OVERHEAD <= window, "{queued} chunks queued");
            assert!(p.server.stats().recv_buffered as u64 <= window);
        };
        assert_eq!(err, MuxError::CreditExceeded(root), "len {len}");
        // The first chunk holds the 2-byte table; each chunk after it costs
        // len + CHUNK_OVERHEAD, until the next would not fit the window.
        let first = 2 + CHUNK_OVERHEAD;
        let each = len as u64 + CHUNK_OVERHEAD;
        assert_eq!(accepted, 1 + (window - first) / each, "len {len}");
    }

    // Three ports sharing the connection window: the connection refuses
    // once their chunks together would exceed it, though no port is full.
    let mut p = Pair::new(Setup { port_window: window as u32, conn_window: window as u32, ..Setup::default() });
    let now = p.now();
    let carried = [4, 6].map(|port| PortEntry { port, end: End::Receiver });
    let announce = first_chunk(root, &carried, b"", true);
    p.server.handle_input(&mut raw(&[announce]), now).unwrap();
    let ports = [root, 4, 6];
    let mut started = [false; 3];
    let mut accepted = 1u64;
    let err = 'feed: loop {
        for (i, &port) in ports.iter().enumerate() {
            let f = if started[i] {
                Frame::Data { port, flags: 0, payload: Bytes::new() }
            } else {
                started[i] = true;
                first_chunk(port, &[], b"", false)
            };
            if let Err(e) = p.server.handle_input(&mut raw(&[f]), now) {
                break 'feed e;
            }
            accepted += 1;
            let queued: u64 = ports.iter().map(|id| p.server.ports[id].chunks.len() as u64).sum();
            assert_eq!(queued, accepted);
            assert!(queued * CHUNK_OVERHEAD <= window, "{queued} chunks queued");
            assert!(ports.iter().all(|id| (p.server.ports[id].chunks.len() as u64) * CHUNK_OVERHEAD < window));
        }
    };
    assert_eq!(err, MuxError::CreditExceeded(0));
    // The announcement (12-byte table) and three first chunks (2-byte
    // tables) carry 18 bytes of payload; every chunk costs CHUNK_OVERHEAD.
    assert_eq!(accepted, (window - 18) / CHUNK_OVERHEAD);
}

/// A sender cuts chunks of at most half the peer's port window, whatever its
/// chunk size, so a chunk and its overhead always fit the window.
#[test]
fn chunks_stay_within_half_the_peer_port_window() {
    let setup = Setup { chunk_size: 1024, max_frame: 1024, port_window: 1024, ..Setup::default() };
    let mut p = Pair::new(setup);
    let body = pattern(3000, 5);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
    let fs = frames(p.transmit(C));
    let lens: Vec<usize> = fs.iter().filter_map(|f| f.data_payload()).map(|d| d.len()).collect();
    // 1024 of credit: one 512-byte chunk and what is left after its
    // overhead, 1024 - 2 * CHUNK_OVERHEAD - 512 = 384.
    assert_eq!(lens, vec![512, 384]);
    p.deliver(S, raw(&fs));
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(p.recv_partial(S, ROOT_CLIENT_TO_SERVER));
        p.drive();
    }
    assert!(got == body, "the message arrives whole");
    assert_quiet_and_clean(&p);
}

/// Removes the `Ack` frames from a transmit: a peer whose transmits pass
/// through here never acknowledges anything.
fn without_acks(bytes: BytesMut) -> BytesMut {
    let kept: Vec<Frame> = frames(bytes).into_iter().filter(|f| !matches!(f, Frame::Ack { .. })).collect();
    raw(&kept)
}

/// A peer that reads and returns credit but never acknowledges: the replay
/// buffer grows until it would exceed `2 * (conn_window / CHUNK_OVERHEAD) +
/// 65,536` frames, then the mux fails. The same traffic with acks goes on.
#[test]
fn a_peer_that_never_acknowledges_is_cut_off() {
    let setup = Setup { port_window: 4096, conn_window: 4096, send_buffer: 1 << 16, ..Setup::default() };
    let limit = 2 * (4096 / CHUNK_OVERHEAD) + 65_536;
    let root = ROOT_CLIENT_TO_SERVER;
    for acks in [true, false] {
        let mut p = Pair::new(setup);
        assert_eq!(p.client.max_unacked(), limit);
        let mut received = 0u64;
        let mut peak_replay = 0;
        loop {
            while p.client.stats().send_queued < 1024 {
                p.send(C, root, &[], b"x");
            }
            let c = p.transmit(C);
            peak_replay = peak_replay.max(p.client.replay.len());
            if p.client.error().is_some() {
                break;
            }
            p.deliver(S, c);
            received += p.recv(S, root).len() as u64;
            let s = p.transmit(S);
            p.deliver(C, if acks { s } else { without_acks(s) });
            // With acks: well past the limit. Without: the check failed.
            if p.client.stats().sent_seq > limit + 1000 {
                break;
            }
        }
        if acks {
            assert!(p.client.error().is_none());
            assert!(received > limit, "{received}");
            // Only what one round trip carries is ever unacknowledged.
            assert!(peak_replay < 200, "{peak_replay}");
            continue;
        }
        assert_eq!(p.client.error(), Some(&MuxError::Unacknowledged { frames: limit + 1 }));
        // Exactly `limit` frames went out and are kept; the next was not sent.
        assert_eq!(p.client.stats().sent_seq, limit);
        assert_eq!(p.client.replay.len() as u64, limit);
        assert!(p.transmit(C).is_empty(), "a dead mux sends nothing");
        let now = p.now();
        assert_eq!(p.client.handle_timeout(now), Err(MuxError::Unacknowledged { frames: limit + 1 }));
    }
}

/// A port we allocated is unknown to the peer until the message announcing
/// it has started to leave: `Credit`, `Stop`, `Data` or `Fin` for it before
/// then is refused like a frame for an id that does not exist.
#[test]
fn frames_for_a_port_not_yet_announced_are_refused() {
    for queued in [false, true] {
        for kind in 0..4 {
            let mut p = Pair::new(Setup::default());
            // The server keeps the sender end of `tx`, the receiver end of `rx`.
            let tx = p.server.open_port(End::Receiver).unwrap();
            let rx = p.server.open_port(End::Sender).unwrap();
            let carried = [PortEntry { port: tx, end: End::Receiver }, PortEntry { port: rx, end: End::Sender }];
            if queued {
                // Announced by a message that is queued but has not left.
                p.send(S, ROOT_SERVER_TO_CLIENT, &carried, b"soon");
            }
            let (frame, port) = match kind {
                0 => (Frame::Credit { port: tx, bytes: 100 }, tx),
                1 => (Frame::Stop { port: tx }, tx),
                2 => (first_chunk(rx, &[], b"x", true), rx),
                _ => (Frame::Fin { port: rx }, rx),
            };
            let now = p.now();
            let ctx = format!("queued {queued}, kind {kind}");
            assert_eq!(
                p.server.handle_input(&mut raw(std::slice::from_ref(&frame)), now),
                Err(MuxError::UnknownPort(port)),
                "{ctx}"
            );
            // Once the announcement has left, the same frame is fine.
            let mut p = Pair::new(Setup::default());
            let tx2 = p.server.open_port(End::Receiver).unwrap();
            let rx2 = p.server.open_port(End::Sender).unwrap();
            assert_eq!((tx2, rx2), (tx, rx));
            p.send(S, ROOT_SERVER_TO_CLIENT, &carried, b"now");
            let out = p.transmit(S);
            assert!(!out.is_empty());
            assert_eq!(p.server.handle_input(&mut raw(&[frame]), now), Ok(()), "{ctx}");
        }
    }
}

#[test]
fn acks_ride_along_with_data_or_go_alone_after_ack_every_frames() {
    let setup = Setup { chunk_size: 64, port_window: 64 * 1024, conn_window: 256 * 1024, ..Setup::default() };
    let mut p = Pair::new(setup);
    // One request: no ack-only write, but the reply carries the ack.
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], b"request");
    let out = p.transmit(C);
    p.deliver(S, out);
    assert!(p.transmit(S).is_empty(), "a lone ack waits");
    p.send(S, ROOT_SERVER_TO_CLIENT, &[], b"reply");
    let fs = frames(p.transmit(S));
    assert_eq!(fs[0], Frame::Ack { received: 1 }, "the ack goes first, with the reply");
    assert!(matches!(fs[1], Frame::Data { .. }));
    // ACK_EVERY frames in a row are acknowledged at once, without waiting.
    for i in 0..crate::mux::ACK_EVERY {
        p.send(C, ROOT_CLIENT_TO_SERVER, &[], &[i as u8]);
    }
    let out = p.transmit(C);
    p.deliver(S, out);
    let fs = frames(p.transmit(S));
    assert_eq!(fs, vec![Frame::Ack { received: 1 + crate::mux::ACK_EVERY }]);
}

/// Bulk data is acknowledged once `ACK_BYTES` arrived, in far fewer than
/// `ACK_EVERY` frames, so the sender frees what it keeps for replay without
/// waiting for `ACK_DELAY`; less than that waits as before.
#[test]
fn acks_go_alone_after_ack_bytes_of_payload() {
    let setup = Setup {
        chunk_size: 32 * 1024,
        max_frame: 64 * 1024,
        port_window: 1 << 20,
        conn_window: 4 << 20,
        send_buffer: 1 << 20,
        conn_send_buffer: 4 << 20,
        ..Setup::default()
    };
    let mut p = Pair::new(setup);
    p.budget = 1 << 20;
    let below = crate::mux::ACK_BYTES - 64 * 1024;
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &vec![1; below]);
    let out = p.transmit(C);
    p.deliver(S, out);
    assert!(p.transmit(S).is_empty(), "below ACK_BYTES a lone ack waits");
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &vec![2; 128 * 1024]);
    let out = p.transmit(C);
    let sent = p.client.stats().sent_seq;
    assert!(sent < crate::mux::ACK_EVERY, "{sent} frames");
    assert!(p.client.stats().replay_bytes > crate::mux::ACK_BYTES);
    p.deliver(S, out);
    let fs = frames(p.transmit(S));
    assert_eq!(fs, vec![Frame::Ack { received: sent }]);
    p.deliver(C, raw(&fs));
    assert_eq!(p.client.stats().replay_bytes, 0);
}
