//! A real link outage between two processes: two network namespaces joined
//! by a veth pair, a node in each, the link set down for longer than the
//! heartbeat timeout and up again. The session must resume with nothing
//! lost: the actor receives 0..N-1, each once, in order.
//!
//! # When it runs
//!
//! Only when the environment variable [`ENABLE`] is set (`.ci/run` sets
//! it): it needs root and `ip` from iproute2. Unset, the test prints that it
//! was skipped and passes. Set, it creates the namespaces or fails: it never
//! passes without having run.
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
//! [`Report`] and prints `REPORT <received> <next> <violation|none>`. Both
//! exit when their stdin closes. The parent waits for those lines (every
//! wait bounded), takes the link down once some messages are acknowledged,
//! and up again 2.5 s later.

mod common;

use common::TaskMailbox;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tether::{Config, ConnectionEvent, Node, RemoteRef, ReplyPort};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::unbounded_channel;

/// Set to run the test (`.ci/run` sets it).
const ENABLE: &str = "TETHER_NETNS_TESTS";
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
    cfg.reconnect.enabled = true;
    cfg.reconnect.cap = Duration::from_millis(500);
    cfg.reconnect.give_up_after = Duration::from_secs(30);
    cfg
}

// ---------------------------------------------------------------------------
// Messages, shared by both processes.

#[derive(Serialize, Deserialize)]
enum Count {
    Num(u64),
    /// How many `Num`s arrived so far.
    Received(ReplyPort<u64>),
    Report(ReplyPort<Report>),
}

/// What the actor saw.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct Report {
    /// `Num`s received.
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
        Ok(r) => say(format!(
            "REPORT {} {} {}",
            r.received,
            r.next,
            r.first_violation.map_or("none".to_owned(), |(want, got)| format!("expected-{want}-got-{got}"))
        )),
        Err(e) => say(format!("ERROR report: {e}")),
    }
}

// ---------------------------------------------------------------------------
// The parent's side.

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

/// Two namespaces joined by a veth pair; both deleted on drop.
struct Netns {
    a: String,
    b: String,
    /// The veth end in A.
    veth_a: String,
    addr_a: String,
    created: Vec<String>,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let mut ns = Netns {
            a: format!("tether-a-{pid}"),
            b: format!("tether-b-{pid}"),
            veth_a: format!("tha{pid}"),
            addr_a: format!("10.77.{x}.1"),
            created: Vec::new(),
        };
        let veth_b = format!("thb{pid}");
        let addr_b = format!("10.77.{x}.2");
        for name in [ns.a.clone(), ns.b.clone()] {
            run("creating a network namespace", &mut ip(&["netns", "add", &name]));
            ns.created.push(name);
        }
        let (a, b, va) = (ns.a.as_str(), ns.b.as_str(), ns.veth_a.as_str());
        // Both ends are created inside the namespaces: the host's own
        // interfaces are never touched.
        run(
            "creating the veth pair",
            &mut ip(&["link", "add", va, "netns", a, "type", "veth", "peer", "name", &veth_b, "netns", b]),
        );
        for (ns, dev, addr) in [(a, va, &ns.addr_a), (b, veth_b.as_str(), &addr_b)] {
            run("addressing the veth", &mut ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]));
            run("setting the veth up", &mut ip(&["-n", ns, "link", "set", dev, "up"]));
            run("setting lo up", &mut ip(&["-n", ns, "link", "set", "lo", "up"]));
        }
        ns
    }

    /// Sets A's veth end down or up.
    fn link(&self, state: &str) {
        run("setting the link down or up", &mut ip(&["-n", &self.a, "link", "set", &self.veth_a, state]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.created {
            match ip(&["netns", "del", name]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("netns: deleting {name} failed: {}", String::from_utf8_lossy(&out.stderr)),
                Err(e) => eprintln!("netns: deleting {name} failed: {e}"),
            }
        }
    }
}

/// A child process in a namespace; killed and reaped on drop.
struct ChildNode {
    name: &'static str,
    proc: Child,
    stdin: Option<ChildStdin>,
    /// Stdout lines, with when the reader thread got them.
    lines: Receiver<(Instant, String)>,
    /// Every stdout line so far, with when it was read.
    log: Vec<(Instant, String)>,
    /// Its stdout closed: it exited.
    closed: bool,
}

impl ChildNode {
    fn start(name: &'static str, ns: &str, role: &str, addr: &str) -> ChildNode {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut proc = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--ignored", "--test-threads=1"])
            .env(ROLE, role)
            .env(ADDR, addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn `ip netns exec` for a child");
        let stdin = proc.stdin.take();
        let stdout = proc.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        ChildNode { name, proc, stdin, lines, log: Vec::new(), closed: false }
    }

    /// Reads lines until one satisfies `want` (returned) or `deadline`
    /// passes (`None`). Fails on an `ERROR` line or the child's exit.
    fn wait_for(&mut self, deadline: Instant, mut want: impl FnMut(&str) -> bool) -> Option<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    eprintln!("[{}] {line}", self.name);
                    self.log.push((at, line.clone()));
                    assert!(!line.starts_with("ERROR"), "child {} failed: {line}", self.name);
                    if want(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    panic!("child {} exited early (status {:?})", self.name, self.proc.wait());
                }
            }
        }
    }

    /// Like `wait_for`, failing with `what` at the deadline.
    fn expect(&mut self, deadline: Instant, what: &str, want: impl FnMut(&str) -> bool) -> String {
        match self.wait_for(deadline, want) {
            Some(line) => line,
            None => panic!("child {}: no {what} in time", self.name),
        }
    }

    /// When the first line starting with `prefix` was read, if it was.
    fn first(&self, prefix: &str) -> Option<Instant> {
        self.log.iter().find(|(_, l)| l.starts_with(prefix)).map(|(t, _)| *t)
    }

    fn count(&self, prefix: &str) -> usize {
        self.log.iter().filter(|(_, l)| l.starts_with(prefix)).count()
    }

    /// Closes stdin and waits (bounded) for the child to exit.
    fn shut_down(&mut self, deadline: Instant) -> ExitStatus {
        drop(self.stdin.take());
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    eprintln!("[{}] {line}", self.name);
                    self.log.push((at, line));
                }
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => panic!("child {} did not exit after its stdin closed", self.name),
            }
        }
        self.proc.wait().expect("reap the child")
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

#[test]
fn a_link_down_longer_than_the_heartbeat_timeout_resumes_the_session() {
    if std::env::var_os(ENABLE).is_none() {
        eprintln!("SKIPPED: set {ENABLE}=1 to run the network-namespace test (needs root and `ip` from iproute2)");
        return;
    }
    let start = Instant::now();
    let end = start + OVERALL;
    let within = |d: Duration| (Instant::now() + d).min(end);

    // Declared before the children: dropped after them.
    let ns = Netns::create();
    let mut a = ChildNode::start("A", &ns.a, ROLE_OWNER, &format!("{}:0", ns.addr_a));
    let line = a.expect(within(Duration::from_secs(20)), "LISTENING line", |l| l.starts_with("LISTENING "));
    let addr = line["LISTENING ".len()..].to_owned();
    assert!(addr.starts_with(&ns.addr_a), "A listens on {addr}, not on its veth address");
    let mut b = ChildNode::start("B", &ns.b, ROLE_SENDER, &addr);
    b.expect(within(Duration::from_secs(20)), "CONNECTED line", |l| l == "CONNECTED");

    // Some messages acknowledged by the actor: take the link down.
    b.expect(within(Duration::from_secs(20)), "acknowledgements", |l| {
        l.strip_prefix("ACKED ").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= DOWN_AFTER)
    });
    let down_at = Instant::now();
    ns.link("down");
    eprintln!("link down after {:?}", start.elapsed());
    // Keep reading while it is down (the lines are timestamped on arrival).
    b.wait_for(down_at + OUTAGE, |_| false);
    a.wait_for(Instant::now(), |_| false);
    let up_at = Instant::now();
    ns.link("up");
    eprintln!("link up after {:?} ({:?} down)", start.elapsed(), up_at - down_at);

    b.expect(within(Duration::from_secs(40)), "Resumed event", |l| l == "EVENT Resumed");
    let report = b.expect(within(Duration::from_secs(40)), "REPORT line", |l| l.starts_with("REPORT "));
    a.wait_for(Instant::now() + Duration::from_millis(200), |_| false);

    // B noticed the outage by its heartbeat while the link was down (no
    // socket error tells it), and resumed only after the link came up,
    // without losing the session.
    let disconnected = b.first("EVENT Disconnected").expect("B saw no Disconnected event");
    let resumed = b.first("EVENT Resumed").unwrap();
    eprintln!(
        "B: Disconnected {:?} after the link went down, Resumed {:?} after it came up; report after {:?} in all",
        disconnected - down_at,
        resumed - up_at,
        start.elapsed()
    );
    assert!(disconnected < up_at, "B's Disconnected came only after the link was up again");
    assert!(disconnected - down_at >= IDLE - 2 * PING, "B disconnected before its idle timeout could expire");
    assert!(resumed > up_at, "B resumed before the link came up");
    assert_eq!(b.count("EVENT Disconnected"), 1, "B disconnected more than once");
    assert_eq!(b.count("EVENT Resumed"), 1, "B resumed more than once");
    assert_eq!(b.count("EVENT SessionLost"), 0, "B lost the session");
    assert_eq!(b.count("EVENT Lagged"), 0, "B missed events");
    // The outage fell in the middle of the tells.
    let done = b.first("DONE").expect("B did not finish telling");
    assert!(done > up_at, "B told everything before the link came up: the outage was not in the middle");
    // A, the accepting side, noticed too, kept the session and took the new
    // transport over.
    assert!(a.first("PEER ").is_some_and(|t| t < down_at), "A did not see B before the outage");
    assert!(
        a.first("EVENT Disconnected").is_some_and(|t| t > down_at && t < up_at),
        "A saw no Disconnected event during the outage"
    );
    assert!(a.first("EVENT Resumed").is_some_and(|t| t > up_at), "A saw no Resumed event after the outage");
    assert_eq!(a.count("EVENT SessionLost"), 0, "A lost the session");

    // Nothing lost, nothing twice, in order.
    let fields: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "bad report: {report}");
    let (received, next, violation) = (fields[1].parse::<u64>().unwrap(), fields[2].parse::<u64>().unwrap(), fields[3]);
    assert_eq!(violation, "none", "messages out of order or repeated: {report}");
    assert_eq!(received, N, "the actor received {received} of {N} messages: {report}");
    assert_eq!(next, N, "{report}");

    let status = b.shut_down(within(Duration::from_secs(10)));
    assert!(status.success(), "B exited with {status}");
    let status = a.shut_down(within(Duration::from_secs(10)));
    assert!(status.success(), "A exited with {status}");
    let took = start.elapsed();
    eprintln!("netns test took {took:?}");
    assert!(took < OVERALL, "took {took:?}");
}
