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
//! Only when the environment variable [`ENABLE`] is set (`.ci/run` sets
//! it): it needs root and `ip` from iproute2. Unset, the test prints that it
//! was skipped and passes. Set, it builds the namespaces or fails: it never
//! passes without having run.
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
//! first ([`Members`] is declared after the [`Lab`]).
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

use common::TaskMailbox;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tether::cluster::{Cluster, ClusterConfig, ClusterEvent, EventsError, Subscription};
use tether::{Config, ConnectionEvent, Cookie, Node, RemoteRef, ReplyPort};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::unbounded_channel;

/// Set to run the test (`.ci/run` sets it).
const ENABLE: &str = "TETHER_NETNS_TESTS";
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
// Messages, shared by all processes.

#[derive(Serialize, Deserialize)]
enum Count {
    Num(u64),
    /// How many `Num`s arrived so far.
    Received(ReplyPort<u64>),
    Report(ReplyPort<Report>),
}

/// What the counting actor saw.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct Report {
    received: u64,
    /// The number it expects next.
    next: u64,
    /// The first out-of-order number: (expected, got).
    first_violation: Option<(u64, u64)>,
}

// ---------------------------------------------------------------------------
// The children.

/// The counting actor: checks the order itself.
fn counter() -> TaskMailbox<Count> {
    let (tx, mut rx) = unbounded_channel::<Count>();
    tokio::spawn(async move {
        let mut report = Report { received: 0, next: 0, first_violation: None };
        while let Some(msg) = rx.recv().await {
            match msg {
                Count::Num(n) => {
                    report.received += 1;
                    if n != report.next && report.first_violation.is_none() {
                        report.first_violation = Some((report.next, n));
                    }
                    report.next = n + 1;
                }
                Count::Received(reply) => {
                    let _ = reply.send(report.received);
                }
                Count::Report(reply) => {
                    let _ = reply.send(report);
                }
            }
        }
    });
    TaskMailbox(tx)
}

/// One line on stdout, flushed (the parent reads it at once).
fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

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
    let (tx, mut commands) = unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["VIEW"] => {
                let members: Vec<String> =
                    cluster.members().iter().map(|m| format!("{}={:?}", m.addr, m.status)).collect();
                say(format!("VIEW {}", members.join(" ")));
            }
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

/// Prints the cluster's events as `EVENT <kind> <addr>` lines.
fn print_events(mut events: Subscription) {
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ClusterEvent::NodeUp(m)) => say(format!("EVENT Up {}", m.addr)),
                Ok(ClusterEvent::NodeDown { member, .. }) => say(format!("EVENT Down {}", member.addr)),
                Ok(ClusterEvent::NodeRestarted { member, .. }) => say(format!("EVENT Restarted {}", member.addr)),
                Ok(ClusterEvent::NodeLeft(m)) => say(format!("EVENT Left {}", m.addr)),
                Ok(other) => say(format!("EVENT Other {other:?}")),
                Err(EventsError::Lagged(n)) => say(format!("ERROR cluster events lagged by {n}")),
                Err(_) => break,
            }
        }
    });
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
        Ok(r) => say(format!(
            "REPORT {to} {} {} {}",
            r.received,
            r.next,
            r.first_violation.map_or("none".to_owned(), |(want, got)| format!("expected-{want}-got-{got}"))
        )),
        Err(e) => say(format!("ERROR report from {to}: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The parent's side: the namespaces.

/// Runs a command; its failure fails the test with `what` and the output.
fn run(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{ENABLE} is set but {what} could not run ({cmd:?}: {e}); it needs `ip` from iproute2")
    });
    assert!(
        out.status.success(),
        "{ENABLE} is set but {what} failed ({cmd:?}: {}): {}; the test needs root and `ip` from iproute2",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

/// A bridge in a namespace of its own and one namespace per member, each
/// joined to the bridge by a veth pair; all deleted on drop.
struct Lab {
    bridge: String,
    /// The members' namespaces.
    members: Vec<String>,
    /// The members' addresses (on their `eth0`).
    ips: Vec<String>,
    created: Vec<String>,
}

impl Lab {
    fn create(n: usize) -> Lab {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let mut lab = Lab {
            bridge: format!("tether-br-{pid}"),
            members: (0..n).map(|i| format!("tether-m{i}-{pid}")).collect(),
            ips: (0..n).map(|i| format!("10.78.{x}.{}", i + 1)).collect(),
            created: Vec::new(),
        };
        let br = lab.bridge.clone();
        run("creating the bridge's namespace", &mut ip(&["netns", "add", &br]));
        lab.created.push(br.clone());
        run("creating the bridge", &mut ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]));
        run("setting the bridge up", &mut ip(&["-n", &br, "link", "set", "br0", "up"]));
        for i in 0..n {
            let (ns, port) = (lab.members[i].clone(), format!("p{i}"));
            run("creating a member's namespace", &mut ip(&["netns", "add", &ns]));
            lab.created.push(ns.clone());
            run(
                "creating a veth pair",
                &mut ip(&["-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]),
            );
            run("attaching the veth to the bridge", &mut ip(&["-n", &br, "link", "set", &port, "master", "br0"]));
            run("setting the bridge port up", &mut ip(&["-n", &br, "link", "set", &port, "up"]));
            let cidr = format!("{}/24", lab.ips[i]);
            run("addressing the member", &mut ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]));
            run("setting the member's link up", &mut ip(&["-n", &ns, "link", "set", "eth0", "up"]));
            run("setting lo up", &mut ip(&["-n", &ns, "link", "set", "lo", "up"]));
        }
        lab
    }

    /// Sets member `i`'s bridge port down (cut off: its packets go nowhere,
    /// nobody's reach it) or up.
    fn port(&self, i: usize, state: &str) {
        let port = format!("p{i}");
        run("setting a bridge port down or up", &mut ip(&["-n", &self.bridge, "link", "set", &port, state]));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            match ip(&["netns", "del", name]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("lab: deleting {name} failed: {}", String::from_utf8_lossy(&out.stderr)),
                Err(e) => eprintln!("lab: deleting {name} failed: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The parent's side: the member processes.

/// A member process in a namespace.
struct Proc {
    name: String,
    proc: Child,
    stdin: Option<ChildStdin>,
    /// Where its node listens.
    addr: String,
    /// Every stdout line so far, with when the parent read it.
    log: Vec<(Instant, String)>,
    /// Its stdout closed.
    exited: bool,
    /// It was killed on purpose.
    killed: bool,
}

/// The member processes, their stdout merged into one stream of lines;
/// killed and reaped on drop.
struct Members {
    all: Vec<Proc>,
    tx: Sender<(usize, Instant, Option<String>)>,
    lines: Receiver<(usize, Instant, Option<String>)>,
    /// No wait goes beyond it.
    end: Instant,
}

impl Members {
    fn new(end: Instant) -> Members {
        let (tx, lines) = channel();
        Members { all: Vec::new(), tx, lines, end }
    }

    /// Starts a member in `ns` listening on `listen`, seeded by `seed`, and
    /// waits until it listens.
    fn start(&mut self, ns: &str, listen: &str, seed: Option<&str>) -> usize {
        let i = self.all.len();
        let name = format!("m{i}");
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--ignored", "--test-threads=1"])
            .env(LISTEN, listen)
            .env(NAME, &name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match seed {
            Some(s) => cmd.env(SEED, s),
            None => cmd.env_remove(SEED),
        };
        let mut proc = cmd.spawn().expect("spawn `ip netns exec` for a member");
        let stdin = proc.stdin.take();
        let stdout = proc.stdout.take().expect("piped stdout");
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Instant::now(), Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, Instant::now(), None));
        });
        self.all.push(Proc { name, proc, stdin, addr: String::new(), log: Vec::new(), exited: false, killed: false });
        self.wait(Duration::from_secs(20), "the member listening", |m| m.all[i].line("LISTENING ").is_some());
        let addr = self.all[i].line("LISTENING ").unwrap()["LISTENING ".len()..].to_owned();
        assert!(addr.starts_with(&format!("{}:", listen.rsplit_once(':').unwrap().0)), "m{i} listens on {addr}");
        self.all[i].addr = addr;
        i
    }

    /// Reads lines until `cond` holds, for at most `limit` (and never past
    /// the test's end). Fails on an `ERROR` line or a member's unexpected
    /// exit.
    fn wait(&mut self, limit: Duration, what: &str, mut cond: impl FnMut(&Members) -> bool) {
        let deadline = (Instant::now() + limit).min(self.end);
        while !cond(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((i, at, Some(line))) => {
                    let p = &mut self.all[i];
                    eprintln!("[{}] {line}", p.name);
                    assert!(!line.starts_with("ERROR"), "member {} failed: {line}", p.name);
                    p.log.push((at, line));
                }
                Ok((i, _, None)) => {
                    let p = &mut self.all[i];
                    p.exited = true;
                    assert!(p.killed, "member {} exited unexpectedly (status {:?})", p.name, p.proc.try_wait());
                }
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => unreachable!("the sender is held here"),
            }
        }
    }

    fn tell(&mut self, i: usize, command: &str) {
        let stdin = self.all[i].stdin.as_mut().expect("the member's stdin is open");
        writeln!(stdin, "{command}").and_then(|()| stdin.flush()).expect("write to a member");
    }

    /// Asks each of `members` for its view and checks it lists every other
    /// of `members` up, and nobody else.
    fn check_views(&mut self, members: &[usize]) {
        for &i in members {
            let before = self.all[i].log.len();
            self.tell(i, "VIEW");
            self.wait(Duration::from_secs(10), "a VIEW line", |m| {
                m.all[i].log[before..].iter().any(|(_, l)| l.starts_with("VIEW"))
            });
            let line = &self.all[i].log[before..].iter().find(|(_, l)| l.starts_with("VIEW")).unwrap().1;
            let view: BTreeMap<&str, &str> =
                line.split_whitespace().skip(1).map(|e| e.split_once('=').expect("addr=status")).collect();
            let want: BTreeMap<&str, &str> =
                members.iter().filter(|&&j| j != i).map(|&j| (self.all[j].addr.as_str(), "Up")).collect();
            assert_eq!(view, want, "m{i}'s members() does not list every other member up");
        }
    }

    /// SIGKILL, and reap.
    fn kill(&mut self, i: usize) {
        let p = &mut self.all[i];
        p.killed = true;
        p.proc.kill().expect("SIGKILL a member");
        p.proc.wait().expect("reap a member");
    }

    /// Closes every live member's stdin and waits (bounded) for them all to
    /// leave and exit.
    fn shut_down(&mut self, limit: Duration) -> Vec<ExitStatus> {
        let live: Vec<usize> = (0..self.all.len()).filter(|&i| !self.all[i].killed).collect();
        for &i in &live {
            drop(self.all[i].stdin.take());
            self.all[i].killed = true;
        }
        self.wait(limit, "the members to exit", |m| live.iter().all(|&i| m.all[i].exited));
        live.iter().map(|&i| self.all[i].proc.wait().expect("reap a member")).collect()
    }

    /// What member `i` last reported of the member at `addr` (`Up`, `Down`,
    /// ...), if anything.
    fn status(&self, i: usize, addr: &str) -> Option<&str> {
        self.all[i].log.iter().rev().find_map(|(_, l)| {
            let (kind, at) = l.strip_prefix("EVENT ")?.split_once(' ')?;
            (at == addr).then_some(kind)
        })
    }

    /// When member `i` first reported `event` (`Up`, `Down`, ...) of the
    /// member at `addr` after `after`.
    fn reported(&self, i: usize, event: &str, addr: &str, after: Instant) -> Option<Instant> {
        let line = format!("EVENT {event} {addr}");
        self.all[i].log.iter().find(|(t, l)| *t > after && *l == line).map(|(t, _)| *t)
    }

    /// The highest count in member `i`'s `<prefix> <addr> <k>` lines read
    /// between `from` and `to`.
    fn highest(&self, i: usize, prefix: &str, addr: &str, from: Instant, to: Instant) -> Option<u64> {
        let head = format!("{prefix} {addr} ");
        self.all[i]
            .log
            .iter()
            .filter(|(t, _)| *t > from && *t < to)
            .filter_map(|(_, l)| l.strip_prefix(&head)?.parse::<u64>().ok())
            .max()
    }

    /// When member `i` first printed a line starting with `prefix` after
    /// `after`.
    fn first(&self, i: usize, prefix: &str, after: Instant) -> Option<Instant> {
        self.all[i].log.iter().find(|(t, l)| *t > after && l.starts_with(prefix)).map(|(t, _)| *t)
    }

    fn count(&self, i: usize, prefix: &str) -> usize {
        self.all[i].log.iter().filter(|(_, l)| l.starts_with(prefix)).count()
    }

    /// The last line of member `i` that starts with `prefix`.
    fn line(&self, i: usize, prefix: &str) -> Option<&str> {
        self.all[i].line(prefix)
    }

    /// Whether every member of `members` has reported every other up.
    fn all_up(&self, members: &[usize]) -> bool {
        members
            .iter()
            .all(|&i| members.iter().filter(|&&j| j != i).all(|&j| self.status(i, &self.all[j].addr) == Some("Up")))
    }
}

impl Proc {
    fn line(&self, prefix: &str) -> Option<&str> {
        self.log.iter().rev().find(|(_, l)| l.starts_with(prefix)).map(|(_, l)| l.as_str())
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for p in &mut self.all {
            let _ = p.proc.kill();
            let _ = p.proc.wait();
        }
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
    if std::env::var_os(ENABLE).is_none() {
        eprintln!(
            "SKIPPED: set {ENABLE}=1 to run the cluster network-namespace test (needs root and `ip` from iproute2)"
        );
        return;
    }
    let start = Instant::now();
    let end = start + OVERALL;

    // Declared before the members: dropped after them.
    let lab = Lab::create(MEMBERS);
    let mut m = Members::new(end);
    let all: Vec<usize> = (0..MEMBERS).collect();

    // One seed; everyone else is given only its address.
    m.start(&lab.members[SEED_MEMBER], &format!("{}:0", lab.ips[SEED_MEMBER]), None);
    let seed = m.all[SEED_MEMBER].addr.clone();
    for i in 1..MEMBERS {
        m.start(&lab.members[i], &format!("{}:0", lab.ips[i]), Some(&seed));
    }
    let addr: Vec<String> = m.all.iter().map(|p| p.addr.clone()).collect();
    m.wait(Duration::from_secs(20), "every member to report every other up", |m| m.all_up(&all));
    m.check_views(&all);
    eprintln!("cluster of {MEMBERS} formed after {:?}", start.elapsed());

    // Two sessions, both from the sender: to a member that will stay, and
    // to the one that will be cut off.
    m.tell(SENDER, &format!("SEND {} {N}", addr[SURVIVOR]));
    m.tell(SENDER, &format!("SEND {} {N}", addr[CUT]));
    let acked = |m: &Members, to: &str| m.highest(SENDER, "ACKED", to, start, m.end);
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
        m.line(SENDER, &format!("REPORT {} ", addr[SURVIVOR])).is_some()
            && m.line(SENDER, &format!("REPORT {} ", addr[CUT])).is_some()
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
    check_report(m.line(SENDER, &format!("REPORT {survivor} ")).unwrap(), "survivor");

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
    check_report(m.line(SENDER, &format!("REPORT {cut} ")).unwrap(), "cut-off member");

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
