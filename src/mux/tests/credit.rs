//! Credit: port and connection windows bound what is in flight, and reads
//! return them.

use super::*;

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
    match p.client.send(b, msg(&[], b"more"), SendLimit::Buffers) {
        Err(SendError::Full(_)) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    p.drive();
    // The opening messages took 22 bytes that are read but not yet granted
    // back (below a quarter window): the rest of the window is in flight.
    assert_eq!(p.server.conn_window_left, 0, "the whole connection window is used");
    assert_eq!(p.server.stats().recv_buffered + p.server.conn_unreported as usize, 512);
    assert!(p.server.stats().recv_buffered > 512 - 64);
    let per_port: Vec<usize> = ports.iter().map(|&port| p.server.ports[&port].rx().buffered).collect();
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
    let left = p.client.ports[&ROOT_CLIENT_TO_SERVER].tx().credit;
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

/// A read that returns credit asks for the driver, once; reads that return
/// none, and output the driver collects itself, do not.
#[test]
fn a_read_that_returns_credit_asks_for_the_driver_once() {
    let setup = Setup { chunk_size: 64, port_window: 1024, conn_window: 1 << 16, ..Setup::default() };
    let mut p = Pair::new(setup);
    // Eight chunks of 64 + CHUNK_OVERHEAD: 1024 of credit, the whole window.
    for i in 0..8 {
        p.send(C, ROOT_CLIENT_TO_SERVER, &[], &[i; 62]);
    }
    p.drive();
    assert!(!p.server.poll_wake(), "transmits collected everything");
    // A quarter of the window (256) is two chunks: the first read returns
    // nothing yet, the second queues a grant.
    assert!(matches!(p.server.pop_chunk(ROOT_CLIENT_TO_SERVER), Pop::Chunk(_)));
    assert!(!p.server.poll_wake(), "below the grant threshold");
    assert!(matches!(p.server.pop_chunk(ROOT_CLIENT_TO_SERVER), Pop::Chunk(_)));
    assert!(p.server.poll_wake(), "a credit grant waits for the driver");
    assert!(!p.server.poll_wake(), "the driver was told once");
    // The grant leaves with the next transmit and the sender resumes.
    assert!(frames(p.transmit(S)).iter().any(|f| matches!(f, Frame::Credit { port: ROOT_CLIENT_TO_SERVER, .. })));
    // A send that makes its port ready asks too; one on a port already
    // ready does not (the driver will cut it anyway).
    p.send(S, ROOT_SERVER_TO_CLIENT, &[], b"a");
    assert!(p.server.poll_wake());
    p.send(S, ROOT_SERVER_TO_CLIENT, &[], b"b");
    assert!(!p.server.poll_wake());
    p.drive();
    assert_eq!(p.recv(C, root_rx(C)).len(), 2);
    // Closing a port queues its terminal frame with a deadline the driver
    // must arm.
    let id = p.open_and_claim(S, End::Sender);
    assert!(!p.server.poll_wake());
    p.server.close_end(id);
    assert!(p.server.poll_wake());
    p.drive();
    assert!(!p.server.poll_wake() && !p.client.poll_wake());
}
