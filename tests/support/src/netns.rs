//! Network namespaces, for the tests that need real links or a resolver of
//! their own: created with `ip` from iproute2 and deleted on drop, even when
//! the test panics.
//!
//! Those tests run only when [`ENABLE`] is set (`.ci/run` sets it): they
//! need root. Unset, a test says it was skipped and passes ([`enabled`]);
//! set, every step either works or fails the test, naming the step, so a
//! test never passes without having run.

use std::ffi::OsStr;
use std::process::Command;

use crate::process::rerun_args;

/// Set to run the tests that build network namespaces.
pub const ENABLE: &str = "TETHER_NETNS_TESTS";

/// Whether [`ENABLE`] is set; if not, prints that `test` was skipped and
/// what it `needs`.
pub fn enabled(test: &str, needs: &str) -> bool {
    if std::env::var_os(ENABLE).is_some() {
        return true;
    }
    eprintln!("SKIPPED: set {ENABLE}=1 to run {test} (needs {needs})");
    false
}

/// Runs a command; its failure fails the test with `what` and the output.
pub fn run(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{ENABLE} is set but {what} could not run ({cmd:?}: {e}); it needs `ip` from iproute2")
    });
    assert!(
        out.status.success(),
        "{ENABLE} is set but {what} failed ({cmd:?}: {}): {}; the test needs root and `ip` from iproute2",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip <args>` as [`run`] does.
pub fn ip(what: &str, args: &[&str]) {
    run(what, Command::new("ip").args(args));
}

/// A network namespace; deleted on drop (which deletes the interfaces in
/// it). Its processes are the test's to kill first.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates the namespace `name` (`ip netns add`). Names carry the
    /// test's pid, so that runs never share one.
    pub fn add(name: String) -> Namespace {
        ip("creating a network namespace", &["netns", "add", &name]);
        Namespace { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <name> <args>` as [`run`] does.
    pub fn ip(&self, what: &str, args: &[&str]) {
        run(what, Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// `ip netns exec <name> <program>`: a command that runs inside.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// This test binary run again inside, for the `#[ignore]`d test `test`
    /// alone (as [`crate::process::rerun`] does outside).
    pub fn rerun(&self, test: &str) -> Command {
        let mut cmd = self.exec(std::env::current_exe().expect("path of the test binary"));
        cmd.args(rerun_args(test));
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let name = &self.name;
        match Command::new("ip").args(["netns", "del", name]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("netns: deleting {name} failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("netns: deleting {name} failed: {e}"),
        }
    }
}
