//! A cluster membership engine fed a script of datagrams (raw, sealed with
//! the cluster cookie, or described and sealed) and timer firings. Fails on
//! a panic: the engine's own, or `tether::fuzz::gossip`'s checks (the view
//! stays within its bound, datagrams without the cookie change nothing, a
//! sealed one changes only the members it names, events replay to the view).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tether::fuzz::gossip(data);
});
