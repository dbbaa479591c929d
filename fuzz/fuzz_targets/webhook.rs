//! Webhook deliveries: the three signature schemes over arbitrary headers and bodies, and
//! the push-event parser. A delivery is the one input an unauthenticated stranger controls.
#![no_main]

use cantila::source::{verify_gitea, verify_github, verify_gitlab, PushEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the signature header, the rest the body; the secret is fixed, as
    // the attacker does not choose it.
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let header = std::str::from_utf8(header).ok();
    let secret = b"whsec_fuzz";
    let _ = verify_github(secret, body, header);
    let _ = verify_gitea(secret, body, header);
    let _ = verify_gitlab(secret, header);
    if let Ok(event) = PushEvent::parse(body) {
        // What a parsed event claims must hold: a ref under heads/ or tags/, and a commit
        // that is hex unless the ref was deleted.
        assert!(
            event.git_ref.starts_with("refs/heads/") || event.git_ref.starts_with("refs/tags/"),
            "{event:?}"
        );
        if let Some(after) = &event.after {
            assert!(after.bytes().all(|b| b.is_ascii_hexdigit()), "{event:?}");
        }
    }
});
