//! Ports: the root ports, opening, announcing, closing in every order, id
//! reuse, and the ports carried by messages that are dropped.

use super::*;

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

/// A port whose message is never sent (its encoding failed, or its send was
/// given up) is forgotten once that message is discarded and its handle is
/// gone, without a frame.
#[test]
fn a_port_never_announced_is_dropped_silently() {
    let mut p = Pair::new(Setup::default());
    let id = p.client.open_port(End::Receiver).unwrap();
    assert_eq!(p.client.stats().open_ports, 3);
    p.client.close_end(id);
    assert_eq!(p.client.stats().open_ports, 3, "its message may still be sent");
    p.client.discard_unsent(msg(&[PortEntry { port: id, end: End::Receiver }], b""));
    assert_eq!(p.client.stats().open_ports, 2);
    assert!(p.transmit(C).is_empty());
    assert_eq!(p.client.open_port(End::Receiver).unwrap(), id, "id reused");
}

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
    match p.client.send(id, msg(&[], b"too late"), SendLimit::Buffers) {
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

/// A receiver gone before any message reached it, its sender still open, is
/// news (an asker that gave up, whose handler should stop): its `Stop` goes
/// at once. Once a message arrived, a `Stop` only cleans up and waits to ride
/// along (each answered ask would otherwise cost a write of its own).
#[test]
fn a_receiver_gone_before_its_first_message_stops_at_once() {
    let mut p = Pair::new(Setup::default());
    let asked = p.open_and_claim(C, End::Sender);
    p.server.close_end(asked);
    assert!(p.server.poll_wake(), "the driver is woken for it");
    let fs = frames(p.transmit(S));
    assert!(fs.contains(&Frame::Stop { port: asked }), "{fs:?}");

    let answered = p.open_and_claim(C, End::Sender);
    p.send(C, answered, &[], b"the answer");
    p.drive();
    p.server.close_end(answered);
    assert!(p.transmit(S).is_empty(), "a lone Stop after a message waits to ride along, or for ACK_DELAY");
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
    assert_eq!(p.client.ports[&carrier].tx().credit, 0);
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
    assert_eq!(p.server.handle_timeout(now), Ok(Liveness::Alive));
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
    assert_eq!(p.client.handle_timeout(now), Ok(Liveness::Alive));
    let out = frames(p.transmit(C));
    assert_eq!(out.iter().filter(|f| f.is_reliable()).cloned().collect::<Vec<_>>(), vec![Frame::Fin { port: carrier }]);
    p.deliver(S, raw(&out));
    p.drive();
    assert_quiet_and_clean(&p);
}

/// The handle of a port goes before the message that will announce it is
/// queued: while it is encoded, or while it waits to be retried after
/// `Full`. The id stays taken, so a port opened meanwhile gets another, and
/// the retried message announces the right port, which then closes like any
/// other.
#[test]
fn closing_a_port_before_its_message_is_queued() {
    for kept in [End::Sender, End::Receiver] {
        let mut p = Pair::new(Setup { send_buffer: 64, ..Setup::default() });
        let root = ROOT_CLIENT_TO_SERVER;
        p.send(C, root, &[], &[0; 100]);
        let id = p.client.open_port(other_end(kept)).unwrap();
        let entry = PortEntry { port: id, end: other_end(kept) };
        let refused = match p.client.send(root, msg(&[entry], b"m"), SendLimit::Buffers) {
            Err(SendError::Full(m)) => m,
            other => panic!("expected Full, got {other:?}"),
        };
        p.client.close_end(id);
        let id2 = p.client.open_port(End::Sender).unwrap();
        assert_ne!(id, id2, "the id of a port still to be announced is not reused");
        p.client.discard_unsent(msg(&[PortEntry { port: id2, end: End::Sender }], b""));
        p.client.close_end(id2);
        p.drive();
        p.client.send(root, refused, SendLimit::Buffers).expect("retried");
        p.drive();
        let msgs = p.recv(S, root_rx(S));
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].ports, vec![entry]);
        // The server learns the client end is gone.
        match kept {
            End::Sender => assert!(matches!(p.server.pop_chunk(id), Pop::Finished)),
            End::Receiver => assert!(p.server.is_send_closed(id)),
        }
        p.server.close_end(id);
        p.drive();
        assert_quiet_and_clean(&p);
    }
}
