//! The handshake, bad input and configured limits, over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::{pair_with, within, Kind};
use serde::{Deserialize, Serialize};
use tether::codec::CodecKind;
use tether::{mpsc, Config, ConnectError, Connection, ConnectionError, ProtocolError, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(20);

/// A valid hello from a peer with `version` and `codec`, as raw bytes.
fn raw_hello(version: u16, codec: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"TETHER");
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&[0x11; 16]); // node id
    h.push(codec);
    h.push(0);
    h.extend_from_slice(&[0; 16]); // session
    h.extend_from_slice(&0u64.to_be_bytes());
    for v in [256 * 1024u32, 16 << 20, 1 << 20, 1 << 20, 64] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h.extend_from_slice(&0u16.to_be_bytes());
    h
}

/// Accepts one raw TCP peer that writes `bytes`, and returns what the
/// accepting side's handshake says.
async fn accept_from_raw(bytes: Vec<u8>, cfg: Config) -> Result<Connection, ConnectError> {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let res = Connection::accept(l.accept().await.unwrap().0, cfg).await;
    peer.abort();
    res
}

#[tokio::test]
async fn wrong_magic_version_and_codec_name_both_sides() {
    within(T, async {
        let err = accept_from_raw(b"GET / HTTP/1.1\r\n\r\n".to_vec(), Config::default()).await.unwrap_err();
        assert!(matches!(err, ConnectError::Wire(WireError::BadMagic { theirs }) if &theirs == b"GET / "), "{err}");

        // Version 1 peers predate authentication and capability tokens,
        // version 2 ones the node hello's tie-break, version 3 ones message
        // tags, version 4 ones the reason in a watch's answer, version 5
        // ones trace contexts, version 6 ones attached blobs, version 7
        // ones compression.
        for old in [1, 2, 3, 4, 5, 6, 7] {
            let err = accept_from_raw(raw_hello(old, 1), Config::default()).await.unwrap_err();
            assert!(
                matches!(err, ConnectError::Wire(WireError::VersionMismatch { ours: 8, theirs }) if theirs == old),
                "{err}"
            );
            assert!(err.to_string().contains(&format!("ours 8, theirs {old}")));
        }

        let err = accept_from_raw(raw_hello(8, 2), Config::default()).await.unwrap_err();
        assert!(matches!(err, ConnectError::CodecMismatch { ours: 1, theirs: 2 }), "{err}");
        assert_eq!(err.to_string(), "codec mismatch: ours postcard (1), theirs msgpack (2)");

        // The same between two real tether ends.
        let mut mp = Config::default();
        mp.codec = CodecKind::MessagePack;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) =
            tokio::join!(async { Connection::connect(TcpStream::connect(addr).await.unwrap(), mp).await }, async {
                Connection::accept(l.accept().await.unwrap().0, Config::default()).await
            },);
        assert!(matches!(c.unwrap_err(), ConnectError::CodecMismatch { ours: 2, theirs: 1 }));
        assert!(matches!(s.unwrap_err(), ConnectError::CodecMismatch { ours: 1, theirs: 2 }));
    })
    .await;
}

#[tokio::test]
async fn a_silent_peer_fails_the_handshake_after_the_timeout() {
    let mut cfg = Config::default();
    cfg.handshake_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = within(T, accept_from_raw(Vec::new(), cfg)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Timeout(d) if d == Duration::from_millis(300)), "{err}");
    // Not before the timeout, and not long after: two seconds of slack for
    // a loaded machine.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}");
    assert!(waited < Duration::from_millis(300) + Duration::from_secs(2), "gave up only after {waited:?}");
}

/// A peer that completes the handshake and then sends garbage loses its
/// own connection with a typed error; another connection of the same
/// process keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_only_the_offending_connection() {
    within(T, async {
        let (good_c, good_s) = pair_with(Kind::Tcp, Config::default(), Config::default()).await;
        let (gtx, _) = good_c.root::<u64, u64>().unwrap();
        let (_, mut grx) = good_s.root::<u64, u64>().unwrap();

        let mut garbage = raw_hello(8, 1);
        // A Data frame on a port nobody announced, then noise.
        garbage.extend_from_slice(&[1, 0x03, 0, 0, 0x10, 0x01, 0, 0, 0, 4, 1, 2, 3, 4]);
        garbage.extend((0..4096u32).map(|i| (i * 7919 % 251) as u8));
        let bad = accept_from_raw(garbage, Config::default()).await.unwrap();
        let (_, mut bad_rx) = bad.root::<u64, u64>().unwrap();
        let got = bad_rx.recv().await;
        assert!(
            matches!(
                got,
                Err(tether::RecvError::Connection(ConnectionError::Protocol(ProtocolError::UnknownPort(0x1001))))
            ),
            "{got:?}"
        );

        for n in 0..100 {
            gtx.send(n).await.unwrap();
            assert_eq!(grx.recv().await.unwrap(), Some(n));
        }
        assert!(good_c.error().is_none() && good_s.error().is_none());
    })
    .await;
}

#[derive(Serialize, Deserialize, Debug)]
enum Msg {
    Big(serde_bytes::ByteBuf),
    Ends(Vec<mpsc::Sender<u8>>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_with_typed_errors() {
    within(T, async {
        let mut small = Config::default();
        small.max_message = 64 * 1024;
        small.max_ports = 8;
        let (c, s) = pair_with(Kind::Tcp, small.clone(), small).await;
        let (tx, _) = c.root::<Msg, Msg>().unwrap();
        let (_, mut rx) = s.root::<Msg, Msg>().unwrap();

        // A message over the peer's limit is refused before it is sent.
        let err = tx.send(Msg::Big(vec![0; 100_000].into())).await.unwrap_err();
        assert!(matches!(err, mpsc::SendError::TooLarge { size, max: 65536, .. } if size > 100_000), "{err:?}");
        tx.send(Msg::Big(vec![1; 1000].into())).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), Some(Msg::Big(b)) if b.len() == 1000));

        // More channel ends than the peer allows ports: the encode fails,
        // and the ports taken so far are given back.
        let before = c.stats().open_ports;
        let many: Vec<mpsc::Sender<u8>> = (0..10).map(|_| mpsc::channel::<u8>(1).0).collect();
        let err = tx.send(Msg::Ends(many)).await.unwrap_err();
        // The error names the message type and keeps the text of what went
        // wrong (postcard alone would say "Serde Serialization Error").
        match &err {
            mpsc::SendError::Encode { error: tether::codec::CodecError::Encode { type_name, message }, .. } => {
                assert!(type_name.ends_with("Msg"), "{type_name}");
                assert!(message.contains("limit of 8 open ports"), "{message}");
            }
            other => panic!("expected an encode error, got {other:?}"),
        }
        assert_eq!(c.stats().open_ports, before, "no port leaked by the failed encode");

        // Within the limit it works.
        let few: Vec<mpsc::Sender<u8>> = (0..4).map(|_| mpsc::channel::<u8>(1).0).collect();
        tx.send(Msg::Ends(few)).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), Some(Msg::Ends(v)) if v.len() == 4));
    })
    .await;
}

/// A message carries at most 8,191 channel ends (the port table's count
/// has 13 bits; its top bits say a trace context, sizes and a packing
/// follow): one more fails to encode, with nothing sent and no port kept,
/// and the most goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_carries_at_most_8191_channel_ends() {
    within(T, async {
        let mut roomy = Config::default();
        roomy.max_ports = 70_000;
        roomy.max_message = 1 << 20;
        let (c, s) = pair_with(Kind::Tcp, roomy.clone(), roomy).await;
        // Both root ends kept: a dropped one would close its port meanwhile.
        let (tx, _c_rx) = c.root::<Msg, Msg>().unwrap();
        let (_, mut rx) = s.root::<Msg, Msg>().unwrap();
        let ends = |n| (0..n).map(|_| mpsc::channel::<u8>(1).0).collect::<Vec<_>>();
        let before = c.stats().open_ports;
        let err = tx.send(Msg::Ends(ends(8_192))).await.unwrap_err();
        match &err {
            mpsc::SendError::Encode { error: tether::codec::CodecError::Encode { message, .. }, .. } => {
                assert!(message.contains("too many channel ends"), "{message}");
            }
            other => panic!("expected an encode error, got {other:?}"),
        }
        assert_eq!(c.stats().open_ports, before, "no port kept by the failed encode");

        tx.send(Msg::Ends(ends(8_191))).await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), Some(Msg::Ends(v)) if v.len() == 8_191));
    })
    .await;
}

/// MessagePack writes field names, so an older and a newer version of a
/// message struct interoperate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_lets_old_and_new_structs_interoperate() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        id: u32,
        name: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        id: u32,
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }
    within(T, async {
        let mut mp = Config::default();
        mp.codec = CodecKind::MessagePack;
        let (old, new) = pair_with(Kind::Tcp, mp.clone(), mp).await;
        let (old_tx, mut old_rx) = old.root::<V1, V1>().unwrap();
        let (new_tx, mut new_rx) = new.root::<V2, V2>().unwrap();
        old_tx.send(V1 { id: 1, name: "old".into() }).await.unwrap();
        assert_eq!(new_rx.recv().await.unwrap().unwrap(), V2 { id: 1, name: "old".into(), tags: vec![] });
        new_tx.send(V2 { id: 2, name: "new".into(), tags: vec!["x".into()] }).await.unwrap();
        assert_eq!(old_rx.recv().await.unwrap().unwrap(), V1 { id: 2, name: "new".into() });
    })
    .await;
}

/// A configuration is checked once, where it enters: `Node::new` and
/// `Acceptor::new` refuse a bad one with the reason, so no connect or accept
/// finds it later.
#[test]
fn a_bad_configuration_is_refused_where_it_enters() {
    let mut cfg = Config::default();
    cfg.handshake_timeout = Duration::ZERO;
    let err = tether::Node::new(None, cfg.clone()).unwrap_err();
    assert_eq!(err.to_string(), "invalid configuration: handshake_timeout must not be zero");
    let err = tether::Acceptor::new(cfg).unwrap_err();
    assert_eq!(err.to_string(), "invalid configuration: handshake_timeout must not be zero");
}
