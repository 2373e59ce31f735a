//! Security over real TCP: cookie authentication, capability refs, the
//! listener's and the asker's limits, and handshake floods.
//!
//! The other limits are tested where their layer is: the handshake timeout,
//! maximum message size and maximum ports per connection in
//! `tests/handshake_and_limits.rs`, decoder limits in `tests/decoder_props.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{within, Recorder, TaskMailbox};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tether::{
    Acceptor, AskError, Config, ConnectError, Connection, Cookie, Node, NodeId, RemoteError, RemoteRef, ReplyPort,
    TellError, WatchEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const T: Duration = Duration::from_secs(20);
const ASK: Duration = Duration::from_secs(5);
const SECRET: &str = "the cluster secret: 32 bytes ok!";
const OTHER_SECRET: &str = "another secret, just as long....";

fn with_cookie(secret: &str) -> Config {
    let mut cfg = Config::default();
    cfg.cookie = Some(Cookie::new(secret));
    cfg
}

#[derive(Serialize, Deserialize, Debug)]
struct Ping(u32, ReplyPort<u32>);

/// Exports an actor answering `Ping(n)` with `n + 1`; counts the pings.
fn serve_pings(node: &Node, name: Option<&str>) -> (RemoteRef<Ping>, Arc<AtomicUsize>) {
    let (tx, mut rx) = unbounded_channel::<Ping>();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Some(Ping(n, reply)) = rx.recv().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = reply.send(n + 1);
        }
    });
    (node.export(name, TaskMailbox(tx)).unwrap(), count)
}

async fn ping(r: &RemoteRef<Ping>, n: u32) -> Result<u32, AskError> {
    r.ask(|reply| Ping(n, reply), ASK).await
}

// ----- cookie authentication ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_cookie_connect_and_the_secret_never_crosses_the_wire() {
    within(T, async {
        let a = Node::new(Some("a"), with_cookie(SECRET)).unwrap();
        let b = Node::new(Some("b"), with_cookie(SECRET)).unwrap();
        let addr = b.listen("127.0.0.1:0").await.unwrap();
        serve_pings(&b, Some("ping"));
        let wire = Recorder::start(addr).await;
        let b_id = a.connect(&wire.addr.to_string()).await.unwrap();
        let r = a.lookup::<Ping>(b_id, "ping").await.unwrap();
        assert_eq!(ping(&r, 41).await.unwrap(), 42);
        assert!(wire.len() > 0, "the traffic went through the recorder");
        assert!(!wire.saw(SECRET.as_bytes()), "the cookie itself crossed the wire");
    })
    .await;
}

/// Runs a dialer and an acceptor with the given configurations over TCP.
async fn handshake(client: Config, server: Config) -> (Result<Connection, ConnectError>, Result<(), ConnectError>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(server).unwrap();
    let (c, s) =
        tokio::join!(async { Connection::connect(TcpStream::connect(addr).await.unwrap(), client).await }, async {
            acceptor.accept(listener.accept().await.unwrap().0).await.map(drop)
        });
    (c, s)
}

#[tokio::test]
async fn a_wrong_cookie_fails_on_both_sides_with_a_typed_error() {
    within(T, async {
        let (client, server) = handshake(with_cookie(OTHER_SECRET), with_cookie(SECRET)).await;
        assert!(matches!(client.as_ref().map_err(ConnectError::cause), Err(ConnectError::AuthFailed)), "{client:?}");
        assert!(matches!(server.as_ref().map_err(ConnectError::cause), Err(ConnectError::AuthFailed)), "{server:?}");
        // And the same cookie passes, on the very same path.
        let (client, server) = handshake(with_cookie(SECRET), with_cookie(SECRET)).await;
        assert!(client.is_ok() && server.is_ok(), "{client:?} {server:?}");
    })
    .await;
}

#[tokio::test]
async fn a_cookie_on_one_side_only_is_a_mismatch_naming_both() {
    within(T, async {
        let (client, server) = handshake(with_cookie(SECRET), Config::default()).await;
        assert!(
            matches!(
                client.as_ref().map_err(ConnectError::cause),
                Err(ConnectError::AuthMismatch { ours: "cookie", theirs: "none" })
            ),
            "{client:?}"
        );
        assert!(
            matches!(
                server.as_ref().map_err(ConnectError::cause),
                Err(ConnectError::AuthMismatch { ours: "none", theirs: "cookie" })
            ),
            "{server:?}"
        );
        let (client, server) = handshake(Config::default(), with_cookie(SECRET)).await;
        assert!(
            matches!(
                client.as_ref().map_err(ConnectError::cause),
                Err(ConnectError::AuthMismatch { ours: "none", theirs: "cookie" })
            ),
            "{client:?}"
        );
        assert!(
            matches!(
                server.as_ref().map_err(ConnectError::cause),
                Err(ConnectError::AuthMismatch { ours: "cookie", theirs: "none" })
            ),
            "{server:?}"
        );
    })
    .await;
}

#[test]
fn a_short_cookie_is_a_configuration_error() {
    let err = with_cookie("too short").validate().unwrap_err();
    assert_eq!(err.to_string(), "invalid configuration: cookie must be at least 16 bytes");
    assert!(with_cookie(SECRET).validate().is_ok());
}

/// A hello as the protocol lays it out (docs/PROTOCOL.md), written by hand
/// as an intruder would: it claims `node`, asks to resume `session` (nil for
/// a new one) and offers a cookie nonce.
fn forged_hello(node: NodeId, session: [u8; 16], nonce: [u8; 32]) -> Vec<u8> {
    let cfg = Config::default();
    let mut h = Vec::new();
    h.extend_from_slice(b"TETHER");
    h.extend_from_slice(&8u16.to_be_bytes()); // version (docs/PROTOCOL.md)
    h.extend_from_slice(&1u16.to_be_bytes()); // flags: resumable
    h.extend_from_slice(node.0.as_bytes());
    h.push(1); // postcard
    h.push(0); // reserved
    h.extend_from_slice(&session);
    h.extend_from_slice(&0u64.to_be_bytes());
    for v in [cfg.port_window, cfg.conn_window, cfg.max_frame, cfg.max_message, cfg.max_ports] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h.extend_from_slice(&33u16.to_be_bytes());
    h.push(1); // scheme: cookie
    h.extend_from_slice(&nonce);
    h
}

/// Length of a hello offering a cookie.
const HELLO_LEN: usize = 74 + 33;

/// Sends `hello` and a made-up proof to `addr`; returns the acceptor's
/// hello. The acceptor must answer the proof with 32 zero bytes (its
/// refusal) and hang up.
async fn intrude(addr: &str, hello: &[u8]) -> Vec<u8> {
    let mut intruder = TcpStream::connect(addr).await.unwrap();
    intruder.write_all(hello).await.unwrap();
    let mut answer = vec![0u8; HELLO_LEN];
    intruder.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..6], b"TETHER");
    intruder.write_all(&[0x5a; 32]).await.unwrap();
    let mut refusal = [1u8; 32];
    intruder.read_exact(&mut refusal).await.unwrap();
    assert_eq!(refusal, [0; 32], "the acceptor refuses with a proof that cannot check out");
    let mut rest = [0u8; 1];
    let closed = intruder.read(&mut rest).await;
    assert!(matches!(closed, Ok(0)), "the acceptor hung up: {closed:?}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_cannot_disturb_a_session_even_claiming_its_node() {
    within(T, async {
        let mut cfg = with_cookie(SECRET);
        cfg.reconnect.enabled = true; // so that b keeps a's session for resumption
        let a = Node::new(Some("a"), cfg).unwrap();
        let b = Node::new(Some("b"), with_cookie(SECRET)).unwrap();
        let b_addr = b.listen("127.0.0.1:0").await.unwrap();
        let wire = Recorder::start(b_addr).await;
        let b_id = a.connect(&wire.addr.to_string()).await.unwrap();
        serve_pings(&b, Some("ping"));
        serve_pings(&a, Some("ping"));
        let to_b = a.lookup::<Ping>(b_id, "ping").await.unwrap();
        let to_a = b.lookup::<Ping>(a.id(), "ping").await.unwrap();
        assert_eq!(ping(&to_b, 1).await.unwrap(), 2);
        let (conn_a, conn_b) = (a.connection(b_id).unwrap(), b.connection(a.id()).unwrap());
        let (mut events_a, mut events_b) = (conn_a.events(), conn_b.events());
        // The session b gave a, as an eavesdropper reads it off b's hello.
        let session: [u8; 16] = wire.sent_back()[28..44].try_into().unwrap();
        assert_ne!(session, [0; 16]);

        // A node with the wrong cookie and the same name as `a`.
        let mallory = Node::new(Some("a"), with_cookie(OTHER_SECRET)).unwrap();
        let refused = mallory.connect(&b_addr.to_string()).await;
        assert!(matches!(refused.as_ref().map_err(ConnectError::cause), Err(ConnectError::AuthFailed)), "{refused:?}");

        // Raw bytes claiming `a`'s node id, as a new connection and as a
        // resumption of a's very session, answering with made-up proofs.
        let b_addr = b_addr.to_string();
        intrude(&b_addr, &forged_hello(a.id(), [0; 16], [7; 32])).await;
        let answer = intrude(&b_addr, &forged_hello(a.id(), session, [8; 32])).await;
        assert_eq!(&answer[28..44], &session, "b recognised the session, yet did not hand it over");

        // Nothing happened to the real session, in either direction.
        assert_eq!(ping(&to_b, 2).await.unwrap(), 3);
        assert_eq!(ping(&to_a, 3).await.unwrap(), 4);
        assert!(conn_a.error().is_none() && conn_b.error().is_none());
        use tokio::sync::broadcast::error::TryRecvError;
        for events in [&mut events_a, &mut events_b] {
            let got = events.try_recv();
            assert!(matches!(got, Err(TryRecvError::Empty)), "no connection event at all: {got:?}");
        }
        assert_eq!(b.peers(), vec![a.id()]);
    })
    .await;
}

// ----- capabilities -------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Secret(u32);

/// A ref's wire form (docs/PROTOCOL.md): owner node, actor id, token, hops.
#[derive(Serialize, Deserialize, Clone)]
struct RefWire {
    node: NodeId,
    actor: u64,
    token: [u8; 16],
    hops: Vec<NodeId>,
}

impl RefWire {
    fn of<M: tether::RemoteMessage>(r: &RemoteRef<M>) -> RefWire {
        postcard::from_bytes(&postcard::to_allocvec(r).unwrap()).unwrap()
    }
}

/// What an intruder sends: a real ref, or one it made up. Received, both
/// decode as a `RemoteRef`.
enum Target {
    Real(RemoteRef<Secret>),
    Made(RefWire),
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Target::Real(r) => r.serialize(s),
            Target::Made(w) => w.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RemoteRef::deserialize(d).map(Target::Real)
    }
}

impl Target {
    fn into_ref(self) -> RemoteRef<Secret> {
        match self {
            Target::Real(r) => r,
            Target::Made(_) => panic!("made-up refs only exist before they are sent"),
        }
    }
}

/// An actor taking one message type; the test reads what it receives.
fn inbox<M: tether::RemoteMessage>(node: &Node, name: &str) -> (RemoteRef<M>, UnboundedReceiver<M>) {
    let (tx, rx) = unbounded_channel();
    (node.export(Some(name), TaskMailbox(tx)).unwrap(), rx)
}

async fn connect(from: &Node, to: &Node) -> NodeId {
    let addr = to.listen("127.0.0.1:0").await.unwrap();
    from.connect(&addr.to_string()).await.unwrap()
}

async fn assert_forbidden(r: &RemoteRef<Secret>, at: &str) {
    match r.tell(Secret(666)).await {
        Err(TellError::Unreachable { error: RemoteError::Forbidden, msg }) => assert_eq!(msg, Secret(666)),
        other => panic!("tell through a made-up ref at {at}: {other:?}"),
    }
    // Once refused, try_tell knows it too (rather than saying Full forever).
    match r.try_tell(Secret(666)) {
        Err(TellError::Unreachable { error: RemoteError::Forbidden, msg }) => assert_eq!(msg, Secret(666)),
        other => panic!("tell through a made-up ref at {at}: {other:?}"),
    }
    match r.ask(|_: ReplyPort<()>| Secret(667), ASK).await {
        Err(AskError::Unreachable(RemoteError::Forbidden)) => {}
        other => panic!("ask through a made-up ref at {at}: {other:?}"),
    }
    assert_eq!(r.monitor().await, WatchEvent::Forbidden, "monitor through a made-up ref at {at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_refs_reach_nothing() {
    within(T, async {
        let owner = Node::new(Some("owner"), Config::default()).unwrap();
        let mallory = Node::new(Some("mallory"), Config::default()).unwrap();
        let carol = Node::new(Some("carol"), Config::default()).unwrap();
        let owner_id = connect(&mallory, &owner).await;
        let carol_id = connect(&mallory, &carol).await;
        connect(&carol, &owner).await;

        let (_public, mut public_rx) = inbox::<Secret>(&owner, "public");
        let (secret, mut secret_rx) = inbox::<Secret>(&owner, "secret");
        let (_, mut owner_sink) = inbox::<Target>(&owner, "sink");
        let (_, mut carol_sink) = inbox::<Target>(&carol, "sink");

        // Mallory holds a real capability (the public actor's) and knows the
        // secret actor's id exactly: the strongest guess there is.
        let granted = mallory.lookup::<Secret>(owner_id, "public").await.unwrap();
        let real = RefWire::of(&granted);
        let secret_id = secret.id().id;
        let made = [
            RefWire { actor: secret_id, ..real.clone() }, // another actor's token
            RefWire { actor: secret_id, token: [0; 16], ..real.clone() }, // no token at all
        ];
        for sink in
            [mallory.lookup::<Target>(carol_id, "sink").await.unwrap(), mallory.lookup(owner_id, "sink").await.unwrap()]
        {
            for m in made.clone() {
                sink.tell(Target::Made(m)).await.unwrap();
            }
        }

        // Received by a third node, which asks the owner; and by the owner itself.
        for (at, sink) in [("carol", &mut carol_sink), ("owner", &mut owner_sink)] {
            for _ in &made {
                let forged = sink.recv().await.unwrap().into_ref();
                assert_eq!(forged.id(), secret.id(), "the id is the secret actor's");
                assert_ne!(forged, secret, "but the ref is not the real one");
                assert_forbidden(&forged, at).await;
            }
        }

        // Real refs still work, wherever they travel: the owner hands the
        // secret actor's ref to carol, who uses it.
        let to_carol = owner.lookup::<Target>(carol.id(), "sink").await.unwrap();
        to_carol.tell(Target::Real(secret.clone())).await.unwrap();
        let handed = carol_sink.recv().await.unwrap().into_ref();
        assert_eq!(handed, secret);
        handed.tell(Secret(1)).await.unwrap();
        granted.tell(Secret(2)).await.unwrap();
        assert_eq!(secret_rx.recv().await, Some(Secret(1)));
        assert_eq!(public_rx.recv().await, Some(Secret(2)));
        // The forged tells and asks above were refused before anything was
        // sent, so nothing else is (or will be) queued for either actor.
        use tokio::sync::mpsc::error::TryRecvError;
        let got = secret_rx.try_recv();
        assert!(
            matches!(got, Err(TryRecvError::Empty)),
            "the secret actor got something through a made-up ref: {got:?}"
        );
        let got = public_rx.try_recv();
        assert!(matches!(got, Err(TryRecvError::Empty)), "{got:?}");
    })
    .await;
}

// ----- limits --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_refuses_until_a_connection_ends() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.max_connections = 2;
        let server = Node::new(Some("server"), cfg).unwrap();
        let addr = server.listen("127.0.0.1:0").await.unwrap().to_string();
        let (x, y, z) = (Node::default(), Node::default(), Node::default());
        let server_id = x.connect(&addr).await.unwrap();
        y.connect(&addr).await.unwrap();
        let refused = z.connect(&addr).await;
        assert!(
            matches!(refused.as_ref().map_err(ConnectError::cause), Err(ConnectError::Eof | ConnectError::Io(_))),
            "{refused:?}"
        );
        x.connection(server_id).unwrap().close().await;
        // The listener frees the slot when it sees the connection end, which
        // nothing announces to `z`: try until it gets in.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match z.connect(&addr).await {
                Ok(id) => break assert_eq!(id, server_id),
                Err(e) if attempts < 200 => {
                    tracing::debug!(error = %e, "still full");
                    // Paces the retries.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("never admitted after a connection ended: {e}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_asks_are_bounded_per_peer() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.max_pending_asks = 3;
        let asker = Node::new(Some("asker"), cfg).unwrap();
        let owner = Node::new(Some("owner"), Config::default()).unwrap();
        let owner_id = connect(&asker, &owner).await;
        // An actor that keeps the reply ports and answers only when told.
        let (_silent, mut requests) = inbox::<Ping>(&owner, "silent");
        let silent = asker.lookup::<Ping>(owner_id, "silent").await.unwrap();
        let mut waiting: Vec<_> = (0..3)
            .map(|n| {
                let r = silent.clone();
                Some(tokio::spawn(async move { ping(&r, n).await }))
            })
            .collect();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(requests.recv().await.unwrap());
        }
        match ping(&silent, 99).await {
            Err(AskError::TooManyPending { limit: 3 }) => {}
            other => panic!("a fourth pending ask: {other:?}"),
        }
        // One answer frees one permit (the asks arrive in any order).
        let Ping(n, reply) = held.remove(0);
        reply.send(n + 1).unwrap();
        let answered = waiting[n as usize].take().unwrap();
        assert_eq!(answered.await.unwrap().unwrap(), n + 1);
        let fourth = tokio::spawn({
            let r = silent.clone();
            async move { ping(&r, 10).await }
        });
        let Ping(n, reply) = requests.recv().await.unwrap();
        assert_eq!(n, 10, "the next ask got through");
        reply.send(11).unwrap();
        assert_eq!(fourth.await.unwrap().unwrap(), 11);
        drop(silent);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_do_not_keep_a_peer_out() {
    within(Duration::from_secs(60), async {
        let mut cfg = Config::default();
        // Far longer than the test: timeouts make no room, only eviction.
        cfg.handshake_timeout = Duration::from_secs(120);
        // Fewer than the flood: without eviction the silent ones would fill
        // the listener.
        cfg.max_connections = 256;
        let server = Node::new(Some("server"), cfg).unwrap();
        let addr = server.listen("127.0.0.1:0").await.unwrap();
        serve_pings(&server, Some("ping"));
        let mut flood = Vec::new();
        for i in 0..1000 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                // Half of them stop mid-hello.
                s.write_all(b"TETHER\0\x08").await.unwrap();
            }
            flood.push(s);
        }
        let peer = Node::new(Some("peer"), Config::default()).unwrap();
        let id = within(Duration::from_secs(5), peer.connect(&addr.to_string())).await.unwrap();
        let r = within(Duration::from_secs(5), peer.lookup::<Ping>(id, "ping")).await.unwrap();
        assert_eq!(within(Duration::from_secs(5), ping(&r, 1)).await.unwrap(), 2);
        // The flood was outlasted, not timed out: its first connections were
        // dropped to make room, its last ones are still waiting.
        let mut byte = [0u8; 1];
        let first = within(Duration::from_secs(5), flood[0].read(&mut byte)).await;
        assert!(matches!(first, Ok(0)), "the oldest silent connection was dropped: {first:?}");
        for s in &flood[1000 - 32..] {
            let still = s.try_read(&mut byte);
            assert!(
                matches!(&still, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "a recent silent connection is still open: {still:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_hangs_up_on_handshakes_that_take_too_long() {
    within(T, async {
        let mut cfg = Config::default();
        cfg.handshake_timeout = Duration::from_millis(200);
        let server = Node::new(Some("server"), cfg.clone()).unwrap();
        let addr = server.listen("127.0.0.1:0").await.unwrap();
        for stall_after in [&b""[..], b"TETHER\0\x08", &forged_hello(NodeId(uuid::Uuid::nil()), [0; 16], [0; 32])[..10]]
        {
            // Before the connect: the listener's clock starts at its accept.
            let started = std::time::Instant::now();
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(stall_after).await.unwrap();
            let mut byte = [0u8; 1];
            let hung_up = s.read(&mut byte).await;
            let waited = started.elapsed();
            // A FIN: the listener read what was sent and closed.
            assert!(matches!(hung_up, Ok(0)), "after {} bytes: {hung_up:?}", stall_after.len());
            // Not before the handshake timeout ran out (a listener hanging
            // up at once would pass otherwise), and not long after it: two
            // seconds of slack for a loaded machine.
            assert!(waited >= cfg.handshake_timeout, "hung up after {waited:?}, before the timeout");
            assert!(waited < cfg.handshake_timeout + Duration::from_secs(2), "hung up only after {waited:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_give_their_slots_back() {
    within(T, async {
        let mut cfg = with_cookie(SECRET);
        cfg.max_connections = 2;
        let server = Node::new(Some("server"), cfg).unwrap();
        let addr = server.listen("127.0.0.1:0").await.unwrap().to_string();
        for _ in 0..5 {
            let refused = Node::new(None, with_cookie(OTHER_SECRET)).unwrap().connect(&addr).await;
            assert!(
                matches!(refused.as_ref().map_err(ConnectError::cause), Err(ConnectError::AuthFailed)),
                "{refused:?}"
            );
            let refused = Node::default().connect(&addr).await;
            assert!(
                matches!(refused.as_ref().map_err(ConnectError::cause), Err(ConnectError::AuthMismatch { .. })),
                "{refused:?}"
            );
        }
        // Had any failure kept its slot, the second of these would not fit.
        let (x, y) = (Node::new(None, with_cookie(SECRET)).unwrap(), Node::new(None, with_cookie(SECRET)).unwrap());
        x.connect(&addr).await.unwrap();
        y.connect(&addr).await.unwrap();
        assert_eq!(server.peers().len(), 2);
    })
    .await;
}
