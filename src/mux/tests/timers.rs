//! Time: pings keep a connection alive, silence ends it.

use super::*;

#[test]
fn silent_peer_times_out() {
    let setup = Setup::default();
    let mut p = Pair::new(setup);
    assert_eq!(p.client.poll_timeout(), p.epoch + setup.ping_interval);
    p.advance(setup.idle_timeout - Duration::from_millis(1));
    assert_eq!(p.client.handle_timeout(p.now()), Ok(Liveness::Alive));
    // The ping goes out but nothing comes back.
    assert!(frames(p.transmit(C)).iter().any(|f| matches!(f, Frame::Ping { .. })));
    p.advance(Duration::from_millis(1));
    // The silence is reported; the driver decides that it ends the session.
    assert_eq!(p.client.handle_timeout(p.now()), Ok(Liveness::Silent(setup.idle_timeout)));
    assert_eq!(p.client.time_out(setup.idle_timeout), MuxError::Timeout(setup.idle_timeout));
    assert_eq!(p.client.error(), Some(&MuxError::Timeout(setup.idle_timeout)));
    assert!(p.transmit(C).is_empty(), "a dead mux sends nothing");
    assert!(matches!(
        p.client.send(ROOT_CLIENT_TO_SERVER, msg(&[], b"x"), SendLimit::Buffers),
        Err(SendError::Closed(_))
    ));
    assert_eq!(p.client.handle_timeout(p.now()), Err(MuxError::Timeout(setup.idle_timeout)));
}

/// A silent peer is only reported: a session that will resume on another
/// transport keeps its mux, which still queues sends and, once resumed,
/// hears the peer again and delivers what was queued meanwhile.
#[test]
fn silence_is_reported_and_a_resuming_session_goes_on() {
    let setup = Setup::default();
    let mut p = Pair::new(setup);
    p.advance(setup.idle_timeout);
    let now = p.now();
    assert_eq!(p.client.handle_timeout(now), Ok(Liveness::Silent(setup.idle_timeout)));
    assert_eq!(p.client.error(), None, "nothing is recorded");
    p.send(C, root_tx(C), &[], b"queued while silent");
    // A new transport: neither side lost anything.
    let (c_seq, s_seq) = (p.client.received_seq(), p.server.received_seq());
    p.client.resume(s_seq, c_seq, now).expect("client resumes");
    p.server.resume(c_seq, s_seq, now).expect("server resumes");
    assert_eq!(p.client.handle_timeout(now), Ok(Liveness::Alive));
    p.drive();
    let got = p.recv(S, root_rx(S));
    assert_eq!(got, vec![Msg { ports: vec![], data: b"queued while silent".to_vec() }]);
    assert!(p.client.error().is_none() && p.server.error().is_none());
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
        assert_eq!(p.client.handle_timeout(now), Ok(Liveness::Alive), "alive");
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
    assert_eq!(p.server.handle_timeout(now), Ok(Liveness::Alive), "the server heard the pings");
    // Once the pongs stop, the timeout is the idle time after the last one.
    p.advance(setup.idle_timeout);
    assert_eq!(p.client.handle_timeout(p.now()), Ok(Liveness::Silent(setup.idle_timeout)));
}
