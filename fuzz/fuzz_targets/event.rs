//! Fuzz target: an input payload (8 bytes of broker timestamp first), decoded and validated
//! (oracle: `riskstream_events::fuzzing::event`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| riskstream_events::fuzzing::event(data));
