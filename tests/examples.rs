//! The examples print what their docs claim: each is run (as `cargo test`
//! built it) and its output checked.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The example `name` as `cargo test` built it, beside this test's binary.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("examples").join(name)
}

/// Runs an example, at most 60 s, and returns what it printed.
fn run(name: &str) -> String {
    let path = example(name);
    assert!(path.exists(), "{} not built (cargo test builds the examples)", path.display());
    let mut child = Command::new(&path).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
            assert!(status.success(), "{name} failed: {status}\n{out}");
            return out;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{name} did not finish within 60 s");
        }
        // Polling a child process's exit: nothing to await in std.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn actix_chat_server_talks_across_nodes() {
    let out = run("actix_chat");
    for line in [
        "alice hears: Someone joined",
        "alice hears: Someone connected",
        "bob hears: hello, bob",
        "bob hears: Someone disconnected",
        "rooms: [\"main\", \"rust\"]",
        "done",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn ractor_counter_counts_across_nodes() {
    let out = run("ractor_counter");
    for line in ["Count is: 10", "Count is: 20", "Count is: 30", "Count is: 40"] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn ping_pong_ends_with_the_death_watch() {
    let out = run("ping_pong");
    assert!(out.lines().any(|l| l.ends_with("the death watch said Stopped { reason: None }")), "{out}");
    assert!(out.lines().last().is_some_and(|l| l.ends_with("done")), "{out}");
}

#[test]
fn chat_room_sees_both_members_leave() {
    let out = run("chat");
    assert!(out.contains("bob: bye, room!"), "{out}");
    assert!(out.lines().any(|l| l.contains("empty; alice's process exited")), "{out}");
}

#[test]
fn cluster_members_see_each_other_leave() {
    let out = run("cluster");
    assert!(out.lines().any(|l| l.contains("NodeLeft")), "{out}");
    assert!(out.lines().last().is_some_and(|l| l.ends_with("the end")), "{out}");
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_are_served_in_prometheus_format() {
    let out = run("metrics");
    // 30 rounds of 100 casts and a call, all delivered.
    for line in ["tether_actor_messages_delivered_total{node=\"b\",actor=\"counter\"} 3030", "done"] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("tether_rtt_seconds{node=\"a\",peer=\"b\"} ")), "{out}");
}
