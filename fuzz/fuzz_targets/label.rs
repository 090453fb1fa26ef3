//! Fuzz target: a payload decoded as a label
//! (oracle: `riskstream_events::fuzzing::label`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| riskstream_events::fuzzing::label(data));
