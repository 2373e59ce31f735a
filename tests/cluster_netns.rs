//! A cluster on real hosts: five network namespaces joined by a bridge, one
//! node process in each. They form a cluster from one seed; one namespace
//! is cut off (its bridge port down) until everyone has declared it down,
//! then healed; one member is killed with SIGKILL.
//!
//! What it shows (issue #14, point 6):
//!
//! - every other member reports the cut-off one `NodeDown` (within 5 s of
//!   the cut), then `NodeUp` again after the heal, and no member reports a
//!   member that was not cut off down;
//! - a session between two members that were not cut off loses nothing
//!   and is not even disturbed: one member tells numbered messages to an
//!   actor on another throughout the outage, and the actor receives
//!   0..N-1, each once, in order, while the connection reports no break;
//! - a session between a survivor and the cut-off member (made on demand,
//!   so it reconnects) breaks by its heartbeat during the outage and
//!   resumes after the heal with nothing lost either;
//! - the view converges: every member lists every other `Up`;
//! - after a SIGKILL, every other member reports `NodeDown` within 5 s.
//!
//! # When it runs
//!
//! Only when the environment variable [`ENABLE`](netns::ENABLE) is set
//! (`.ci/run` sets it): it needs root and `ip` from iproute2. Unset, the
//! test prints that it was skipped and passes. Set, it builds the
//! namespaces or fails: it never passes without having run.
//!
//! # How
//!
//! Names are unique per run (the parent's pid): the bridge `br0` lives in a
//! namespace of its own, `tether-br-<pid>`, so the host's interfaces are
//! never touched; member `i` lives in `tether-m<i>-<pid>` with one veth
//! pair, `eth0` (10.78.x.(i+1)/24) in the member's namespace and `p<i>` on
//! the bridge. Both ends are created from inside the bridge's namespace.
//! [`Lab`] deletes every namespace on drop (which deletes the veths and the
//! bridge), even when the test panics; the children are killed and reaped
//! first (their [`Group`] is declared after the [`Lab`]).
//!
//! A child is this test binary executed again inside a namespace, as in
//! `tests/netns.rs`:
//!
//! ```text
//! ip netns exec <ns> <current_exe> --exact cluster_netns_child --nocapture --ignored --test-threads=1
//! ```
//!
//! It runs a node with a counting actor exported as `"counter"`, joins the
//! cluster (seeded by the first member's address, if it is not the first),
//! prints `LISTENING <addr>` and then every cluster event as
//! `EVENT <Up|Down|Restarted|Left> <addr>`. It takes commands on stdin:
//! `VIEW` prints its `members()`; `SEND <addr> <n>` looks up the counter of
//! the member at `<addr>` (connecting on demand) and tells it `0..n-1`,
//! paced, printing that connection's events, acknowledgements and finally
//! the counter's report. It leaves the cluster and exits when stdin closes.
//! The parent reads every child's stdout on threads, timestamped on
//! arrival, and waits for lines; every wait is bounded, none sleeps.

mod common;

use common::counter::{counter, Count};
use common::members::{print_events, say_view, Members};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tether::cluster::{Cluster, ClusterConfig};
use tether::{Config, ConnectionEvent, Cookie, Node, RemoteRef};
use tether_test_support::netns::{self, Namespace};
use tether_test_support::process::{commands, say, Group};
use tokio::sync::broadcast::error::RecvError;

/// The child's listen address; unset in the parent.
const LISTEN: &str = "TETHER_CLUSTER_LISTEN";
/// The child's node name.
const NAME: &str = "TETHER_CLUSTER_NAME";
/// The seed's address; unset for the first member.
const SEED: &str = "TETHER_CLUSTER_SEED";
/// The name of the test function a child runs.
const CHILD_TEST: &str = "cluster_netns_child";

/// Members, one namespace each.
const MEMBERS: usize = 5;
/// Roles: 0 is the seed; 1 sends to 2 (both survive the partition) and to
/// 3 (cut off and healed); 4 is killed at the end.
const SEED_MEMBER: usize = 0;
const SENDER: usize = 1;
const SURVIVOR: usize = 2;
const CUT: usize = 3;
const KILLED: usize = 4;

/// Messages told to each of the two actors.
const N: u64 = 2_000;
/// Pacing: the sender sleeps [`PAUSE`] after every [`BATCH`] tells, so a
/// stream takes at least N / BATCH × PAUSE = 10 s and spans the outage.
const BATCH: u64 = 20;
const PAUSE: Duration = Duration::from_millis(100);
/// The cut comes once both actors acknowledged this many.
const CUT_AFTER: u64 = 200;
/// The bound the issue sets on reporting a member down.
const DOWN_BOUND: Duration = Duration::from_secs(5);
const PING: Duration = Duration::from_millis(200);
const IDLE: Duration = Duration::from_secs(1);
/// Bound on the whole test.
const OVERALL: Duration = Duration::from_secs(58);

/// Every member's: a silent connection is broken after 1 s (well within
/// the outage), and a reconnection attempt into the black hole gives up
/// after 2 s so that one is under way soon after the heal.
fn config() -> Config {
    let mut cfg = Config::default();
    cfg.cookie = Some(Cookie::new(*b"tether cluster netns test cookie"));
    cfg.ping_interval = PING;
    cfg.idle_timeout = IDLE;
    cfg.handshake_timeout = Duration::from_secs(2);
    cfg.linger = Duration::from_secs(30);
    cfg.reconnect.cap = Duration::from_millis(500);
    cfg.reconnect.give_up_after = Duration::from_secs(30);
    cfg
}

// ---------------------------------------------------------------------------
// The children.

/// The children's entry point (see the module docs).
#[test]
#[ignore = "entry point of the child processes of the cluster namespace test"]
fn cluster_netns_child() {
    let Ok(listen) = std::env::var(LISTEN) else { return };
    let name = std::env::var(NAME).expect("child: name");
    let seed = std::env::var(SEED).ok().map(|s| s.parse::<SocketAddr>().expect("child: seed address"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(member(name, listen, seed));
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn member(name: String, listen: String, seed: Option<SocketAddr>) {
    // The harness has printed `test cluster_netns_child ... ` without a
    // line break: start a line of our own.
    say("");
    let node = Node::new(Some(&name), config()).expect("child: node");
    node.export(Some("counter"), counter()).expect("child: export");
    let addr = node.listen(listen.as_str()).await.expect("child: listen");
    let cc = seed.into_iter().fold(ClusterConfig::default(), ClusterConfig::seed);
    let cluster = Cluster::join(&node, addr, cc).await.expect("child: join");
    print_events(cluster.subscribe());
    say(format!("LISTENING {addr}"));

    // Commands, until the parent closes stdin (or dies).
    let mut commands = commands();
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["VIEW"] => say_view(&cluster),
            ["SEND", to, n] => {
                let to: SocketAddr = to.parse().expect("child: SEND address");
                let n: u64 = n.parse().expect("child: SEND count");
                tokio::spawn(stream(node.clone(), cluster.clone(), to, n));
            }
            _ => say(format!("ERROR unknown command {line:?}")),
        }
    }
    node.shutdown().await;
}

/// Tells `0..n-1` to the counter of the member at `to`, printing (each
/// line tagged with `to`) `CONNECTED`, the connection's events as
/// `CONN <event>`, `SENT <k>`, `ACKED <k>` (the actor's count, asked
/// concurrently on the same route), `DONE`, and the actor's
/// `REPORT <received> <next> <violation|none>`.
async fn stream(node: Node, cluster: Cluster, to: SocketAddr, n: u64) {
    let Some(id) = cluster.members().into_iter().find(|m| m.addr == to).map(|m| m.id) else {
        return say(format!("ERROR no member at {to}"));
    };
    let counter: RemoteRef<Count> = match node.lookup(id, "counter").await {
        Ok(r) => r,
        Err(e) => return say(format!("ERROR lookup on {to}: {e}")),
    };
    let Some(conn) = node.connection(id) else { return say(format!("ERROR no connection to {to}")) };
    let mut events = conn.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ConnectionEvent::Disconnected(e)) => say(format!("CONN {to} Disconnected: {e}")),
                Ok(ConnectionEvent::Reconnecting { attempt, .. }) => say(format!("CONN {to} Reconnecting {attempt}")),
                Ok(ConnectionEvent::Resumed) => say(format!("CONN {to} Resumed")),
                Ok(ConnectionEvent::SessionLost(why)) => say(format!("CONN {to} SessionLost: {why}")),
                Ok(other) => say(format!("CONN {to} Other: {other:?}")),
                Err(RecvError::Lagged(k)) => say(format!("CONN {to} Lagged: {k}")),
                Err(RecvError::Closed) => break,
            }
        }
    });
    say(format!("CONNECTED {to}"));

    let (done_tx, mut done) = tokio::sync::watch::channel(false);
    let acker = {
        let counter = counter.clone();
        tokio::spawn(async move {
            while !*done.borrow() {
                match counter.ask(Count::Received, Duration::from_secs(30)).await {
                    Ok(k) => say(format!("ACKED {to} {k}")),
                    Err(e) => return say(format!("ERROR ask {to}: {e}")),
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), done.changed()).await;
            }
        })
    };
    for i in 0..n {
        if let Err(e) = counter.tell(Count::Num(i)).await {
            return say(format!("ERROR tell {i} to {to}: {e}"));
        }
        if (i + 1) % BATCH == 0 {
            say(format!("SENT {to} {}", i + 1));
            tokio::time::sleep(PAUSE).await;
        }
    }
    say(format!("DONE {to}"));
    let _ = done_tx.send(true);
    let _ = acker.await;
    match counter.ask(Count::Report, Duration::from_secs(30)).await {
        Ok(r) => say(format!("REPORT {to} {r}")),
        Err(e) => say(format!("ERROR report from {to}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The parent's side: the namespaces.

/// A bridge in a namespace of its own and one namespace per member, each
/// joined to the bridge by a veth pair; all deleted on drop (the members'
/// first).
struct Lab {
    /// The members' namespaces.
    members: Vec<Namespace>,
    bridge: Namespace,
    /// The members' addresses (on their `eth0`).
    ips: Vec<String>,
}

impl Lab {
    fn create(n: usize) -> Lab {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let bridge = Namespace::add(format!("tether-br-{pid}"));
        bridge.ip("creating the bridge", &["link", "add", "br0", "type", "bridge"]);
        bridge.ip("setting the bridge up", &["link", "set", "br0", "up"]);
        let ips: Vec<String> = (0..n).map(|i| format!("10.78.{x}.{}", i + 1)).collect();
        let mut members = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let ns = Namespace::add(format!("tether-m{i}-{pid}"));
            let port = format!("p{i}");
            bridge.ip(
                "creating a veth pair",
                &["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns.name()],
            );
            bridge.ip("attaching the veth to the bridge", &["link", "set", &port, "master", "br0"]);
            bridge.ip("setting the bridge port up", &["link", "set", &port, "up"]);
            ns.ip("addressing the member", &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.ip("setting the member's link up", &["link", "set", "eth0", "up"]);
            ns.ip("setting lo up", &["link", "set", "lo", "up"]);
            members.push(ns);
        }
        Lab { members, bridge, ips }
    }

    /// Sets member `i`'s bridge port down (cut off: its packets go nowhere,
    /// nobody's reach it) or up.
    fn port(&self, i: usize, state: &str) {
        self.bridge.ip("setting a bridge port down or up", &["link", "set", &format!("p{i}"), state]);
    }
}

// ---------------------------------------------------------------------------
// The parent's side: the member processes, a `Group` (killed and reaped on
// drop); member `i` is its child `i`, named `m<i>`.

/// Starts a member in `ns` listening on `listen`, seeded by `seed`; waits
/// until it listens, and returns where.
fn start_member(m: &mut Group, ns: &Namespace, listen: &str, seed: Option<&str>) -> String {
    let i = m.len();
    let name = format!("m{i}");
    let mut cmd = ns.rerun(CHILD_TEST);
    cmd.env(LISTEN, listen).env(NAME, &name);
    match seed {
        Some(s) => cmd.env(SEED, s),
        None => cmd.env_remove(SEED),
    };
    m.spawn(name, &mut cmd);
    let addr = m.wait_line(i, Duration::from_secs(20), "LISTENING ")["LISTENING ".len()..].to_owned();
    assert!(addr.starts_with(&format!("{}:", listen.rsplit_once(':').unwrap().0)), "m{i} listens on {addr}");
    addr
}

/// What the members printed, read as this test's protocol (beyond
/// [`Members`]).
trait Reports {
    /// When member `i` first reported `event` (`Up`, `Down`, ...) of the
    /// member at `addr` after `after`.
    fn reported(&self, i: usize, event: &str, addr: &str, after: Instant) -> Option<Instant>;
    /// The highest count in member `i`'s `<prefix> <addr> <k>` lines read
    /// between `from` and `to`.
    fn highest(&self, i: usize, prefix: &str, addr: &str, from: Instant, to: Instant) -> Option<u64>;
}

impl Reports for Group {
    fn reported(&self, i: usize, event: &str, addr: &str, after: Instant) -> Option<Instant> {
        let line = format!("EVENT {event} {addr}");
        self.log(i).iter().find(|(t, l)| *t > after && *l == line).map(|(t, _)| *t)
    }

    fn highest(&self, i: usize, prefix: &str, addr: &str, from: Instant, to: Instant) -> Option<u64> {
        let head = format!("{prefix} {addr} ");
        self.log(i)
            .iter()
            .filter(|(t, _)| *t > from && *t < to)
            .filter_map(|(_, l)| l.strip_prefix(&head)?.parse::<u64>().ok())
            .max()
    }
}

/// Parses `REPORT <addr> <received> <next> <violation>`.
fn check_report(line: &str, who: &str) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "bad report: {line}");
    let (received, next, violation) = (fields[2].parse::<u64>().unwrap(), fields[3].parse::<u64>().unwrap(), fields[4]);
    assert_eq!(violation, "none", "{who}: messages out of order or repeated: {line}");
    assert_eq!(received, N, "{who}: the actor received {received} of {N} messages: {line}");
    assert_eq!(next, N, "{who}: {line}");
}

#[test]
fn five_hosts_form_a_cluster_survive_a_partition_and_see_a_kill() {
    if !netns::enabled("the cluster network-namespace test", "root and `ip` from iproute2") {
        return;
    }
    let start = Instant::now();
    let end = start + OVERALL;

    // Declared before the members: dropped after them.
    let lab = Lab::create(MEMBERS);
    let mut m = Group::new(end);
    let all: Vec<usize> = (0..MEMBERS).collect();

    // One seed; everyone else is given only its address.
    let seed = start_member(&mut m, &lab.members[SEED_MEMBER], &format!("{}:0", lab.ips[SEED_MEMBER]), None);
    let mut addr = vec![seed.clone()];
    for i in 1..MEMBERS {
        addr.push(start_member(&mut m, &lab.members[i], &format!("{}:0", lab.ips[i]), Some(&seed)));
    }
    m.wait(Duration::from_secs(20), "every member to report every other up", |m| m.all_up(&all));
    m.check_views(&all);
    eprintln!("cluster of {MEMBERS} formed after {:?}", start.elapsed());

    // Two sessions, both from the sender: to a member that will stay, and
    // to the one that will be cut off.
    m.send_line(SENDER, &format!("SEND {} {N}", addr[SURVIVOR]));
    m.send_line(SENDER, &format!("SEND {} {N}", addr[CUT]));
    let acked = |m: &Group, to: &str| m.highest(SENDER, "ACKED", to, start, end);
    m.wait(Duration::from_secs(20), "both actors acknowledging messages", |m| {
        acked(m, &addr[SURVIVOR]).is_some_and(|k| k >= CUT_AFTER)
            && acked(m, &addr[CUT]).is_some_and(|k| k >= CUT_AFTER)
    });

    // Cut one member off, until every other member has declared it down
    // (and it them), and its session has broken.
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != CUT).collect();
    let cut_at = Instant::now();
    lab.port(CUT, "down");
    eprintln!("m{CUT} cut off after {:?}", start.elapsed());
    m.wait(Duration::from_secs(20), "every member to report the cut-off one down, and it them", |m| {
        others.iter().all(|&i| m.status(i, &addr[CUT]) == Some("Down"))
            && others.iter().all(|&j| m.status(CUT, &addr[j]) == Some("Down"))
            && m.first(SENDER, &format!("CONN {} Disconnected", addr[CUT]), cut_at).is_some()
    });
    let heal_at = Instant::now();
    lab.port(CUT, "up");
    eprintln!("m{CUT} healed after {:?} ({:?} cut off)", start.elapsed(), heal_at - cut_at);

    m.wait(Duration::from_secs(20), "every member to report the healed one up, and it them", |m| m.all_up(&all));
    m.wait(Duration::from_secs(30), "both reports", |m| {
        m.last(SENDER, &format!("REPORT {} ", addr[SURVIVOR])).is_some()
            && m.last(SENDER, &format!("REPORT {} ", addr[CUT])).is_some()
    });
    m.check_views(&all);
    eprintln!("healed and converged after {:?}", start.elapsed());

    // Everyone reported the cut-off member down during the outage, within
    // the bound, and up after it; it reported them all the same way.
    for &i in &others {
        let down =
            m.reported(i, "Down", &addr[CUT], cut_at).unwrap_or_else(|| panic!("m{i} never reported m{CUT} down"));
        let up = m.reported(i, "Up", &addr[CUT], down).unwrap_or_else(|| panic!("m{i} never reported m{CUT} up again"));
        eprintln!(
            "m{i}: m{CUT} down after {:?}, up {:?} after the heal",
            down - cut_at,
            up.saturating_duration_since(heal_at)
        );
        assert!(down < heal_at, "m{i} reported m{CUT} down only after the heal");
        assert!(down - cut_at <= DOWN_BOUND, "m{i} reported m{CUT} down after {:?}", down - cut_at);
        assert!(up > heal_at, "m{i} reported m{CUT} up before the heal");
        let down =
            m.reported(CUT, "Down", &addr[i], cut_at).unwrap_or_else(|| panic!("m{CUT} never reported m{i} down"));
        assert!(
            down < heal_at && m.reported(CUT, "Up", &addr[i], heal_at).is_some(),
            "m{CUT} did not see m{i} go and come back"
        );
    }
    // Nobody reported a member that was not cut off down, nor anyone
    // restarted or left.
    for &i in &others {
        for &j in &others {
            if i != j {
                assert_eq!(m.reported(i, "Down", &addr[j], start), None, "m{i} reported m{j} down, a false positive");
            }
        }
    }
    for &i in &all {
        assert_eq!(m.count(i, "EVENT Restarted") + m.count(i, "EVENT Left") + m.count(i, "EVENT Other"), 0, "m{i}");
    }

    // The session between two members that were not cut off: undisturbed,
    // and messages kept arriving during the outage; nothing lost.
    let survivor = &addr[SURVIVOR];
    assert_eq!(m.count(SENDER, &format!("CONN {survivor} ")), 0, "the session between survivors was disturbed");
    let before = m.highest(SENDER, "ACKED", survivor, start, cut_at).unwrap();
    let during = m.highest(SENDER, "ACKED", survivor, cut_at, heal_at).expect("no acknowledgement during the outage");
    assert!(
        during > before,
        "no message reached the survivor's actor during the outage ({before} before, {during} during)"
    );
    let done = m.first(SENDER, &format!("DONE {survivor}"), start).expect("the sender finished");
    assert!(done > heal_at, "the stream to the survivor ended before the heal: it did not span the outage");
    check_report(m.last(SENDER, &format!("REPORT {survivor} ")).unwrap(), "survivor");

    // The session to the cut-off member: broken by its heartbeat during the
    // outage, resumed after the heal, nothing lost.
    let cut = &addr[CUT];
    let broke = m.first(SENDER, &format!("CONN {cut} Disconnected"), start).unwrap();
    let resumed = m
        .first(SENDER, &format!("CONN {cut} Resumed"), start)
        .expect("the session to the cut-off member did not resume");
    eprintln!(
        "session to m{CUT}: broke {:?} after the cut, resumed {:?} after the heal",
        broke - cut_at,
        resumed - heal_at
    );
    assert!(broke > cut_at && broke < heal_at, "the session to m{CUT} broke outside the outage");
    assert!(resumed > heal_at, "the session to m{CUT} resumed before the heal");
    assert_eq!(m.count(SENDER, &format!("CONN {cut} SessionLost")), 0, "the session to m{CUT} was lost");
    assert!(m.highest(SENDER, "SENT", cut, cut_at, heal_at).is_some(), "nothing was told to m{CUT} during the outage");
    check_report(m.last(SENDER, &format!("REPORT {cut} ")).unwrap(), "cut-off member");

    // A member killed: everyone else reports it down within the bound.
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != KILLED).collect();
    let killed_at = Instant::now();
    m.kill(KILLED);
    m.wait(DOWN_BOUND + Duration::from_secs(10), "every member to report the killed one down", |m| {
        rest.iter().all(|&i| m.status(i, &addr[KILLED]) == Some("Down"))
    });
    for &i in &rest {
        let down = m.reported(i, "Down", &addr[KILLED], killed_at).unwrap();
        eprintln!("m{i}: m{KILLED} down {:?} after SIGKILL", down - killed_at);
        assert!(down - killed_at <= DOWN_BOUND, "m{i} reported m{KILLED} down after {:?}", down - killed_at);
    }

    for status in m.shut_down(Duration::from_secs(10)) {
        assert!(status.success(), "a member exited with {status}");
    }
    let took = start.elapsed();
    eprintln!("cluster netns test took {took:?}");
    assert!(took < OVERALL, "took {took:?}");
}
