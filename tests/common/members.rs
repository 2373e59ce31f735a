//! Cluster members in child processes (`tests/cluster_netns.rs`,
//! `tests/cluster_dns.rs`), both sides of the lines they print: a member
//! prints `LISTENING <addr>` once, then every cluster event as
//! `EVENT <Up|Down|Restarted|Left> <addr>`, and answers the command `VIEW`
//! with `VIEW <addr>=<status> ...`, its `members()`. The parent keeps the
//! members' lines in a [`Group`], member `i` its child `i`.

use std::collections::BTreeMap;
use std::time::Duration;

use tether::cluster::{Cluster, ClusterEvent, EventsError, Subscription};
use tether_test_support::process::{say, Group};

// ---------------------------------------------------------------------------
// The member's side.

/// Prints the cluster's events as `EVENT <kind> <addr>` lines; lagging
/// behind them is an `ERROR`.
pub fn print_events(mut events: Subscription) {
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

/// Prints `VIEW <addr>=<status> ...`: the answer to `VIEW`.
pub fn say_view(cluster: &Cluster) {
    let members: Vec<String> = cluster.members().iter().map(|m| format!("{}={:?}", m.addr, m.status)).collect();
    say(format!("VIEW {}", members.join(" ")));
}

// ---------------------------------------------------------------------------
// The parent's side.

/// The members' lines, read as the members' protocol.
pub trait Members {
    /// Where member `i` listens, from its `LISTENING` line.
    fn addr(&self, i: usize) -> &str;
    /// What member `i` last reported of the member at `addr` (`Up`, `Down`,
    /// ...), if anything.
    fn status(&self, i: usize, addr: &str) -> Option<&str>;
    /// Whether each of `group` has reported every other of `group` up.
    fn all_up(&self, group: &[usize]) -> bool;
    /// Sends `command` to member `i` and returns the first line it prints
    /// afterwards that starts with one of `answers`.
    fn ask(&mut self, i: usize, command: &str, answers: &[&str]) -> String;
    /// Checks that member `i`'s `members()` lists exactly `others`, all up.
    fn check_view(&mut self, i: usize, others: &[usize]);
    /// Checks that each of `group` lists every other of `group` up, and
    /// nobody else.
    fn check_views(&mut self, group: &[usize]);
}

impl Members for Group {
    fn addr(&self, i: usize) -> &str {
        &self.last(i, "LISTENING ").expect("the member listens")["LISTENING ".len()..]
    }

    fn status(&self, i: usize, addr: &str) -> Option<&str> {
        self.log(i).iter().rev().find_map(|(_, l)| {
            let (kind, at) = l.strip_prefix("EVENT ")?.split_once(' ')?;
            (at == addr).then_some(kind)
        })
    }

    fn all_up(&self, group: &[usize]) -> bool {
        group.iter().all(|&i| group.iter().filter(|&&j| j != i).all(|&j| self.status(i, self.addr(j)) == Some("Up")))
    }

    fn ask(&mut self, i: usize, command: &str, answers: &[&str]) -> String {
        let before = self.log(i).len();
        self.send_line(i, command);
        let answer = |g: &Group| {
            g.log(i)[before..].iter().map(|(_, l)| l).find(|l| answers.iter().any(|a| l.starts_with(a))).cloned()
        };
        self.wait(Duration::from_secs(10), &format!("an answer to {command}"), |g| answer(g).is_some());
        answer(self).unwrap()
    }

    fn check_view(&mut self, i: usize, others: &[usize]) {
        let line = self.ask(i, "VIEW", &["VIEW"]);
        let view: BTreeMap<&str, &str> =
            line.split_whitespace().skip(1).map(|e| e.split_once('=').expect("addr=status")).collect();
        let want: BTreeMap<&str, &str> = others.iter().map(|&j| (self.addr(j), "Up")).collect();
        assert_eq!(view, want, "{}'s members() does not list every other member up", self.name(i));
    }

    fn check_views(&mut self, group: &[usize]) {
        for &i in group {
            let others: Vec<usize> = group.iter().copied().filter(|&j| j != i).collect();
            self.check_view(i, &others);
        }
    }
}
