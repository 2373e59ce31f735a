//! What a sensible stream of cluster events is, checked against the view it
//! should describe.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::super::{ClusterEvent, DownReason, Member, MemberStatus};

/// The member an event is about.
pub(crate) fn subject(e: &ClusterEvent) -> &Member {
    match e {
        ClusterEvent::NodeUp(m) | ClusterEvent::NodeLeft(m) => m,
        ClusterEvent::NodeDown { member, .. } | ClusterEvent::NodeRestarted { member, .. } => member,
    }
}

/// Checks that `events` (one engine's, in order, each with a label such as
/// the time it came) are a sensible history per member, and that replaying
/// them gives exactly `members`, the engine's view:
/// - the first event about an address is `NodeUp`;
/// - `NodeUp` only for a member not up, and for the id last known there
///   (a new id is `NodeRestarted`);
/// - `NodeRestarted { old }` names the id last known there and brings a
///   new one;
/// - `NodeDown` and `NodeLeft` only for the member up there, by its id;
/// - every event's member carries the status the event gives it.
///
/// With `forgetful`, the view may have dropped members down or left (a full
/// view makes room that way): such a member may be missing from the view,
/// and may come back under another id as `NodeUp`.
pub(crate) fn check_history<L: std::fmt::Debug>(
    events: &[(L, ClusterEvent)],
    members: &[Member],
    forgetful: bool,
) -> Result<(), String> {
    let mut known: HashMap<SocketAddr, Member> = HashMap::new();
    for (label, e) in events {
        let m = subject(e);
        let before = known.get(&m.addr);
        let bad = |why: &str| Err(format!("at {label:?}: {why}: {e:?} after {before:?}"));
        let want = match e {
            ClusterEvent::NodeUp(_) => match before {
                Some(b) if b.status == MemberStatus::Up => return bad("up twice"),
                Some(b) if b.id != m.id && !forgetful => return bad("a new id is a restart, not an up"),
                _ => MemberStatus::Up,
            },
            ClusterEvent::NodeRestarted { old, .. } => match before {
                Some(b) if b.id == *old && m.id != *old => MemberStatus::Up,
                _ => return bad("restart of an id not known there"),
            },
            ClusterEvent::NodeDown { reason, .. } => match before {
                Some(b) if b.status == MemberStatus::Up && b.id == m.id => {
                    if *reason != DownReason::Unreachable {
                        return bad("unknown reason");
                    }
                    MemberStatus::Down
                }
                _ => return bad("down of a member not up"),
            },
            ClusterEvent::NodeLeft(_) => match before {
                Some(b) if b.status == MemberStatus::Up && b.id == m.id => MemberStatus::Left,
                _ => return bad("left of a member not up"),
            },
        };
        if m.status != want {
            return bad("event's member has the wrong status");
        }
        known.insert(m.addr, m.clone());
    }
    let mut replayed: Vec<Member> = known.into_values().collect();
    replayed.sort_by_key(|m| m.addr);
    if forgetful {
        replayed.retain(|m| m.status == MemberStatus::Up || members.iter().any(|v| v.addr == m.addr));
    }
    if replayed != members {
        return Err(format!("events replay to {replayed:#?}\nbut the view is {members:#?}"));
    }
    Ok(())
}
