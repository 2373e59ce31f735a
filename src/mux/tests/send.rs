//! Sending: chunking, round robin, control frames ahead of data, the send
//! buffers and who is woken when they drain, and `GoAway` after queued data.

use super::*;

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
        match p.client.send(port, msg(&[], &[7]), SendLimit::Buffers) {
            Ok(()) => accepted += 1,
            Err(SendError::Full(m)) => break m,
            Err(e) => panic!("{e:?}"),
        }
        assert!(accepted <= 10, "more than the buffer holds");
    };
    assert_eq!(accepted, 10);
    assert_eq!(p.client.stats().send_queued, 10 * (3 + MSG_OVERHEAD));
    // The refusal is counted, and only it.
    assert_eq!((p.client.stats().totals.full, p.client.stats().totals.messages_out), (1, 10));
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
    match p.client.send(port, msg(&[], &[3; 198]), SendLimit::Buffers) {
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
    assert!(matches!(p.client.send(root, msg(&[], b"x"), SendLimit::Buffers), Err(SendError::Full(_))));
    assert!(matches!(p.client.send(a, msg(&[], b"x"), SendLimit::Buffers), Err(SendError::Full(_))));
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
    match p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x"), SendLimit::Buffers) {
        Err(SendError::Full(_)) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    for _ in 0..3 {
        assert!(matches!(
            p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x"), SendLimit::Buffers),
            Err(SendError::Full(_))
        ));
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

#[test]
fn graceful_close_sends_goaway_after_queued_data() {
    let mut p = Pair::new(Setup { chunk_size: 64, ..Setup::default() });
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &pattern(500, 2));
    p.client.close(3, "done");
    assert!(matches!(
        p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x"), SendLimit::Buffers),
        Err(SendError::Closed(_))
    ));
    let out = p.transmit(C);
    let fs = frames(out.clone());
    assert_eq!(fs.last(), Some(&Frame::GoAway { code: 3, reason: "done".into() }));
    assert!(p.client.is_closed());
    let now = p.now();
    let err = p.server.handle_input(&mut out.clone(), now).unwrap_err();
    assert_eq!(err, MuxError::PeerClosed { code: 3, reason: "done".into() });
    assert_eq!(p.recv_partial(S, ROOT_CLIENT_TO_SERVER), pattern(500, 2), "data before the GoAway is kept");
}

/// `SendLimit::MessageOnly` skips the port's and the connection's send
/// buffers, which the caller bounds itself, but not the message size limit;
/// it leaves the refused port's wake-up bookkeeping alone.
#[test]
fn a_send_limited_by_message_size_only_ignores_full_buffers() {
    let setup = Setup { send_buffer: 256, conn_send_buffer: 512, max_message: 4096, ..Setup::default() };
    let mut p = Pair::new(setup);
    let a = p.open_and_claim(C, End::Sender);
    p.send(C, a, &[], &[1; 600]);
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &[2; 300]);
    // Both buffers are full: the port's (300 > 256) and the connection's.
    assert!(matches!(
        p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x"), SendLimit::Buffers),
        Err(SendError::Full(_))
    ));
    let blocked = p.client.conn_blocked.clone();
    p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"reply"), SendLimit::MessageOnly).expect("not bounded by buffers");
    assert_eq!(p.client.conn_blocked, blocked);
    match p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], &[0; 4097]), SendLimit::MessageOnly) {
        Err(SendError::TooLarge { max: 4096, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    p.drive();
    let got: Vec<_> = p.recv(S, root_rx(S)).into_iter().map(|m| m.data).collect();
    assert_eq!(got, vec![vec![2; 300], b"reply".to_vec()]);
}

/// A message in segments (its blobs, each in its own buffer) is cut into
/// chunks within each segment, arrives as one message, and counts against
/// the send buffers as a whole: also when the peer stops reading halfway.
#[test]
fn a_message_in_segments_leaves_segment_by_segment_and_counts_whole() {
    let setup = Setup { chunk_size: 64, ..Setup::default() };
    let mut p = Pair::new(setup);
    let segmented = || {
        let more = vec![pattern(100, 2).into(), Bytes::new(), pattern(10, 3).into(), pattern(200, 4).into()];
        msg(&[], &pattern(30, 1)).with_more(more)
    };
    let whole: Vec<u8> = [&pattern(30, 1)[..], &pattern(100, 2), &pattern(10, 3), &pattern(200, 4)].concat();
    p.client.send(ROOT_CLIENT_TO_SERVER, segmented(), SendLimit::Buffers).unwrap();
    assert_eq!(p.client.stats().send_queued, 2 + whole.len() + MSG_OVERHEAD, "its head, its bytes, its overhead");
    let fs = frames(p.transmit(C));
    let chunks: Vec<_> = fs.iter().filter_map(|f| f.data_payload().map(Bytes::len)).collect();
    assert_eq!(chunks, vec![32, 64, 36, 10, 64, 64, 64, 8], "no chunk spans two segments");
    assert_eq!(p.client.stats().send_queued, 0);
    p.deliver(S, raw(&fs));
    p.drive();
    assert_eq!(p.recv(S, ROOT_CLIENT_TO_SERVER), vec![Msg { ports: vec![], data: whole.clone() }]);

    // Halfway through, the reader goes: what was left of it is uncounted.
    let b = p.open_and_claim(C, End::Sender);
    p.budget = 100;
    p.client.send(b, segmented(), SendLimit::Buffers).unwrap();
    let fs = frames(p.transmit(C));
    assert!(fs.iter().any(|f| matches!(f, Frame::Data { port, .. } if *port == b)), "some of it left");
    assert!(p.client.stats().send_queued > 0, "and some did not");
    p.deliver(S, raw(&fs));
    p.server.close_end(b);
    // The Stop goes alone once acknowledgements would.
    p.advance(crate::mux::ACK_DELAY);
    let now = p.now();
    assert_eq!(p.server.handle_timeout(now), Ok(Liveness::Alive));
    let stop = p.transmit(S);
    assert!(frames(stop.clone()).contains(&Frame::Stop { port: b }));
    p.deliver(C, stop);
    assert_eq!(p.client.stats().send_queued, 0, "the rest of the message is uncounted");
    p.client.close_end(b);
    p.drive();
    assert_quiet_and_clean(&p);
}
