//! Fuzzes mock-mesh's parser of the `Authorization: NHSMESH mailbox:nonce:count:timestamp:hmac`
//! header (mesh-protocol.md §3): it must never panic, and whatever it accepts must have exactly
//! the five fields, a decimal nonce count and no space in the mailbox, and must verify only with
//! the HMAC it carries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mock_mesh::auth::{compute_hmac, parse_authorization, token_mailbox, verify_hmac};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let mailbox = token_mailbox(value);
    let Ok(t) = parse_authorization(value) else {
        return;
    };
    assert_eq!(t.mailbox, mailbox);
    assert!(!t.mailbox.contains(' ') && !t.mailbox.contains(':'));
    assert!(!t.nonce_count.is_empty() && t.nonce_count.bytes().all(|b| b.is_ascii_digit()));
    for f in [t.nonce, t.nonce_count, t.timestamp, t.hmac] {
        assert!(!f.contains(':'));
    }
    let right = compute_hmac(
        "TestKey",
        t.mailbox,
        t.nonce,
        t.nonce_count,
        "password",
        t.timestamp,
    );
    let claimed = verify_hmac("TestKey", &t, "password");
    assert_eq!(claimed, right.eq_ignore_ascii_case(t.hmac));
});
