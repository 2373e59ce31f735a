//! Receiving: reassembly of long messages in segments, without pinning the
//! transport's read buffer, sized like the message before.

use super::*;

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
fn small_messages_held_unread_pin_their_port_buffer_not_the_read_buffer() {
    // Small payloads are read in place and copied into their port's buffer:
    // a run of them shares one allocation, and messages a port holds unread
    // keep neither the transport's read buffer nor another port's data.
    let mut p = Pair::new(Setup::default());
    let other = p.open_and_claim(C, End::Sender);
    for i in 0..10u8 {
        p.send(C, ROOT_CLIENT_TO_SERVER, &[], &[i; 40]);
        p.send(C, other, &[], &[100 + i; 40]);
    }
    let mut buf = p.transmit(C);
    let cap = buf.capacity();
    let now = p.now();
    p.server.handle_input(&mut buf, now).expect("valid input");
    assert!(buf.is_empty());
    assert!(buf.try_reclaim(cap), "no held message refers to the read buffer");
    let mut root = Vec::new();
    while let Pop::Chunk(c) = p.server.pop_chunk(ROOT_CLIENT_TO_SERVER) {
        root.push(c.data);
    }
    assert_eq!(root.len(), 10);
    for (i, data) in root.iter().enumerate() {
        assert_eq!(&data[..], &[i as u8; 40][..]);
    }
    // One allocation for the run: each message follows the one before.
    for pair in root.windows(2) {
        assert_eq!(pair[0].as_ptr().wrapping_add(40), pair[1].as_ptr(), "consecutive in one buffer");
    }
    assert_eq!(p.server.ports[&ROOT_CLIENT_TO_SERVER].rx().kept.capacity(), 0, "an emptied port lets its buffer go");
    assert!(p.server.ports[&other].rx().kept.capacity() > 0, "the other port still holds its messages");
    let theirs = p.recv_whole(S, other);
    assert_eq!(theirs, (0..10u8).map(|i| vec![100 + i; 40]).collect::<Vec<_>>());
}

#[test]
fn a_stream_of_long_messages_is_reassembled_in_one_buffer_each_after_the_first() {
    let setup = Setup { chunk_size: 1024, port_window: 1 << 16, conn_window: 1 << 18, ..Setup::default() };
    let mut p = Pair::new(setup);
    for seed in 0..3 {
        let body = pattern(10_000, seed);
        p.send(C, ROOT_CLIENT_TO_SERVER, &[], &body);
        p.drive();
        let last = recv_long(&mut p, S, ROOT_CLIENT_TO_SERVER);
        // The first message came in segments; the next ones fit a buffer
        // the size of the one before.
        assert_eq!(last.tail.is_empty(), seed > 0, "message {seed} in one segment");
        assert_eq!(last.into_message(), body);
    }
}

/// A message whose head says its length is reassembled in one buffer of
/// that size, however it compares with the message before: growing
/// messages need no segments, hence no joining copy.
#[test]
fn a_message_of_a_known_size_is_reassembled_in_one_buffer() {
    let setup = Setup { chunk_size: 1024, port_window: 1 << 18, conn_window: 1 << 19, ..Setup::default() };
    let mut p = Pair::new(setup);
    for (i, len) in [10_000, 20_000, 40_000, 35_000].into_iter().enumerate() {
        let body = pattern(len, i as u8);
        let mut m = BytesMut::new();
        crate::wire::encode_head(&[], None, Some(crate::wire::Sizes { len: len as u32, attached: 0 }), None, &mut m);
        m.extend_from_slice(&body);
        p.client.send(ROOT_CLIENT_TO_SERVER, OutMessage::new(m.freeze(), vec![]), SendLimit::Buffers).unwrap();
        p.drive();
        let last = recv_long(&mut p, S, ROOT_CLIENT_TO_SERVER);
        assert!(last.tail.is_empty(), "message {i} ({len} bytes) in one segment");
        assert_eq!(last.into_message(), body);
    }
    // Without its size, a message larger than the one before comes in
    // segments.
    p.send(C, ROOT_CLIENT_TO_SERVER, &[], &pattern(50_000, 9));
    p.drive();
    let last = recv_long(&mut p, S, ROOT_CLIENT_TO_SERVER);
    assert!(!last.tail.is_empty());
    assert_eq!(last.into_message(), pattern(50_000, 9));
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
        let port = p.server.ports[&ROOT_CLIENT_TO_SERVER].rx();
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
