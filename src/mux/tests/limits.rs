//! Protocol violations and limits: every frame a peer may not send is
//! refused with the error that names it, and the error is final.

use super::*;

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
        p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], &[0; 120]), SendLimit::Buffers),
        Err(SendError::TooLarge { max: 100, .. })
    ));
}

/// A message whose head says how long it is must be that long: chunks
/// that reach past it, or a last chunk short of it, end the connection, and
/// a length beyond `max_message` is refused at the first chunk.
#[test]
fn a_message_longer_or_shorter_than_its_head_said_is_refused() {
    let port = ROOT_CLIENT_TO_SERVER;
    let sized = |len: u32, payload: &[u8], last: bool| {
        let mut b = BytesMut::new();
        crate::wire::encode_head(&[], None, Some(crate::wire::Sizes { len, attached: 0 }), None, &mut b);
        b.put_slice(payload);
        Frame::Data { port, flags: FLAG_FIRST | if last { FLAG_LAST } else { 0 }, payload: b.freeze() }
    };
    let rest = |n: usize, last: bool| Frame::Data {
        port,
        flags: if last { FLAG_LAST } else { 0 },
        payload: Bytes::from(vec![0; n]),
    };
    let mismatch = |said, got| MuxError::LengthMismatch { port, said, got };
    assert_eq!(violation(Setup::default(), &[sized(100, &[0; 60], false), rest(41, false)]), mismatch(100, 101));
    assert_eq!(violation(Setup::default(), &[sized(100, &[0; 60], false), rest(39, true)]), mismatch(100, 99));
    assert_eq!(violation(Setup::default(), &[sized(100, &[0; 101], false)]), mismatch(100, 101));
    assert_eq!(violation(Setup::default(), &[sized(100, &[0; 99], true)]), mismatch(100, 99));
    let setup = Setup { max_message: 1000, ..Setup::default() };
    assert_eq!(violation(setup, &[sized(1001, &[0; 10], false)]), MuxError::MessageTooLarge { port, max: 1000 });
    // Exactly as said: accepted.
    let mut p = Pair::new(Setup::default());
    p.deliver(S, raw(&[sized(100, &[0; 60], false), rest(40, true)]));
    assert_eq!(p.recv(S, port), vec![Msg { ports: vec![], data: vec![0; 100] }]);
}

/// A packed message is checked at its first chunk, before anything of it
/// is buffered: its algorithm must be one we announced, and its size once
/// unpacked within our `max_message`, also as its chunks come in.
#[test]
fn a_packed_message_needs_an_accepted_algorithm_and_fits_max_message_unpacked() {
    use crate::wire::{Packing, ACCEPTS_LZ4, ACCEPTS_ZSTD};
    let port = ROOT_CLIENT_TO_SERVER;
    let packed_as = |algorithm: u8, plain: u32, packed: u32, payload: &[u8], last: bool| {
        let packing = Packing { algorithm, plain, packed };
        let mut b = BytesMut::new();
        crate::wire::encode_head(&[], None, None, Some(packing), &mut b);
        b.put_slice(payload);
        Frame::Data { port, flags: FLAG_FIRST | if last { FLAG_LAST } else { 0 }, payload: b.freeze() }
    };
    let packed = |algorithm: u8, plain: u32, payload: &[u8], last: bool| {
        packed_as(algorithm, plain, payload.len() as u32, payload, last)
    };
    let unaccepted = |algorithm| MuxError::UnacceptedCompression { port, algorithm };
    let off = Setup { accepts: 0, ..Setup::default() };
    assert_eq!(violation(off, &[packed(ACCEPTS_LZ4, 100, &[0; 10], true)]), unaccepted(ACCEPTS_LZ4));
    let zstd_only = Setup { accepts: ACCEPTS_ZSTD, ..Setup::default() };
    assert_eq!(violation(zstd_only, &[packed(ACCEPTS_LZ4, 100, &[0; 10], true)]), unaccepted(ACCEPTS_LZ4));
    for unknown in [0, 3, 4, 0x80] {
        assert_eq!(violation(Setup::default(), &[packed(unknown, 100, &[0; 10], true)]), unaccepted(unknown));
    }
    let small = Setup { max_message: 1000, ..Setup::default() };
    let too_large = MuxError::MessageTooLarge { port, max: 1000 };
    assert_eq!(violation(small, &[packed(ACCEPTS_ZSTD, 1001, &[0; 10], false)]), too_large);
    // From its head alone, though the packed part has yet to come.
    assert_eq!(violation(small, &[packed_as(ACCEPTS_ZSTD, 1001, 5000, &[0; 10], false)]), too_large);
    // 10 bytes that unpack to 900, then 200 as sent: 1,100 once unpacked.
    let rest = Frame::Data { port, flags: FLAG_LAST, payload: Bytes::from(vec![0; 200]) };
    assert_eq!(violation(small, &[packed(ACCEPTS_ZSTD, 900, &[0; 10], false), rest]), too_large);
    // Accepted, it is read as sent: unpacking is the reader's.
    let mut p = Pair::new(small);
    let rest = Frame::Data { port, flags: FLAG_LAST, payload: Bytes::from(vec![1; 90]) };
    p.deliver(S, raw(&[packed(ACCEPTS_ZSTD, 900, &[7; 10], false), rest]));
    let Pop::Chunk(first) = p.server.pop_chunk(port) else { panic!("the first chunk") };
    assert_eq!(first.packing, Some(Packing { algorithm: ACCEPTS_ZSTD, plain: 900, packed: 10 }));
    let Pop::Chunk(last) = p.server.pop_chunk(port) else { panic!("the last chunk") };
    assert_eq!(last.into_message().len(), 100);
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
            let queued = p.server.ports[&root].rx().chunks.len() as u64;
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
            let queued: u64 = ports.iter().map(|id| p.server.ports[id].rx().chunks.len() as u64).sum();
            assert_eq!(queued, accepted);
            assert!(queued * CHUNK_OVERHEAD <= window, "{queued} chunks queued");
            assert!(ports.iter().all(|id| (p.server.ports[id].rx().chunks.len() as u64) * CHUNK_OVERHEAD < window));
        }
    };
    assert_eq!(err, MuxError::CreditExceeded(0));
    // The announcement (12-byte table) and three first chunks (2-byte
    // tables) carry 18 bytes of payload; every chunk costs CHUNK_OVERHEAD.
    assert_eq!(accepted, (window - 18) / CHUNK_OVERHEAD);
}
