//! The handshake `Hello` decoder on arbitrary bytes, fed in pieces. Only a
//! panic is a failure; a refused hello comes back as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tether::fuzz::decode_hello(data);
});
