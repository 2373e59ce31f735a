//! Time: pings keep a connection alive, silence ends it.

use super::*;

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
