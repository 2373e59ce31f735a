//! Entry points for fuzzers and property tests (not a stable API).
