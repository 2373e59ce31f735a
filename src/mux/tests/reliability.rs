//! Reliability: sequence numbers, when acknowledgements go, the replay
//! buffer and its bound, and resuming on a new transport.

use super::*;

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
    assert_eq!(p.server.handle_timeout(now), Ok(Liveness::Alive));
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
