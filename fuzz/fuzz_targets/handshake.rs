//! The handshake on arbitrary bytes: the `Hello` decoder fed in pieces, and
//! the accepting side's whole handshake with a cookie (offer, proofs) taking
//! them as the dialer's stream. Only a panic is a failure; refused input
//! comes back as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tether::fuzz::decode_hello(data);
    let _ = tether::fuzz::handshake_input(data);
});
