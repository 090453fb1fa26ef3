//! Fuzz target: a payload decoded as a verdict and written back by both writers
//! (oracle: `riskstream_events::fuzzing::verdict`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| riskstream_events::fuzzing::verdict(data));
