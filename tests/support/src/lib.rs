//! Plumbing shared by the tests of tether, tether-actix and tether-ractor:
//! bounded waiting, so that a bug shows as a failure naming what was
//! awaited, never as a hang ([`within`], [`eventually`]); child processes
//! that talk to the test in lines ([`process`]); and network namespaces for
//! the tests that need real links ([`netns`]).

pub mod netns;
pub mod process;

use std::future::Future;
use std::time::Duration;

/// Runs `fut` with a deadline: a bug shows as a failure, not a hang. The
/// limit is a safety net for a wait on an event, never a measurement.
pub async fn within<F: Future>(limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("not done within {limit:?}"),
    }
}

/// Waits until `cond` holds, checking after every scheduling turn and then
/// every millisecond, for at most `limit`; panics with `what` otherwise. For
/// states reached by background work that announces nothing (a pump task
/// noticing a closed port, say); where an event can be awaited, await it.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut turns = 0u32;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        if turns < 100 {
            tokio::task::yield_now().await;
            turns += 1;
        } else {
            // Polling pace of a condition nothing announces.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
