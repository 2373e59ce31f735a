//! A real link outage between two processes: two network namespaces joined
//! by a veth pair, a node in each, the link set down for longer than the
//! heartbeat timeout and up again. The session must resume with nothing
//! lost: the actor receives 0..N-1, each once, in order.
//!
//! # When it runs
//!
//! Only when the environment variable [`ENABLE`](netns::ENABLE) is set
//! (`.ci/run` sets it): it needs root and `ip` from iproute2. Unset, the
//! test prints that it was skipped and passes. Set, it creates the
//! namespaces or fails: it never passes without having run.
//!
//! # How
//!
//! Names are unique per run (the parent's pid): namespaces `tether-a-<pid>`
//! and `tether-b-<pid>`, veth ends `tha<pid>` (in A, 10.77.x.1/24) and
//! `thb<pid>` (in B, 10.77.x.2/24). The veth pair is created directly
//! inside the namespaces, so nothing touches the host's own interfaces or
//! any other address. [`Netns`] deletes both namespaces on drop (which
//! deletes the veth pair), even when the test panics; the children are
//! killed and reaped first.
//!
//! The children are this test binary, executed again inside a namespace as
//! in `tests/processes.rs`:
//!
//! ```text
//! ip netns exec <ns> <current_exe> --exact netns_child --nocapture --ignored --test-threads=1
//! ```
//!
//! with [`ROLE`] selecting what it does. In A, `owner`: a node listening on
//! A's veth address with a counting actor exported as `"counter"`; it prints
//! `LISTENING <addr>`, then its connection's events. In B, `sender`: a node
//! with reconnection enabled that connects to A, prints `CONNECTED` and its
//! connection's events (`EVENT Disconnected ...`, `EVENT Resumed`, ...),
//! tells `Num(0)` .. `Num(N-1)` paced over about 8 s while another task asks
//! the actor how many it has and prints `ACKED <n>`, prints `SENT <n>` as it
//! goes and `DONE` when all are told, then asks for the actor's
//! [`Report`](common::counter::Report) and prints `REPORT <received> <next> <violation|none>`. Both
//! exit when their stdin closes. The parent waits for those lines (every
//! wait bounded), takes the link down once some messages are acknowledged,
//! and up again 2.5 s later.

mod common;

use common::counter::{counter, Count};
use std::io::Read;
use std::time::{Duration, Instant};

use tether::{Config, ConnectionEvent, Node, RemoteRef};
use tether_test_support::netns::{self, Namespace};
use tether_test_support::process::{say, Group};
use tokio::sync::broadcast::error::RecvError;

/// Selects the child's role; unset in the parent.
const ROLE: &str = "TETHER_NETNS_ROLE";
const ROLE_OWNER: &str = "owner";
const ROLE_SENDER: &str = "sender";
/// The owner's listen address; the sender's target address.
const ADDR: &str = "TETHER_NETNS_ADDR";
/// The name of the test function a child runs.
const CHILD_TEST: &str = "netns_child";

/// Messages told.
const N: u64 = 20_000;
/// Pacing: the sender sleeps [`PAUSE`] after every [`BATCH`] tells, so that
/// sending takes at least N / BATCH × PAUSE = 8 s and the outage falls in
/// the middle of it.
const BATCH: u64 = 50;
const PAUSE: Duration = Duration::from_millis(20);
/// The link goes down once the actor has acknowledged this many.
const DOWN_AFTER: u64 = 4_000;
/// How long the link stays down: well over the idle timeout.
const OUTAGE: Duration = Duration::from_millis(2_500);
const PING: Duration = Duration::from_millis(200);
const IDLE: Duration = Duration::from_secs(1);
/// Bound on the whole test.
const OVERALL: Duration = Duration::from_secs(58);

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.ping_interval = PING;
    cfg.idle_timeout = IDLE;
    cfg.linger = Duration::from_secs(30);
    // Reconnection is on by default.
    cfg.reconnect.cap = Duration::from_millis(500);
    cfg.reconnect.give_up_after = Duration::from_secs(30);
    cfg
}

// ---------------------------------------------------------------------------
// The children.

/// Prints the connection's events as `EVENT ...` lines.
fn print_events(conn: tether::Connection) {
    let mut events = conn.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ConnectionEvent::Disconnected(e)) => say(format!("EVENT Disconnected: {e}")),
                Ok(ConnectionEvent::Reconnecting { attempt, delay }) => {
                    say(format!("EVENT Reconnecting: attempt {attempt} after {delay:?}"))
                }
                Ok(ConnectionEvent::Resumed) => say("EVENT Resumed"),
                Ok(ConnectionEvent::SessionLost(why)) => say(format!("EVENT SessionLost: {why}")),
                Ok(other) => say(format!("EVENT Other: {other:?}")),
                Err(RecvError::Lagged(n)) => say(format!("EVENT Lagged: {n}")),
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// The children's entry point (see the module docs).
#[test]
#[ignore = "entry point of the child processes of the network-namespace test"]
fn netns_child() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let addr = std::env::var(ADDR).expect("child: address");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // The harness has printed `test netns_child ... ` without a line
        // break: start a line of our own.
        say("");
        let node = Node::new(Some(&role), config()).unwrap();
        match role.as_str() {
            ROLE_OWNER => owner(&node, &addr).await,
            ROLE_SENDER => sender(&node, &addr).await,
            other => panic!("unknown child role {other:?}"),
        }
        // Serve until the parent closes stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
        drop(node);
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn owner(node: &Node, addr: &str) {
    node.export(Some("counter"), counter()).expect("owner: export");
    let local = node.listen(addr).await.expect("owner: listen");
    say(format!("LISTENING {local}"));
    // Print the sender's connection's events once it is there.
    let node = node.clone();
    tokio::spawn(async move {
        let peer = loop {
            if let Some(p) = node.peers().first() {
                break *p;
            }
            // A node announces no new peer: poll, paced.
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        print_events(node.connection(peer).expect("owner: the connection"));
        say(format!("PEER {peer}"));
    });
}

async fn sender(node: &Node, addr: &str) {
    let peer = match node.connect(addr).await {
        Ok(p) => p,
        Err(e) => return say(format!("ERROR connect to {addr}: {e}")),
    };
    print_events(node.connection(peer).expect("sender: the connection"));
    let counter: RemoteRef<Count> = match node.lookup(peer, "counter").await {
        Ok(r) => r,
        Err(e) => return say(format!("ERROR lookup: {e}")),
    };
    say("CONNECTED");

    // Acknowledgements, concurrently with the tells (and ordered with them
    // on the same route).
    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let acker = {
        let counter = counter.clone();
        tokio::spawn(async move {
            while !*done.borrow() {
                match counter.ask(Count::Received, Duration::from_secs(30)).await {
                    Ok(n) => say(format!("ACKED {n}")),
                    Err(e) => return say(format!("ERROR ask: {e}")),
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), done.changed()).await;
            }
        })
    };

    for i in 0..N {
        if let Err(e) = counter.tell(Count::Num(i)).await {
            return say(format!("ERROR tell {i}: {e}"));
        }
        if (i + 1) % 1_000 == 0 {
            say(format!("SENT {}", i + 1));
        }
        if (i + 1) % BATCH == 0 {
            tokio::time::sleep(PAUSE).await;
        }
    }
    say("DONE");
    let _ = done_tx.send(true);
    let _ = acker.await;
    match counter.ask(Count::Report, Duration::from_secs(30)).await {
        Ok(r) => say(format!("REPORT {r}")),
        Err(e) => say(format!("ERROR report: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The parent's side.

/// Two namespaces joined by a veth pair; both deleted on drop (A's first).
struct Netns {
    a: Namespace,
    b: Namespace,
    /// The veth end in A.
    veth_a: String,
    addr_a: String,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let ns = Netns {
            a: Namespace::add(format!("tether-a-{pid}")),
            b: Namespace::add(format!("tether-b-{pid}")),
            veth_a: format!("tha{pid}"),
            addr_a: format!("10.77.{x}.1"),
        };
        let veth_b = format!("thb{pid}");
        let addr_b = format!("10.77.{x}.2");
        let (a, b, va) = (ns.a.name(), ns.b.name(), ns.veth_a.as_str());
        // Both ends are created inside the namespaces: the host's own
        // interfaces are never touched.
        netns::ip(
            "creating the veth pair",
            &["link", "add", va, "netns", a, "type", "veth", "peer", "name", &veth_b, "netns", b],
        );
        for (ns, dev, addr) in [(&ns.a, va, &ns.addr_a), (&ns.b, veth_b.as_str(), &addr_b)] {
            ns.ip("addressing the veth", &["addr", "add", &format!("{addr}/24"), "dev", dev]);
            ns.ip("setting the veth up", &["link", "set", dev, "up"]);
            ns.ip("setting lo up", &["link", "set", "lo", "up"]);
        }
        ns
    }

    /// Sets A's veth end down or up.
    fn link(&self, state: &str) {
        self.a.ip("setting the link down or up", &["link", "set", &self.veth_a, state]);
    }
}

#[test]
fn a_link_down_longer_than_the_heartbeat_timeout_resumes_the_session() {
    if !netns::enabled("the network-namespace test", "root and `ip` from iproute2") {
        return;
    }
    let start = Instant::now();
    let end = start + OVERALL;

    // Declared before the children: dropped after them.
    let ns = Netns::create();
    let mut g = Group::new(end);
    let a = g.spawn("A", ns.a.rerun(CHILD_TEST).env(ROLE, ROLE_OWNER).env(ADDR, format!("{}:0", ns.addr_a)));
    let line = g.wait_line(a, Duration::from_secs(20), "LISTENING ");
    let addr = line["LISTENING ".len()..].to_owned();
    assert!(addr.starts_with(&ns.addr_a), "A listens on {addr}, not on its veth address");
    let b = g.spawn("B", ns.b.rerun(CHILD_TEST).env(ROLE, ROLE_SENDER).env(ADDR, &addr));
    g.wait_line(b, Duration::from_secs(20), "CONNECTED");

    // Some messages acknowledged by the actor: take the link down.
    g.wait(Duration::from_secs(20), "acknowledgements", |g| {
        g.log(b)
            .iter()
            .any(|(_, l)| l.strip_prefix("ACKED ").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= DOWN_AFTER))
    });
    let down_at = Instant::now();
    ns.link("down");
    eprintln!("link down after {:?}", start.elapsed());
    // Keep reading while it is down (the lines are timestamped on arrival).
    g.read_until(down_at + OUTAGE);
    let up_at = Instant::now();
    ns.link("up");
    eprintln!("link up after {:?} ({:?} down)", start.elapsed(), up_at - down_at);

    g.wait(Duration::from_secs(40), "the Resumed event", |g| g.first(b, "EVENT Resumed", up_at).is_some());
    let report = g.wait_line(b, Duration::from_secs(40), "REPORT ");
    g.read_until(Instant::now() + Duration::from_millis(200));

    // B noticed the outage by its heartbeat while the link was down (no
    // socket error tells it), and resumed only after the link came up,
    // without losing the session.
    let disconnected = g.first(b, "EVENT Disconnected", start).expect("B saw no Disconnected event");
    let resumed = g.first(b, "EVENT Resumed", start).unwrap();
    eprintln!(
        "B: Disconnected {:?} after the link went down, Resumed {:?} after it came up; report after {:?} in all",
        disconnected - down_at,
        resumed - up_at,
        start.elapsed()
    );
    assert!(disconnected < up_at, "B's Disconnected came only after the link was up again");
    assert!(disconnected - down_at >= IDLE - 2 * PING, "B disconnected before its idle timeout could expire");
    assert!(resumed > up_at, "B resumed before the link came up");
    assert_eq!(g.count(b, "EVENT Disconnected"), 1, "B disconnected more than once");
    assert_eq!(g.count(b, "EVENT Resumed"), 1, "B resumed more than once");
    assert_eq!(g.count(b, "EVENT SessionLost"), 0, "B lost the session");
    assert_eq!(g.count(b, "EVENT Lagged"), 0, "B missed events");
    // The outage fell in the middle of the tells.
    let done = g.first(b, "DONE", start).expect("B did not finish telling");
    assert!(done > up_at, "B told everything before the link came up: the outage was not in the middle");
    // A, the accepting side, noticed too, kept the session and took the new
    // transport over.
    assert!(g.first(a, "PEER ", start).is_some_and(|t| t < down_at), "A did not see B before the outage");
    assert!(
        g.first(a, "EVENT Disconnected", start).is_some_and(|t| t > down_at && t < up_at),
        "A saw no Disconnected event during the outage"
    );
    assert!(g.first(a, "EVENT Resumed", start).is_some_and(|t| t > up_at), "A saw no Resumed event after the outage");
    assert_eq!(g.count(a, "EVENT SessionLost"), 0, "A lost the session");

    // Nothing lost, nothing twice, in order.
    let fields: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "bad report: {report}");
    let (received, next, violation) = (fields[1].parse::<u64>().unwrap(), fields[2].parse::<u64>().unwrap(), fields[3]);
    assert_eq!(violation, "none", "messages out of order or repeated: {report}");
    assert_eq!(received, N, "the actor received {received} of {N} messages: {report}");
    assert_eq!(next, N, "{report}");

    let status = g.stop(b, Duration::from_secs(10));
    assert!(status.success(), "B exited with {status}");
    let status = g.stop(a, Duration::from_secs(10));
    assert!(status.success(), "A exited with {status}");
    let took = start.elapsed();
    eprintln!("netns test took {took:?}");
    assert!(took < OVERALL, "took {took:?}");
}
