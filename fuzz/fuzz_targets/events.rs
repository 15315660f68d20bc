//! Registry events as the stream consumer and `POST /v1/events` read them.
#![no_main]

use claw_authz::protocol::events::parse_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_event(data);
});
