//! Property tests of hostile gossip against an engine in a settled cluster,
//! with datagrams the cluster really sent as the starting point of
//! mutations. The rules are those of [`super::hostile`].

use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;

use super::hostile::{self, deliver, envelope};
use super::sim::{Net, Sim};
use crate::auth::Cookie;
use crate::cluster::envelope::Envelope;
use crate::cluster::ClusterConfig;

/// Members of the settled cluster; the engine under test is the first.
const N: usize = 4;

/// The settled cluster (the same every time: the run is seeded), and the
/// datagrams the engine under test received while it formed.
fn cluster() -> (Sim, Vec<Vec<u8>>) {
    let mut sim = Sim::new(42, ClusterConfig::default(), Net::lan());
    sim.delivered = Some(Vec::new());
    let all = sim.start_cluster(N);
    sim.run_until_true(Duration::from_secs(10), |s| s.converged(&all)).expect("the cluster converges");
    sim.run_for(Duration::from_secs(5));
    let real = sim.delivered.take().unwrap_or_default().into_iter().filter(|(i, _)| *i == 0).map(|(_, d)| d).collect();
    (sim, real)
}

/// The datagrams of [`cluster`], computed once.
fn real() -> &'static [Vec<u8>] {
    static REAL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    REAL.get_or_init(|| {
        let real = cluster().1;
        assert!(real.len() > 20, "the cluster's gossip was recorded");
        real
    })
}

/// How a byte string is altered: flip bits at a position, cut it there,
/// or insert a byte there (positions wrap around the length).
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match *m {
            Mutation::Flip(p, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[p % n] ^= b;
            }
            Mutation::Cut(p) if !bytes.is_empty() => bytes.truncate(p % bytes.len()),
            Mutation::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
            _ => {}
        }
    }
    bytes
}

/// Delivers each of `datagrams` to the engine under test in a fresh
/// settled cluster, checking the rules of [`hostile::deliver`] at each;
/// returns how many passed the envelope.
fn attack(datagrams: &[Vec<u8>]) -> Result<usize, TestCaseError> {
    let (mut sim, _) = cluster();
    let open = envelope();
    let max = sim.cfg.max_members;
    let mut opened = 0;
    for d in datagrams {
        opened += usize::from(open.open(d).is_ok());
        let engine = &mut sim.procs[0].engine;
        deliver(engine, &open, d, max).map_err(TestCaseError::fail)?;
        while engine.poll_transmit().is_some() {}
    }
    Ok(opened)
}

fn seal(payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    envelope().seal(payload, &mut d);
    d
}

fn payload(datagram: &[u8]) -> Vec<u8> {
    envelope().open(datagram).expect("the cluster's own datagram opens").to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Anything that is not sealed with the cookie is dropped unread: the
    /// view, the events and the datagrams sent are as if it never came.
    #[test]
    fn unsealed_bytes_change_nothing(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        gossip_like in any::<bool>(),
    ) {
        let bytes = if gossip_like { [&b"TG\x01"[..], &bytes].concat() } else { bytes };
        prop_assert_eq!(attack(&[bytes])?, 0);
    }

    /// The cluster's own datagrams, altered after sealing or sealed again
    /// under another cookie, change nothing either.
    #[test]
    fn real_datagrams_altered_or_under_another_cookie_change_nothing(
        pick in any::<proptest::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
        other in any::<[u8; 32]>(),
    ) {
        prop_assume!(other != hostile::COOKIE);
        let real = pick.get(real());
        let mut resealed = Vec::new();
        Envelope::new(Some(&Cookie::new(other))).seal(&payload(real), &mut resealed);
        let altered = mutate(real.clone(), &mutations);
        prop_assume!(&altered != real);
        prop_assert_eq!(attack(&[altered, resealed])?, 0);
    }

    /// Arbitrary bytes sealed with the cookie reach foca's decoder: no
    /// panic, and only the members they name change.
    #[test]
    fn sealed_bytes_change_only_the_members_they_name(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 1..8),
    ) {
        let datagrams: Vec<Vec<u8>> = payloads.iter().map(|p| seal(p)).collect();
        prop_assert_eq!(attack(&datagrams)?, datagrams.len());
    }

    /// The cluster's own payloads, altered and sealed again (what a member
    /// with a bug could send): no panic, and only the members they name
    /// change.
    #[test]
    fn real_payloads_altered_and_resealed_change_only_the_members_they_name(
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), proptest::collection::vec(mutation(), 1..4)), 1..10),
    ) {
        let datagrams: Vec<Vec<u8>> =
            picks.iter().map(|(pick, m)| seal(&mutate(payload(pick.get::<Vec<u8>>(real())), m))).collect();
        attack(&datagrams)?;
    }

    /// The fuzz harness on scripts of described datagrams and timer
    /// firings: its own checks hold, and the view stays within its bound.
    #[test]
    fn described_gossip_scripts_keep_the_rules(
        steps in proptest::collection::vec(
            (0..4u8, proptest::collection::vec(any::<u8>(), 0..40)), 1..60),
    ) {
        let mut script = Vec::new();
        for (op, body) in &steps {
            // Mostly described payloads, which reach the deepest.
            let op = if *op == 0 { 3 } else { *op };
            script.push(op);
            script.extend_from_slice(&(body.len() as u16).to_le_bytes());
            script.extend_from_slice(body);
        }
        let summary = hostile::run(&script);
        prop_assert!(summary.peak_members <= hostile::FUZZ_MAX_MEMBERS);
    }
}
