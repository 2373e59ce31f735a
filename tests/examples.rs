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

/// One trace across two processes: the span that delivers a message on the
/// owner is the child of the sender's `request`, the handler's span a child
/// of the delivery, in OpenTelemetry's stdout format.
#[cfg(feature = "opentelemetry")]
#[test]
fn tracing_links_the_handler_to_the_sender_across_processes() {
    let out = run("tracing");
    assert!(out.lines().any(|l| l == "the worker answered 42"), "{out}");
    // (name, trace id, span id, parent span id) of every span printed.
    // A span's block starts with `Span #n`; its own fields come first, one
    // tab in (its scope's are two in, its events' come after).
    let mut spans = Vec::new();
    let mut span: Option<Vec<String>> = None;
    for line in out.lines() {
        if line.starts_with("Span #") {
            span = Some(Vec::new());
            continue;
        }
        let (Some(fields), Some(field)) = (span.as_mut(), line.strip_prefix('\t')) else { continue };
        let Some((key, value)) = field.split_once(" : ").map(|(k, v)| (k.trim(), v.trim())) else { continue };
        if matches!(key, "Name" | "TraceId" | "SpanId" | "ParentSpanId") && !field.starts_with('\t') {
            fields.push(value.to_owned());
        }
        if key == "ParentSpanId" {
            let [name, trace, id, parent] = &fields[..] else { panic!("span fields {fields:?} in:\n{out}") };
            spans.push((name.clone(), trace.clone(), id.clone(), parent.clone()));
            span = None;
        }
    }
    let request = spans.iter().find(|s| s.0 == "request").unwrap_or_else(|| panic!("no request span in:\n{out}"));
    let receives: Vec<_> = spans.iter().filter(|s| s.0 == "receive").collect();
    assert_eq!(receives.len(), 2, "a cast and a call: {spans:#?}");
    for r in &receives {
        assert_eq!((&r.1, &r.3), (&request.1, &request.2), "receive continues request: {spans:#?}");
    }
    let handles: Vec<_> = spans.iter().filter(|s| s.0 == "handle").collect();
    assert_eq!(handles.len(), 2, "{spans:#?}");
    assert!(handles.iter().all(|h| h.1 == request.1 && receives.iter().any(|r| r.2 == h.3)), "{spans:#?}");
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
