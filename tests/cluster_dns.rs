//! DNS seeds against a real DNS server: dnsmasq in a network namespace
//! answers `members.tether.test` with several A records on loopback
//! addresses, and node processes in the namespace, each listening on its
//! own 127.0.0.x and the same port, find each other through that name.
//!
//! What it shows (issue #14, point 1):
//!
//! - the nodes' resolver is that dnsmasq: the name does not resolve until
//!   dnsmasq lists it, then resolves to exactly what it lists, and follows
//!   every change;
//! - nodes whose only seed is the name join once it resolves, and learn
//!   every member transitively (two of them are never listed under the
//!   name, yet learn each other);
//! - a changed record set is followed while the cluster runs: a second
//!   group, which nobody in the first knew of, is added to the name, and
//!   the first group (re-resolving every 300 ms) merges with it into one
//!   cluster in which every member knows every other.
//!
//! # When it runs
//!
//! Only when the environment variable [`ENABLE`] is set (`.ci/run` sets
//! it, and installs dnsmasq): it needs root, `ip` from iproute2 and
//! dnsmasq. Unset, the test prints that it was skipped and passes. Set, it
//! runs or fails: it never passes without having run.
//!
//! # How
//!
//! One namespace, `tether-dns-<pid>`, with only `lo` (up). Its resolver
//! configuration is `/etc/netns/<ns>/resolv.conf` (`nameserver 127.0.0.1`),
//! which `ip netns exec` bind-mounts over `/etc/resolv.conf` for the
//! processes it starts. dnsmasq runs in the namespace on 127.0.0.1:53 with
//! no upstream server and no `/etc/hosts`, answering only from a hosts file
//! of the test's; the test rewrites that file and sends dnsmasq SIGHUP,
//! which makes it read the file again (it logs `read <file> ...`, which the
//! test awaits). [`Netns`] deletes the namespace, `/etc/netns/<ns>` and
//! the hosts file on drop, even when the test panics; dnsmasq and the
//! children are killed and reaped first (they are declared after it).
//!
//! A child is this test binary executed again inside the namespace, as in
//! `tests/netns.rs`. It runs a node listening on [`LISTEN`], joins with the
//! seeds in [`SEEDS`] and a 300 ms seed interval, prints
//! `LISTENING <addr>` and every cluster event as
//! `EVENT <Up|Down|Restarted|Left> <addr>`, and takes commands on stdin:
//! `VIEW` prints its `members()`, `RESOLVE` prints what the name resolves
//! to in that process, by the call the cluster makes
//! (`tokio::net::lookup_host`). It leaves and exits when stdin closes. Every
//! wait is bounded; none sleeps.

mod common;

use common::members::{print_events, say_view, Members};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tether::cluster::{Cluster, ClusterConfig, Seed};
use tether::{Config, Cookie, Node};
use tether_test_support::netns::{self, Namespace, ENABLE};
use tether_test_support::process::{commands, read_lines, say, Group};
/// The child's listen address; unset in the parent.
const LISTEN: &str = "TETHER_CLUSTER_LISTEN";
/// The child's node name.
const NAME: &str = "TETHER_CLUSTER_NAME";
/// The child's seeds, comma-separated: `dns:<host>:<port>` or an address.
const SEEDS: &str = "TETHER_CLUSTER_SEEDS";
/// The name of the test function a child runs.
const CHILD_TEST: &str = "cluster_dns_child";

/// The name the members are found by.
const HOST: &str = "members.tether.test";
/// Every member listens on this port, each on its own loopback address.
const PORT: u16 = 7400;
/// Group 1: found through the name; only the first two are ever listed.
const GROUP1: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
/// Group 2: seeded by the first one's address; added to the name later.
const GROUP2: [&str; 2] = ["127.0.0.21", "127.0.0.22"];
/// How often a member resolves the name again.
const SEED_INTERVAL: Duration = Duration::from_millis(300);
/// Bound on the whole test.
const OVERALL: Duration = Duration::from_secs(58);

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.cookie = Some(Cookie::new(*b"tether cluster DNS seed test key"));
    cfg
}

// ---------------------------------------------------------------------------
// The children.

/// The children's entry point (see the module docs).
#[test]
#[ignore = "entry point of the child processes of the DNS seed test"]
fn cluster_dns_child() {
    let Ok(listen) = std::env::var(LISTEN) else { return };
    let name = std::env::var(NAME).expect("child: name");
    let seeds = std::env::var(SEEDS).expect("child: seeds");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(member(name, listen, seeds));
    rt.shutdown_timeout(Duration::from_secs(1));
}

fn parse_seed(s: &str) -> Seed {
    match s.strip_prefix("dns:") {
        Some(name) => {
            let (host, port) = name.rsplit_once(':').expect("child: dns:<host>:<port>");
            Seed::Dns { host: host.to_owned(), port: port.parse().expect("child: seed port") }
        }
        None => Seed::Addr(s.parse().expect("child: seed address")),
    }
}

async fn member(name: String, listen: String, seeds: String) {
    // The harness has printed `test cluster_dns_child ... ` without a line
    // break: start a line of our own.
    say("");
    let node = Node::new(Some(&name), config()).expect("child: node");
    let addr = node.listen(listen.as_str()).await.expect("child: listen");
    let mut cc = ClusterConfig::default();
    cc.seed_interval = SEED_INTERVAL;
    let cc = seeds.split(',').map(parse_seed).fold(cc, ClusterConfig::seed);
    let cluster = Cluster::join(&node, addr, cc).await.expect("child: join");
    print_events(cluster.subscribe());
    say(format!("LISTENING {addr}"));

    // Commands, until the parent closes stdin (or dies).
    let mut commands = commands();
    while let Some(line) = commands.recv().await {
        match line.as_str() {
            "VIEW" => say_view(&cluster),
            "RESOLVE" => match tokio::net::lookup_host((HOST, PORT)).await {
                Ok(found) => {
                    let ips: BTreeSet<String> = found.map(|a| a.ip().to_string()).collect();
                    say(format!("RESOLVED {}", ips.into_iter().collect::<Vec<_>>().join(" ")))
                }
                Err(e) => say(format!("UNRESOLVED {e}")),
            },
            _ => say(format!("ERROR unknown command {line:?}")),
        }
    }
    node.shutdown().await;
}

// ---------------------------------------------------------------------------
// The parent's side: the namespace and its DNS server.

/// A namespace with `lo` up and its own resolver configuration, and the
/// hosts file its dnsmasq answers from; all removed on drop.
struct Netns {
    namespace: Namespace,
    /// `/etc/netns/<name>`, holding `resolv.conf`.
    etc: PathBuf,
    /// The directory of the hosts file.
    dir: PathBuf,
    hosts: PathBuf,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let namespace = Namespace::add(format!("tether-dns-{pid}"));
        let dir = std::env::temp_dir().join(format!("tether-dns-{pid}"));
        let ns =
            Netns { etc: PathBuf::from("/etc/netns").join(namespace.name()), hosts: dir.join("hosts"), dir, namespace };
        ns.namespace.ip("setting lo up", &["link", "set", "lo", "up"]);
        std::fs::create_dir_all(&ns.etc).expect("create /etc/netns/<ns>");
        std::fs::write(ns.etc.join("resolv.conf"), "nameserver 127.0.0.1\n")
            .expect("write the namespace's resolv.conf");
        std::fs::create_dir_all(&ns.dir).expect("create the hosts file's directory");
        ns.set_hosts(&[]);
        ns
    }

    /// Makes the hosts file list `ips` under [`HOST`] (atomically: dnsmasq
    /// never reads half a file).
    fn set_hosts(&self, ips: &[&str]) {
        let text: String = ips.iter().map(|ip| format!("{ip} {HOST}\n")).collect();
        let new = self.dir.join("hosts.new");
        std::fs::write(&new, text).expect("write the hosts file");
        std::fs::rename(&new, &self.hosts).expect("replace the hosts file");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The namespace itself goes after this, with `self.namespace`.
        for dir in [&self.etc, &self.dir] {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!("netns: removing {} failed: {e}", dir.display());
            }
        }
    }
}

/// dnsmasq in the namespace, its log read line by line; killed and reaped
/// on drop.
struct Dnsmasq {
    proc: Child,
    log: Receiver<String>,
    hosts: String,
}

impl Dnsmasq {
    /// Starts dnsmasq on 127.0.0.1:53 in `ns`, answering only from `ns`'s
    /// hosts file, and waits until it has read it (it listens by then).
    fn start(ns: &Netns) -> Dnsmasq {
        let hosts = ns.hosts.display().to_string();
        // Root's PATH has it; look where Debian puts it too.
        let program = if std::path::Path::new("/usr/sbin/dnsmasq").exists() { "/usr/sbin/dnsmasq" } else { "dnsmasq" };
        let mut proc = ns
            .namespace
            .exec(program)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                &format!("--addn-hosts={hosts}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--port=53",
                "--log-facility=-",
                "--pid-file",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{ENABLE} is set but dnsmasq could not start ({e}); install dnsmasq"));
        let stderr = proc.stderr.take().expect("piped stderr");
        let (tx, log) = channel();
        read_lines(stderr, move |_, line| {
            line.is_some_and(|line| {
                eprintln!("[dnsmasq] {line}");
                tx.send(line).is_ok()
            })
        });
        let mut dns = Dnsmasq { proc, log, hosts };
        dns.await_read();
        dns
    }

    /// Waits for dnsmasq's next `read <hosts file>` log line.
    fn await_read(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let read = format!("read {}", self.hosts);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(&read) => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("dnsmasq did not read {} in time", self.hosts),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("dnsmasq exited (status {:?}); is port 53 free in the namespace?", self.proc.wait())
                }
            }
        }
    }

    /// SIGHUP: dnsmasq reads the hosts file again; waits until it has.
    fn reload(&mut self) {
        let pid = self.proc.id().to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status().expect("run kill(1)");
        assert!(status.success(), "kill -HUP dnsmasq failed: {status}");
        self.await_read();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

// ---------------------------------------------------------------------------
// The parent's side: the member processes.

/// Starts a member in `ns` on `ip`:[`PORT`] with `seeds`, and waits until
/// it listens.
fn start_member(m: &mut Group, ns: &Netns, ip: &str, seeds: &str) -> usize {
    let name = format!("n{}", ip.rsplit('.').next().unwrap());
    let mut cmd = ns.namespace.rerun(CHILD_TEST);
    cmd.env(LISTEN, format!("{ip}:{PORT}")).env(NAME, &name).env(SEEDS, seeds);
    let i = m.spawn(name, &mut cmd);
    let listening = format!("LISTENING {ip}:{PORT}");
    m.wait(Duration::from_secs(20), "the member listening", |m| m.log(i).iter().any(|(_, l)| *l == listening));
    i
}

/// What the name resolves to in member `i`'s process: its addresses, or
/// `None` if it does not resolve.
fn resolve(m: &mut Group, i: usize) -> Option<BTreeSet<String>> {
    let line = m.ask(i, "RESOLVE", &["RESOLVED", "UNRESOLVED"]);
    line.strip_prefix("RESOLVED").map(|ips| ips.split_whitespace().map(str::to_owned).collect())
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|ip| (*ip).to_owned()).collect()
}

#[test]
fn members_find_each_other_by_a_dns_name_and_follow_its_changes() {
    if !netns::enabled("the DNS seed test", "root, `ip` from iproute2 and dnsmasq") {
        return;
    }
    let start = Instant::now();
    let end = start + OVERALL;

    // Declared before dnsmasq and the members: dropped after them.
    let ns = Netns::create();
    let mut dns = Dnsmasq::start(&ns);
    let mut m = Group::new(end);

    // Group 1's only seed is the name; group 2 is seeded by its first
    // member's address.
    let g1: Vec<usize> = GROUP1.iter().map(|ip| start_member(&mut m, &ns, ip, &format!("dns:{HOST}:{PORT}"))).collect();
    let g2: Vec<usize> =
        GROUP2.iter().map(|ip| start_member(&mut m, &ns, ip, &format!("{}:{PORT}", GROUP2[0]))).collect();
    let all: Vec<usize> = g1.iter().chain(&g2).copied().collect();

    // dnsmasq lists nothing yet: the name does not resolve in the members'
    // processes (so no other resolver answers it), and group 1's members
    // know nobody, while group 2 forms.
    assert_eq!(resolve(&mut m, g1[0]), None, "the name resolved before dnsmasq listed it");
    m.wait(Duration::from_secs(20), "group 2 to form", |m| m.all_up(&g2));
    for &i in &g1 {
        m.check_view(i, &[]);
    }
    eprintln!("name unresolved, group 2 formed after {:?}", start.elapsed());

    // The name lists two of group 1: all four find each other, the two
    // never listed through the others.
    ns.set_hosts(&GROUP1[..2]);
    dns.reload();
    let listed = Instant::now();
    assert_eq!(resolve(&mut m, g1[3]), Some(set(&GROUP1[..2])), "the name does not resolve to what dnsmasq lists");
    m.wait(Duration::from_secs(20), "group 1 to form through the name", |m| m.all_up(&g1));
    eprintln!("group 1 formed {:?} after the name listed two of it", listed.elapsed());
    m.check_views(&g1);
    m.check_views(&g2);

    // Group 2 added to the name while both groups run: group 1 resolves it
    // again and the two merge; every member knows every other.
    let with_group2: Vec<&str> = GROUP1[..2].iter().chain(&GROUP2).copied().collect();
    ns.set_hosts(&with_group2);
    dns.reload();
    let added = Instant::now();
    assert_eq!(resolve(&mut m, g1[0]), Some(set(&with_group2)), "the name does not resolve to what dnsmasq lists now");
    m.wait(Duration::from_secs(20), "the groups to merge", |m| m.all_up(&all));
    eprintln!("groups merged {:?} after the name listed group 2", added.elapsed());
    m.check_views(&all);
    for &i in &all {
        assert!(
            m.log(i).iter().all(|(_, l)| !l.starts_with("EVENT ") || l.starts_with("EVENT Up ")),
            "{} reported more than members coming up",
            m.name(i)
        );
    }

    for status in m.shut_down(Duration::from_secs(10)) {
        assert!(status.success(), "a member exited with {status}");
    }
    let took = start.elapsed();
    eprintln!("DNS seed test took {took:?}");
    assert!(took < OVERALL, "took {took:?}");
}
