//! The counting actor of the namespace tests (`tests/netns.rs`,
//! `tests/cluster_netns.rs`): it takes numbered messages and checks their
//! order itself, so a child process can report what arrived in one line.

use serde::{Deserialize, Serialize};
use tether::ReplyPort;
use tokio::sync::mpsc::unbounded_channel;

use super::TaskMailbox;

/// What the counting actor takes; shared by the processes of a test.
#[derive(Serialize, Deserialize)]
pub enum Count {
    Num(u64),
    /// How many `Num`s arrived so far.
    Received(ReplyPort<u64>),
    Report(ReplyPort<Report>),
}

/// What the actor saw. Displayed as `<received> <next> <violation|none>`,
/// a violation as `expected-<want>-got-<got>`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub struct Report {
    /// `Num`s received.
    pub received: u64,
    /// The number it expects next.
    pub next: u64,
    /// The first out-of-order number: (expected, got).
    pub first_violation: Option<(u64, u64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ", self.received, self.next)?;
        match self.first_violation {
            Some((want, got)) => write!(f, "expected-{want}-got-{got}"),
            None => write!(f, "none"),
        }
    }
}

/// The counting actor: checks the order itself.
pub fn counter() -> TaskMailbox<Count> {
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
