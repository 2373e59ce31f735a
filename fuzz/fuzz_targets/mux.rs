//! A server-side mux (small limits, a message already queued) fed arbitrary
//! bytes as the client's stream, in pieces, reading its root port between
//! pieces. Only a panic is a failure; a protocol violation comes back as an
//! error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tether::fuzz::mux_input(data);
});
