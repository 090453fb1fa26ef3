//! Fuzz target: text given as a schema, put in Parsing Canonical Form
//! (oracle: `riskstream_events::fuzzing::canonical`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| riskstream_events::fuzzing::canonical(data));
