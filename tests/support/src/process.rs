//! Child processes that talk to the test in lines.
//!
//! A child is the test binary itself, run again for one `#[ignore]`d test
//! ([`rerun`]; the child test returns at once unless the environment the
//! parent sets tells it what to do). The parent reads the child's stdout on
//! a thread of its own, each line stamped when it was read, and awaits
//! lines with a bound: one child at a time in an async test
//! ([`Child::with_lines`]), or several merged into one stream in a
//! blocking one ([`Group`]). Every child is killed and reaped on drop, so a
//! failing test leaves no process behind.
//!
//! The child's side: [`say`] prints a line for the parent, [`commands`]
//! reads the parent's lines from stdin. A child exits when its stdin
//! closes, which is how the parent asks it to.

use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

// ---------------------------------------------------------------------------
// Starting a child.

/// The arguments that make a test binary run the `#[ignore]`d test `test`
/// alone, with its output shown.
pub fn rerun_args(test: &str) -> [&str; 5] {
    ["--exact", test, "--nocapture", "--ignored", "--test-threads=1"]
}

/// This test binary, run again for the `#[ignore]`d test `test` alone:
/// `<current_exe> --exact <test> --nocapture --ignored --test-threads=1`.
pub fn rerun(test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("path of the test binary"));
    cmd.args(rerun_args(test));
    cmd
}

/// Reads `from` line by line on a thread of its own and hands each line to
/// `each`, with when it was read, then `None` once `from` ends (or holds
/// something not UTF-8). The thread ends there, or as soon as `each`
/// returns false (nobody listens any more); a child's stdout ends when the
/// child exits, at the latest when its [`Child`] is dropped.
pub fn read_lines<R: Read + Send + 'static>(
    from: R,
    mut each: impl FnMut(Instant, Option<String>) -> bool + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if !each(Instant::now(), Some(line)) {
                return;
            }
        }
        each(Instant::now(), None);
    });
}

/// A child process, its stdin and stdout piped (stderr inherited, so the
/// child's diagnostics show in the test's output); killed and reaped on
/// drop.
pub struct Child {
    proc: std::process::Child,
    /// Closing it tells the child to exit.
    stdin: Option<ChildStdin>,
}

impl Child {
    /// Spawns `cmd` and hands its stdout to `each` as [`read_lines`] does.
    pub fn spawn(cmd: &mut Command, each: impl FnMut(Instant, Option<String>) -> bool + Send + 'static) -> Child {
        let mut proc = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn a child process ({cmd:?}): {e}"));
        let stdin = proc.stdin.take();
        read_lines(proc.stdout.take().expect("piped stdout"), each);
        Child { proc, stdin }
    }

    /// Spawns `cmd`; its stdout lines, each with when it was read, come out
    /// of the channel returned, which closes when the child's stdout does
    /// (it exited). For async tests.
    pub fn with_lines(cmd: &mut Command) -> (Child, UnboundedReceiver<(Instant, String)>) {
        let (tx, lines) = unbounded_channel();
        let child = Child::spawn(cmd, move |at, line| line.is_some_and(|line| tx.send((at, line)).is_ok()));
        (child, lines)
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Writes `line` to the child's stdin, flushed.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin is open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to a child");
    }

    /// Closes the child's stdin: the children of these tests exit then.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// `kill -9`, and reap.
    pub fn kill(&mut self) {
        self.proc.kill().expect("SIGKILL a child");
        self.proc.wait().expect("reap a child");
    }

    /// Sends a signal with kill(1), e.g. `-STOP`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.pid().to_string()]).status().expect("run kill(1)");
        assert!(status.success(), "kill {sig} failed: {status}");
    }

    /// Waits for the child to exit, and reaps it.
    pub fn wait(&mut self) -> ExitStatus {
        self.proc.wait().expect("reap a child")
    }

    /// Its exit status if it has exited, for messages.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.proc.try_wait()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too. Already reaped or not, nothing
        // is left after this.
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

// ---------------------------------------------------------------------------
// Several children, one stream of lines.

/// A line of child `.0`'s stdout, with when it was read; `None` when its
/// stdout closed (it exited).
type Output = (usize, Instant, Option<String>);

/// Child processes, their stdout merged into one stream of lines that the
/// test reads, with a bound, while it waits for a condition on what they
/// printed. Each child's lines are kept, stamped when they were read, and
/// shown on stderr as `[<name>] <line>`. A line starting with `ERROR`, or
/// the exit of a child nobody stopped or killed, fails the test. Every child
/// is killed and reaped on drop.
pub struct Group {
    all: Vec<Member>,
    tx: Sender<Output>,
    lines: Receiver<Output>,
    /// No wait goes beyond it.
    end: Instant,
}

struct Member {
    name: String,
    child: Child,
    /// Every stdout line so far, with when it was read.
    log: Vec<(Instant, String)>,
    /// Its stdout closed.
    exited: bool,
    /// It was killed or told to exit: its exit fails nothing.
    may_exit: bool,
}

impl Group {
    /// No children yet; no wait will go beyond `end`.
    pub fn new(end: Instant) -> Group {
        let (tx, lines) = channel();
        Group { all: Vec::new(), tx, lines, end }
    }

    /// Spawns `cmd` as child `name` and returns its index (the number of
    /// children before it).
    pub fn spawn(&mut self, name: impl Into<String>, cmd: &mut Command) -> usize {
        let i = self.all.len();
        let tx = self.tx.clone();
        let child = Child::spawn(cmd, move |at, line| tx.send((i, at, line)).is_ok());
        self.all.push(Member { name: name.into(), child, log: Vec::new(), exited: false, may_exit: false });
        i
    }

    /// Reads lines until `cond` holds, for at most `limit` (and never past
    /// the group's end); fails naming `what` otherwise.
    pub fn wait(&mut self, limit: Duration, what: &str, cond: impl FnMut(&Group) -> bool) {
        self.wait_until(Instant::now() + limit, what, cond);
    }

    /// Reads lines until `cond` holds, until `deadline` at the most (and
    /// never past the group's end); fails naming `what` otherwise.
    pub fn wait_until(&mut self, deadline: Instant, what: &str, mut cond: impl FnMut(&Group) -> bool) {
        let deadline = deadline.min(self.end);
        while !cond(self) {
            if !self.read(deadline) {
                panic!("timed out waiting for {what}");
            }
        }
    }

    /// The last line of child `i` that starts with `prefix`, read already or
    /// within `limit`.
    pub fn wait_line(&mut self, i: usize, limit: Duration, prefix: &str) -> String {
        let what = format!("a line of {} starting with {prefix:?}", self.all[i].name);
        self.wait(limit, &what, |g| g.last(i, prefix).is_some());
        self.last(i, prefix).unwrap().to_owned()
    }

    /// Reads (and keeps) every line until `deadline` (never past the
    /// group's end).
    pub fn read_until(&mut self, deadline: Instant) {
        let deadline = deadline.min(self.end);
        while self.read(deadline) {}
    }

    /// Reads the next line or end of output; false at `deadline`.
    fn read(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok((i, at, Some(line))) => {
                let m = &mut self.all[i];
                eprintln!("[{}] {line}", m.name);
                assert!(!line.starts_with("ERROR"), "child {} failed: {line}", m.name);
                m.log.push((at, line));
                true
            }
            Ok((i, _, None)) => {
                let m = &mut self.all[i];
                m.exited = true;
                assert!(m.may_exit, "child {} exited unexpectedly (status {:?})", m.name, m.child.try_wait());
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => unreachable!("the sender is held here"),
        }
    }

    /// How many children were spawned.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.all[i].name
    }

    /// Every line child `i` printed so far, with when it was read.
    pub fn log(&self, i: usize) -> &[(Instant, String)] {
        &self.all[i].log
    }

    /// The last line of child `i` that starts with `prefix`.
    pub fn last(&self, i: usize, prefix: &str) -> Option<&str> {
        self.all[i].log.iter().rev().find(|(_, l)| l.starts_with(prefix)).map(|(_, l)| l.as_str())
    }

    /// When child `i` first printed a line starting with `prefix` after
    /// `after`.
    pub fn first(&self, i: usize, prefix: &str, after: Instant) -> Option<Instant> {
        self.all[i].log.iter().find(|(t, l)| *t > after && l.starts_with(prefix)).map(|(t, _)| *t)
    }

    /// How many lines of child `i` start with `prefix`.
    pub fn count(&self, i: usize, prefix: &str) -> usize {
        self.all[i].log.iter().filter(|(_, l)| l.starts_with(prefix)).count()
    }

    /// Writes `line` to child `i`'s stdin, flushed.
    pub fn send_line(&mut self, i: usize, line: &str) {
        self.all[i].child.send_line(line);
    }

    /// SIGKILL child `i`, and reap it.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.all[i];
        m.may_exit = true;
        m.child.kill();
    }

    /// Closes child `i`'s stdin and waits (bounded) for it to exit.
    pub fn stop(&mut self, i: usize, limit: Duration) -> ExitStatus {
        self.stop_all(&[i], limit).remove(0)
    }

    /// Closes the stdin of every child not yet killed or stopped and waits
    /// (bounded) for them all to exit; their exit statuses, in order.
    pub fn shut_down(&mut self, limit: Duration) -> Vec<ExitStatus> {
        let live: Vec<usize> = (0..self.all.len()).filter(|&i| !self.all[i].may_exit).collect();
        self.stop_all(&live, limit)
    }

    fn stop_all(&mut self, which: &[usize], limit: Duration) -> Vec<ExitStatus> {
        for &i in which {
            let m = &mut self.all[i];
            m.child.close_stdin();
            m.may_exit = true;
        }
        let what = if which.len() == 1 { "the child to exit" } else { "the children to exit" };
        self.wait(limit, what, |g| which.iter().all(|&i| g.all[i].exited));
        which.iter().map(|&i| self.all[i].child.wait()).collect()
    }
}

// ---------------------------------------------------------------------------
// The child's side.

/// Prints one line on stdout, flushed (the parent reads it at once). The
/// lock is held for the whole line, so lines from several tasks never mix.
pub fn say(line: impl Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The lines of this process's stdin, read on a thread of its own: the
/// parent's commands. The channel closes with stdin, when the parent closes
/// it (or dies).
pub fn commands() -> UnboundedReceiver<String> {
    let (tx, commands) = unbounded_channel();
    read_lines(std::io::stdin(), move |_, line| line.is_some_and(|line| tx.send(line).is_ok()));
    commands
}
