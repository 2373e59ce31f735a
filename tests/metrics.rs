//! Metrics in Prometheus format over real HTTP (feature `metrics`): the
//! exporter of the `metrics` crate serves what two nodes record, and the
//! test scrapes it as Prometheus would, with a plain HTTP GET. Its own
//! binary: the recorder is global to the process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{within, TaskMailbox};
use metrics_exporter_prometheus::PrometheusBuilder;
use tether::cluster::{Cluster, ClusterConfig};
use tether::{Config, Node, RemoteRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);
/// How long a scrape may wait for the nodes' samplers (every 50 ms here).
const SAMPLED: Duration = Duration::from_secs(10);

/// One sample of the text format: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
struct Scrape {
    samples: Vec<Sample>,
    text: String,
}

impl Scrape {
    /// The value of the series `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    fn tether(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.name.starts_with("tether_"))
    }
}

/// Installs the Prometheus exporter with its HTTP listener on a free port
/// of 127.0.0.1 (the exporter does not tell which port 0 became, so a port
/// found free is given; another process may take it first, hence the
/// retries).
fn install_exporter() -> SocketAddr {
    for _ in 0..10 {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        match PrometheusBuilder::new().with_http_listener(addr).install() {
            Ok(()) => return addr,
            Err(e) => eprintln!("exporter on {addr}: {e}"),
        }
    }
    panic!("no free port for the exporter");
}

/// `GET /metrics` over a plain TCP connection, as HTTP/1.1 with
/// `Connection: close`: the body, de-chunked if it came in chunks.
async fn get(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("the text format is UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    }
}

/// The body of a chunked transfer.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// Parses Prometheus's text format (the part of it the exporter writes:
/// label values without escapes).
fn parse(text: String) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a series and its value");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                let labels = labels
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once('=').expect("label=value");
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Scrape { samples, text }
}

/// Scrapes until `done` holds of a scrape, for at most [`SAMPLED`]. The
/// samplers announce nothing, so this polls.
async fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = String::new();
    let found = tokio::time::timeout(SAMPLED, async {
        loop {
            let scrape = parse(get(addr).await);
            if done(&scrape) {
                return scrape;
            }
            last = scrape.text;
            // Polling pace: the nodes sample every 50 ms.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting until {what}; last scrape:\n{last}"))
}

/// Two nodes over TCP record their counters; the Prometheus endpoint shows
/// them move between two scrapes, with the round trip measured; once the
/// nodes form a cluster, its members and gossip too; and no labels but
/// `node`, `peer` and `actor`, whose values are the nodes' and the named
/// export's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_on_the_prometheus_endpoint() {
    within(T, async {
        let http = install_exporter();
        let mut cfg = Config::default();
        cfg.metrics_interval = Duration::from_millis(50);
        cfg.ping_interval = Duration::from_millis(20);

        let b = Node::new(Some("b"), cfg.clone()).unwrap();
        let addr = b.listen("127.0.0.1:0").await.unwrap();
        let (tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<u64>();
        b.export(Some("sink"), TaskMailbox(tx)).unwrap();
        // An unnamed export is not labelled.
        let (tx, _unnamed) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let _hidden: RemoteRef<u64> = b.export(None, TaskMailbox(tx)).unwrap();

        let a = Node::new(Some("a"), cfg).unwrap();
        let b_id = a.connect(addr).await.unwrap();
        let sink = a.lookup::<u64>(b_id, "sink").await.unwrap();

        let a_to_b = [("node", "a"), ("peer", "b")];
        let b_from_a = [("node", "b"), ("peer", "a")];
        let at_sink = [("node", "b"), ("actor", "sink")];
        // Every series `moved` reads below is there before the messages go.
        let before = scrape_until(http, "a's round trip to b is measured and b's sink is recorded", |s| {
            s.get("tether_rtt_seconds", &a_to_b).is_some_and(|rtt| rtt > 0.0)
                && s.get("tether_actor_messages_delivered_total", &at_sink).is_some()
                && ["tether_messages_sent_total", "tether_bytes_sent_total"].iter().all(|n| s.get(n, &a_to_b).is_some())
                && ["tether_messages_received_total", "tether_bytes_received_total"]
                    .iter()
                    .all(|n| s.get(n, &b_from_a).is_some())
        })
        .await;

        const N: u64 = 200;
        for i in 0..N {
            sink.tell(i).await.unwrap();
        }
        for _ in 0..N {
            arrived.recv().await.unwrap();
        }
        // Each node samples on its own: both have, once these moved. A u64
        // and its table are a few bytes each.
        let moved = |s: &Scrape, name: &str, labels: &[(&str, &str)]| {
            let value = |s: &Scrape| s.get(name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}:\n{}", s.text));
            value(s) - value(&before)
        };
        let n = N as f64;
        let after = scrape_until(http, "the messages are recorded by both nodes", |s| {
            moved(s, "tether_actor_messages_delivered_total", &at_sink) >= n
                && moved(s, "tether_messages_sent_total", &a_to_b) >= n
                && moved(s, "tether_bytes_sent_total", &a_to_b) >= 2.0 * n
                && moved(s, "tether_messages_received_total", &b_from_a) >= n
                && moved(s, "tether_bytes_received_total", &b_from_a) >= 2.0 * n
        })
        .await;
        assert_eq!(moved(&after, "tether_actor_messages_delivered_total", &at_sink), n, "each delivery once");
        assert_eq!(after.get("tether_peers", &[("node", "a")]), Some(1.0));
        assert_eq!(after.get("tether_exports", &[("node", "b")]), Some(2.0));
        assert_eq!(after.get("tether_sends_refused_total", &a_to_b), Some(0.0));
        assert_eq!(after.get("tether_messages_undecodable_total", &b_from_a), Some(0.0));
        assert_eq!(after.get("tether_messages_unread_total", &b_from_a), Some(0.0));
        assert!(after.text.contains("# HELP tether_bytes_sent_total"), "described:\n{}", after.text);

        // A new connection to the same peer counts from zero; its series go
        // on from where the old one's stopped, so nothing sent is missed.
        let old = a.connection(b_id).unwrap();
        old.close().await;
        drop(old);
        common::eventually("a forgets the closed connection", T, || a.peers().is_empty()).await;
        assert_eq!(a.connect(addr).await.unwrap(), b_id);
        let sink = a.lookup::<u64>(b_id, "sink").await.unwrap();
        for i in 0..N {
            sink.tell(i).await.unwrap();
        }
        for _ in 0..N {
            arrived.recv().await.unwrap();
        }
        let after = scrape_until(http, "the second connection's messages are added", |s| {
            moved(s, "tether_actor_messages_delivered_total", &at_sink) >= 2.0 * n
                && moved(s, "tether_messages_sent_total", &a_to_b) >= 2.0 * n
                && moved(s, "tether_messages_received_total", &b_from_a) >= 2.0 * n
        })
        .await;
        assert_eq!(moved(&after, "tether_actor_messages_delivered_total", &at_sink), 2.0 * n, "each delivery once");

        // Membership: each member sees the other up, and gossip flows.
        let a_addr = a.listen("127.0.0.1:0").await.unwrap();
        let _on_b = Cluster::join(&b, addr, ClusterConfig::default()).await.unwrap();
        let _on_a = Cluster::join(&a, a_addr, ClusterConfig::default().seed(addr)).await.unwrap();
        let last = scrape_until(http, "each member sees the other up", |s| {
            ["a", "b"].into_iter().all(|n| {
                s.get("tether_cluster_members", &[("node", n)]) == Some(1.0)
                    && s.get("tether_gossip_received_total", &[("node", n)]).is_some_and(|v| v > 0.0)
            })
        })
        .await;

        // Bounded labels: each series names a node, and a peer or a named
        // actor at most, and only these.
        let keys: BTreeSet<Vec<&str>> = last.tether().map(|s| s.labels.keys().map(String::as_str).collect()).collect();
        let expected: BTreeSet<Vec<&str>> = [vec!["node"], vec!["node", "peer"], vec!["actor", "node"]].into();
        assert_eq!(keys, expected);
        let values = |key: &str| -> BTreeSet<&str> {
            last.tether().filter_map(|s| s.labels.get(key)).map(String::as_str).collect()
        };
        assert_eq!(values("node"), ["a", "b"].into());
        assert_eq!(values("peer"), ["a", "b"].into());
        // The cluster's own named export: its registry's actor.
        assert_eq!(values("actor"), ["sink", "tether.registry"].into());

        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}
