//! Deterministic tests of the membership engine: many engines on a
//! simulated network and a virtual clock ([`sim`]), so that convergence,
//! failure detection, leaves, restarts and partitions are checked in
//! milliseconds of real time and replay exactly from their seed; and
//! hostile input ([`hostile`], driven by property tests here and by
//! `tether::fuzz::gossip`). On the same network, a property test of the
//! replicated registry under random joins, leaves, restarts and partitions
//! ([`registry`]).
//!
//! Every scenario ends by checking each engine's whole event history
//! ([`history::check_history`]): ordered per member, and replaying to the
//! view the engine reports.

mod history;
pub(crate) mod hostile;
#[cfg(test)]
mod props;
#[cfg(test)]
mod registry;
#[cfg(test)]
mod sim;

#[cfg(test)]
mod scenarios {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::sim::{Net, Sim};
    use crate::cluster::{ClusterConfig, ClusterEvent, MemberStatus};
    use crate::NodeId;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A cluster of `n` from one seed, run until every member sees every
    /// other up (at most 10 s), then 5 s more so the news has settled.
    fn settled(seed: u64, n: usize, net: Net) -> (Sim, Vec<usize>) {
        let mut sim = Sim::new(seed, ClusterConfig::default(), net);
        let all = sim.start_cluster(n);
        sim.run_until_true(secs(10), |s| s.converged(&all)).expect("the cluster converges within 10 s");
        // At rest: past the announces every member makes in its first
        // seconds (the engine's joining pace).
        sim.run_for(secs(12));
        assert!(sim.converged(&all));
        (sim, all)
    }

    /// What `i` reported about `addr` since `t0`, as (kind, id) pairs.
    fn said(sim: &Sim, i: usize, addr: SocketAddr, t0: Duration) -> Vec<(&'static str, NodeId, Option<NodeId>)> {
        sim.events_about(i, addr, t0)
            .into_iter()
            .map(|(_, e)| match e {
                ClusterEvent::NodeUp(m) => ("up", m.id, None),
                ClusterEvent::NodeDown { member, .. } => ("down", member.id, None),
                ClusterEvent::NodeLeft(m) => ("left", m.id, None),
                ClusterEvent::NodeRestarted { old, member } => ("restarted", member.id, Some(old)),
            })
            .collect()
    }

    /// Events anyone in `group` reported since `t0` about a member not in
    /// `about`.
    fn stray_events(sim: &Sim, group: &[usize], about: &[SocketAddr], t0: Duration) -> Vec<(usize, ClusterEvent)> {
        let mut stray = Vec::new();
        for &i in group {
            for (t, e) in &sim.procs[i].events {
                if *t >= t0 && !about.contains(&super::history::subject(e).addr) {
                    stray.push((i, e.clone()));
                }
            }
        }
        stray
    }

    #[test]
    fn thirty_two_members_converge_from_one_seed_within_two_seconds() {
        let mut worst = Duration::ZERO;
        for seed in 0..5 {
            let mut sim = Sim::new(seed, ClusterConfig::default(), Net::lan());
            let all = sim.start_cluster(32);
            let took = sim.run_until_true(secs(10), |s| s.converged(&all)).expect("converged within 10 s");
            eprintln!("seed {seed}: 32 members all see all up after {took:?} of virtual time");
            worst = worst.max(took);
            sim.run_for(secs(30));
            assert!(sim.converged(&all), "seed {seed}: the view stays whole");
            for &i in &all {
                let ups = sim.procs[i].events.iter().filter(|(_, e)| matches!(e, ClusterEvent::NodeUp(_))).count();
                assert_eq!(
                    (ups, sim.procs[i].events.len()),
                    (31, 31),
                    "seed {seed}: member {i} saw 31 ups, nothing else"
                );
            }
            sim.check_histories();
        }
        eprintln!("32 members from one seed: worst convergence {worst:?}");
        assert!(worst <= secs(2), "32 members took {worst:?} to converge, target 2 s");
    }

    #[test]
    fn a_silent_member_is_reported_down_by_every_other_once_within_five_seconds() {
        let mut worst = Duration::ZERO;
        for seed in 0..8 {
            let (mut sim, all) = settled(seed, 16, Net::lan());
            // The seed itself is silenced in one run.
            let victim = all[seed as usize % 4 * 5 % 16];
            let gone = (sim.procs[victim].addr, sim.procs[victim].id);
            let t0 = sim.now;
            sim.stop(victim);
            sim.run_for(secs(60));
            let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
            for &i in &others {
                let events = sim.events_about(i, gone.0, t0);
                assert_eq!(said(&sim, i, gone.0, t0), [("down", gone.1, None)], "seed {seed}: member {i}");
                let took = events[0].0 - t0;
                worst = worst.max(took);
                assert!(took <= secs(5), "seed {seed}: member {i} reported the silent member down after {took:?}");
                assert_eq!(sim.status(i, gone.0), Some(MemberStatus::Down));
            }
            assert_eq!(stray_events(&sim, &others, &[gone.0], t0), [], "seed {seed}: nobody else changed");
            sim.check_histories();
        }
        eprintln!("silent member: reported down everywhere within {worst:?}");
    }

    #[test]
    fn no_false_down_in_ten_minutes_of_loss_and_jitter() {
        let net = Net { latency: Duration::from_millis(1), jitter: Duration::from_millis(30), loss: 0.05 };
        for seed in 0..3 {
            let mut sim = Sim::new(seed, ClusterConfig::default(), net);
            let all = sim.start_cluster(8);
            sim.run_until_true(secs(30), |s| s.converged(&all)).expect("converges despite loss");
            sim.run_until(secs(600));
            assert!(sim.converged(&all), "seed {seed}");
            for &i in &all {
                let events = &sim.procs[i].events;
                assert!(
                    events.iter().all(|(_, e)| matches!(e, ClusterEvent::NodeUp(_))) && events.len() == 7,
                    "seed {seed}: member {i} reported more than its 7 ups: {events:#?}"
                );
            }
            sim.check_histories();
        }
    }

    #[test]
    fn a_member_that_leaves_is_reported_left_by_every_other_in_any_delivery_order() {
        let net = Net { latency: Duration::from_millis(1), jitter: Duration::from_millis(20), loss: 0.0 };
        for seed in 0..16 {
            let (mut sim, all) = settled(seed, 8, net);
            let leaver = all[seed as usize % 8];
            let gone = (sim.procs[leaver].addr, sim.procs[leaver].id);
            let t0 = sim.now;
            sim.leave(leaver);
            sim.run_for(secs(60));
            let others: Vec<usize> = all.iter().copied().filter(|&i| i != leaver).collect();
            for &i in &others {
                assert_eq!(said(&sim, i, gone.0, t0), [("left", gone.1, None)], "seed {seed}: member {i}");
                assert_eq!(sim.status(i, gone.0), Some(MemberStatus::Left));
            }
            assert_eq!(stray_events(&sim, &others, &[gone.0], t0), [], "seed {seed}: nobody else changed");
            assert_eq!(sim.procs[leaver].engine.me().status, MemberStatus::Left);
            sim.check_histories();
        }
    }

    /// A process killed and started again at its address, `after` later.
    fn restart(seed: u64, after: Duration, expect: &[&str]) {
        let (mut sim, all) = settled(seed, 8, Net::lan());
        let victim = all[seed as usize % 8];
        let addr = sim.procs[victim].addr;
        let old = sim.procs[victim].id;
        let seed_addr = sim.procs[all[0]].addr;
        let t0 = sim.now;
        sim.stop(victim);
        sim.run_for(after);
        let seeds = if addr == seed_addr { Vec::new() } else { vec![seed_addr] };
        let new = sim.start(addr, &seeds);
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
        let mut group = others.clone();
        group.push(new);
        let t1 = sim.now;
        let took = sim.run_until_true(t1 + secs(30), |s| s.converged(&group)).map(|t| t - t1);
        eprintln!("seed {seed}, restart after {after:?}: all see the new process after {took:?}");
        assert!(took.is_some(), "seed {seed}: the new process is known to all within 30 s, and knows all");
        sim.run_for(secs(30));
        let new_id = sim.procs[new].id;
        for &i in &others {
            let got = said(&sim, i, addr, t0);
            let want: Vec<_> = expect
                .iter()
                .map(|&k| match k {
                    "down" => ("down", old, None),
                    _ => ("restarted", new_id, Some(old)),
                })
                .collect();
            assert_eq!(got, want, "seed {seed}: member {i}");
        }
        assert_eq!(stray_events(&sim, &others, &[addr], t0), [], "seed {seed}: nobody else changed");
        sim.check_histories();
    }

    #[test]
    fn a_process_restarted_at_once_is_reported_restarted() {
        for seed in 1..8 {
            restart(seed, Duration::from_millis(100), &["restarted"]);
        }
    }

    /// A restarted seed has no seed of its own: nobody hears of it until
    /// the others' next seed round (every 5 s), and its predecessor is
    /// reported down first. (Probes for the old process reach the new one,
    /// but foca ignores datagrams addressed to another identity.)
    #[test]
    fn a_seed_restarted_at_once_is_reported_down_then_restarted() {
        for seed in [0, 8] {
            restart(seed, Duration::from_millis(100), &["down", "restarted"]);
        }
    }

    #[test]
    fn a_process_restarted_after_it_was_reported_down_is_reported_restarted() {
        for seed in 0..8 {
            restart(seed, secs(10), &["down", "restarted"]);
        }
    }

    /// One member cut off for `cut`, then healed.
    fn partition(seed: u64, cut: Duration) {
        let (mut sim, all) = settled(seed, 8, Net::lan());
        let island = all[1 + seed as usize % 7];
        let (addr, id) = (sim.procs[island].addr, sim.procs[island].id);
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != island).collect();
        let t0 = sim.now;
        sim.cut(addr);
        sim.run_for(cut);
        for &i in &others {
            assert_eq!(said(&sim, i, addr, t0), [("down", id, None)], "seed {seed}: member {i}");
            let (t, _) = sim.events_about(i, addr, t0)[0];
            assert!(t - t0 <= secs(5), "seed {seed}: member {i} took {:?}", t - t0);
        }
        for &j in &others {
            let addr_j = sim.procs[j].addr;
            assert_eq!(said(&sim, island, addr_j, t0), [("down", sim.procs[j].id, None)], "seed {seed}: the island");
        }
        sim.heal(addr);
        let t1 = sim.now;
        let took = sim.run_until_true(t1 + secs(60), |s| s.converged(&all)).map(|t| t - t1);
        eprintln!("seed {seed}: partition of {cut:?} healed; views whole again after {took:?}");
        assert!(took.is_some(), "seed {seed}: views recover within 60 s of the heal");
        sim.run_for(secs(30));
        for &i in &others {
            assert_eq!(said(&sim, i, addr, t0), [("down", id, None), ("up", id, None)], "seed {seed}: member {i}");
        }
        for &j in &others {
            let (addr_j, id_j) = (sim.procs[j].addr, sim.procs[j].id);
            assert_eq!(said(&sim, island, addr_j, t0), [("down", id_j, None), ("up", id_j, None)], "seed {seed}");
        }
        assert_eq!(stray_events(&sim, &others, &[addr], t0), [], "seed {seed}: the majority saw nothing else");
        sim.check_histories();
    }

    #[test]
    fn a_partitioned_member_is_reported_down_then_up_and_its_view_recovers() {
        for seed in 0..6 {
            partition(seed, secs(20));
        }
    }

    #[test]
    fn a_partition_longer_than_down_members_are_remembered_heals_through_the_seeds() {
        for seed in 0..3 {
            partition(seed, secs(180));
        }
    }

    /// Random faults on a lossy network: whatever happens, every engine's
    /// events are a sensible history that replays to its view.
    #[test]
    fn events_stay_ordered_per_member_through_random_faults() {
        use rand::{RngExt, SeedableRng};
        let net = Net { latency: Duration::from_millis(1), jitter: Duration::from_millis(40), loss: 0.1 };
        for seed in 0..10 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut sim = Sim::new(seed, ClusterConfig::default(), net);
            let all = sim.start_cluster(10);
            let seed_addr = sim.procs[all[0]].addr;
            let mut cut = Vec::new();
            for _ in 0..40 {
                sim.run_for(Duration::from_millis(rng.random_range(100..4000)));
                let running = sim.running();
                let who = running[rng.random_range(0..running.len())];
                let addr = sim.procs[who].addr;
                match rng.random_range(0..6) {
                    0 if running.len() > 4 => sim.stop(who),
                    1 => {
                        sim.stop(who);
                        let seeds = if addr == seed_addr { vec![] } else { vec![seed_addr] };
                        sim.start(addr, &seeds);
                    }
                    2 if running.len() > 4 => sim.leave(who),
                    3 => {
                        sim.cut(addr);
                        cut.push(addr);
                    }
                    4 => {
                        if let Some(a) = cut.pop() {
                            sim.heal(a);
                        }
                    }
                    _ => {}
                }
            }
            sim.run_for(secs(60));
            sim.check_histories();
        }
    }
}
