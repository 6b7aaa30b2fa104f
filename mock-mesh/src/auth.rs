//! The `Authorization: NHSMESH mailbox:nonce:nonce_count:timestamp:hmac` header
//! (`mesh-protocol.md` §3). HMAC-SHA256 with the environment's shared key over
//! `mailbox:nonce:nonce_count:password:timestamp`.
//!
//! Checks, in the sandbox's order (§3.4), each a 403 with the sandbox's text:
//! 1. missing/blank header → `Error reading from Authorization header`;
//! 2. token mailbox ≠ path mailbox → `Mailbox id does not match token`;
//! 3. not five fields, non-digit nonce count, space in the mailbox → `Error reading from …`;
//! 4. unknown mailbox → `No mailbox matched` (SEND/EPL-151);
//! 5. HMAC mismatch → `Invalid Authentication Token`.
//!
//! Then, like real MESH and unlike the sandbox (each switchable off): the timestamp must be within
//! 2 hours of the server clock, and a token may be used only once. Both failures also read
//! `Invalid Authentication Token`, so a client learns nothing more than MESH tells it.

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Clock;
use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// The five fields of a parsed token (borrowed from the header value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthToken<'a> {
    /// Mailbox making the request.
    pub mailbox: &'a str,
    /// Nonce (a GUID for mesh-client).
    pub nonce: &'a str,
    /// Nonce count, decimal digits.
    pub nonce_count: &'a str,
    /// `yyyyMMddHHmm`, UTC.
    pub timestamp: &'a str,
    /// Hex HMAC-SHA256.
    pub hmac: &'a str,
}

/// Why a header could not be parsed (both map to the same 403 text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthParseError {
    /// Blank header.
    Blank,
    /// Not five fields, non-digit nonce count, or a space in the mailbox.
    Malformed,
}

/// Removes the optional, case-insensitive `NHSMESH ` scheme (the sandbox accepts a bare token).
fn strip_scheme(value: &str) -> &str {
    let v = value.trim();
    if v.eq_ignore_ascii_case("NHSMESH") {
        return "";
    }
    match v.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("NHSMESH ") => v[8..].trim_start(),
        _ => v,
    }
}

/// The mailbox part of the token (text before the first `:`), used for check 2.
pub fn token_mailbox(value: &str) -> &str {
    let t = strip_scheme(value);
    t.split(':').next().unwrap_or("")
}

/// Parses a header value into its five fields.
pub fn parse_authorization(value: &str) -> Result<AuthToken<'_>, AuthParseError> {
    let t = strip_scheme(value);
    if t.is_empty() {
        return Err(AuthParseError::Blank);
    }
    let mut it = t.split(':');
    let (Some(mailbox), Some(nonce), Some(nonce_count), Some(timestamp), Some(hmac), None) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) else {
        return Err(AuthParseError::Malformed);
    };
    if nonce_count.is_empty()
        || !nonce_count.bytes().all(|b| b.is_ascii_digit())
        || mailbox.contains(' ')
    {
        return Err(AuthParseError::Malformed);
    }
    Ok(AuthToken {
        mailbox,
        nonce,
        nonce_count,
        timestamp,
        hmac,
    })
}

fn mac(shared_key: &[u8], message: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail
    let mut m = match HmacSha256::new_from_slice(shared_key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(message);
    m
}

fn hmac_input(mailbox: &str, nonce: &str, count: &str, password: &str, ts: &str) -> String {
    format!("{mailbox}:{nonce}:{count}:{password}:{ts}")
}

/// Lower-case hex HMAC-SHA256 of `mailbox:nonce:nonce_count:password:timestamp`.
pub fn compute_hmac(
    shared_key: &str,
    mailbox: &str,
    nonce: &str,
    nonce_count: &str,
    password: &str,
    timestamp: &str,
) -> String {
    let input = hmac_input(mailbox, nonce, nonce_count, password, timestamp);
    hex::encode(
        mac(shared_key.as_bytes(), input.as_bytes())
            .finalize()
            .into_bytes(),
    )
}

/// Builds a complete header value, as mesh-client does.
pub fn make_header(
    shared_key: &str,
    mailbox: &str,
    password: &str,
    nonce: &str,
    nonce_count: u64,
    timestamp: &str,
) -> String {
    let count = nonce_count.to_string();
    let h = compute_hmac(shared_key, mailbox, nonce, &count, password, timestamp);
    format!("NHSMESH {mailbox}:{nonce}:{count}:{timestamp}:{h}")
}

/// Checks that a parsed token carries the right HMAC (constant-time, hex case-insensitive).
pub fn verify_hmac(shared_key: &str, token: &AuthToken<'_>, password: &str) -> bool {
    let Ok(given) = hex::decode(token.hmac) else {
        return false;
    };
    let input = hmac_input(
        token.mailbox,
        token.nonce,
        token.nonce_count,
        password,
        token.timestamp,
    );
    mac(shared_key.as_bytes(), input.as_bytes())
        .verify_slice(&given)
        .is_ok()
}

/// Which checks are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `false` = the sandbox's `AUTH_MODE=none`: only the path mailbox must exist.
    pub enabled: bool,
    /// Reject timestamps more than 2 hours from the server clock.
    pub check_timestamp: bool,
    /// Reject a token seen before.
    pub check_replay: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            check_timestamp: true,
            check_replay: true,
        }
    }
}

/// Tokens remembered per generation by the replay check. Two generations are kept, so between
/// `SEEN_GENERATION` and twice that many most recent tokens are remembered (a few MiB), however
/// long the server runs; an older token could be replayed, but by then (at mesh-client's pace)
/// its timestamp is long outside the 2-hour window.
const SEEN_GENERATION: usize = 250_000;

/// The replay memory: HMAC prefixes of accepted tokens, in two generations.
#[derive(Debug, Default)]
struct SeenTokens {
    current: HashSet<u128>,
    previous: HashSet<u128>,
}

impl SeenTokens {
    /// Records a token; false if it was seen before.
    fn insert(&mut self, key: u128) -> bool {
        if self.previous.contains(&key) || !self.current.insert(key) {
            return false;
        }
        if self.current.len() >= SEEN_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        true
    }
}

/// Token validity window either side of the server clock (§3.1).
const WINDOW_SECS: i64 = 2 * 3600;

/// Validates headers against mailbox passwords; remembers used tokens.
#[derive(Debug)]
pub(crate) struct Authenticator {
    shared_key: String,
    config: AuthConfig,
    clock: Clock,
    /// first 16 bytes of each accepted token's HMAC → when it was accepted (seconds)
    seen: Mutex<SeenTokens>,
}

impl Authenticator {
    pub(crate) fn new(shared_key: String, config: AuthConfig, clock: Clock) -> Authenticator {
        Authenticator {
            shared_key,
            config,
            clock,
            seen: Mutex::new(SeenTokens::default()),
        }
    }

    /// Runs the checks for a request on `path_mailbox` (already upper-cased). `password_of`
    /// returns the password of a known mailbox.
    pub(crate) fn check<'p>(
        &self,
        header: Option<&[u8]>,
        path_mailbox: &str,
        password_of: impl Fn(&str) -> Option<&'p str>,
    ) -> Result<(), ApiError> {
        if !self.config.enabled {
            return password_of(path_mailbox)
                .map(|_| ())
                .ok_or(ApiError::NO_MAILBOX);
        }
        let value = header
            .and_then(|h| std::str::from_utf8(h).ok())
            .map(str::trim)
            .unwrap_or("");
        if value.is_empty() {
            return Err(ApiError::AUTH_HEADER);
        }
        if token_mailbox(value) != path_mailbox {
            return Err(ApiError::MAILBOX_MISMATCH);
        }
        let token = parse_authorization(value).map_err(|_| ApiError::AUTH_HEADER)?;
        let password = password_of(token.mailbox).ok_or(ApiError::NO_MAILBOX)?;
        if !verify_hmac(&self.shared_key, &token, password) {
            return Err(ApiError::INVALID_TOKEN);
        }
        let now = self.clock.now().timestamp();
        if self.config.check_timestamp {
            let ts = NaiveDateTime::parse_from_str(token.timestamp, "%Y%m%d%H%M")
                .map(|t| Utc.from_utc_datetime(&t).timestamp())
                .map_err(|_| ApiError::INVALID_TOKEN)?;
            if (now - ts).abs() > WINDOW_SECS {
                return Err(ApiError::INVALID_TOKEN);
            }
        }
        if self.config.check_replay {
            let Ok(digest) = hex::decode(token.hmac) else {
                return Err(ApiError::INVALID_TOKEN);
            };
            let mut key = [0u8; 16];
            key.copy_from_slice(&digest[..16]);
            let fresh = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(u128::from_le_bytes(key));
            if !fresh {
                return Err(ApiError::INVALID_TOKEN);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_a_official_vector() {
        let h = make_header(
            "SharedKey",
            "X26",
            "testing",
            "97bf007e-3027-4127-ac9d-f9a25de4de68",
            1,
            "202210241155",
        );
        assert_eq!(h, "NHSMESH X26:97bf007e-3027-4127-ac9d-f9a25de4de68:1:202210241155:b1a882d3615305602f10b8f9a0453865284ce3e4b9e88e7899fb8bb5339da179");
    }

    #[test]
    fn worked_example_b_sandbox_credentials() {
        let nonce = "2c001608-5f09-4840-9611-bea43e666a30";
        assert_eq!(
            compute_hmac("TestKey", "X26ABC1", nonce, "0", "password", "202501011200"),
            "98f12e381953cc3062b5a24422146ce86fcf9838d25377bcc27207dae2220e4f"
        );
        assert_eq!(
            compute_hmac("TestKey", "X26ABC1", nonce, "1", "password", "202501011200"),
            "c7108b9843d3fdf328a95e63d499bae5be8a627aeba8eb858eb3c8ed1bfe9b82"
        );
        assert_eq!(
            compute_hmac(
                "BackBone",
                "X26ABC1",
                nonce,
                "0",
                "password",
                "202501011200"
            ),
            "4bdd5179aab2ac872d6677d0c90f499b7bf955a3761328de21c7a2053727e2b5"
        );
        let header = "NHSMESH X26ABC1:2c001608-5f09-4840-9611-bea43e666a30:0:202501011200:98f12e381953cc3062b5a24422146ce86fcf9838d25377bcc27207dae2220e4f";
        let t = parse_authorization(header).unwrap();
        assert_eq!(t.mailbox, "X26ABC1");
        assert_eq!(t.nonce, nonce);
        assert_eq!(t.nonce_count, "0");
        assert_eq!(t.timestamp, "202501011200");
        assert!(verify_hmac("TestKey", &t, "password"));
        assert!(!verify_hmac("TestKey", &t, "wrong"));
        assert!(!verify_hmac("BackBone", &t, "password"));
        // hex compare is case-insensitive
        let upper = header.to_ascii_uppercase().replace(
            "NHSMESH X26ABC1:2C001608-5F09-4840-9611-BEA43E666A30",
            "NHSMESH X26ABC1:2c001608-5f09-4840-9611-bea43e666a30",
        );
        assert!(verify_hmac(
            "TestKey",
            &parse_authorization(&upper).unwrap(),
            "password"
        ));
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(parse_authorization(""), Err(AuthParseError::Blank));
        assert_eq!(parse_authorization("NHSMESH "), Err(AuthParseError::Blank));
        assert_eq!(
            parse_authorization("NHSMESH a:b:c:d"),
            Err(AuthParseError::Malformed)
        );
        assert_eq!(
            parse_authorization("NHSMESH a:b:c:d:e:f"),
            Err(AuthParseError::Malformed)
        );
        assert_eq!(
            parse_authorization("NHSMESH a:b:x1:d:e"),
            Err(AuthParseError::Malformed)
        );
        assert_eq!(
            parse_authorization("NHSMESH a b:n:1:d:e"),
            Err(AuthParseError::Malformed)
        );
        // scheme optional and case-insensitive, as in the sandbox
        assert!(parse_authorization("nhsmesh A:n:1:t:h").is_ok());
        assert!(parse_authorization("A:n:1:t:h").is_ok());
        assert_eq!(token_mailbox("Bearer X26ABC1:n:1:t:h"), "Bearer X26ABC1");
    }

    #[test]
    fn replay_memory_is_bounded_and_keeps_the_recent_generation() {
        let mut seen = SeenTokens::default();
        for k in 0..(SEEN_GENERATION as u128 + 10) {
            assert!(seen.insert(k));
        }
        assert!(seen.current.len() + seen.previous.len() <= 2 * SEEN_GENERATION);
        assert!(!seen.insert(5), "previous generation still remembered");
        assert!(
            !seen.insert(SEEN_GENERATION as u128 + 3),
            "current generation remembered"
        );
    }

    fn auth(check_timestamp: bool, check_replay: bool, clock: Clock) -> Authenticator {
        Authenticator::new(
            "TestKey".into(),
            AuthConfig {
                enabled: true,
                check_timestamp,
                check_replay,
            },
            clock,
        )
    }

    #[test]
    fn check_order_timestamp_and_replay() {
        let clock = Clock::system();
        let a = auth(true, true, clock.clone());
        let pw = |m: &str| (m == "X26ABC1").then_some("password");
        let ts = clock.now().format("%Y%m%d%H%M").to_string();
        let good = make_header("TestKey", "X26ABC1", "password", "n", 0, &ts);
        assert_eq!(a.check(None, "X26ABC1", pw), Err(ApiError::AUTH_HEADER));
        assert_eq!(
            a.check(Some(good.as_bytes()), "X26ABC2", pw),
            Err(ApiError::MAILBOX_MISMATCH)
        );
        assert_eq!(
            a.check(Some(b"NHSMESH X26ABC1:a"), "X26ABC1", pw),
            Err(ApiError::AUTH_HEADER)
        );
        let unknown = make_header("TestKey", "NOSUCH", "password", "n", 0, &ts);
        assert_eq!(
            a.check(Some(unknown.as_bytes()), "NOSUCH", pw),
            Err(ApiError::NO_MAILBOX)
        );
        let bad = make_header("TestKey", "X26ABC1", "nope", "n", 0, &ts);
        assert_eq!(
            a.check(Some(bad.as_bytes()), "X26ABC1", pw),
            Err(ApiError::INVALID_TOKEN)
        );
        assert_eq!(a.check(Some(good.as_bytes()), "X26ABC1", pw), Ok(()));
        assert_eq!(
            a.check(Some(good.as_bytes()), "X26ABC1", pw),
            Err(ApiError::INVALID_TOKEN),
            "replay"
        );
        let old = make_header("TestKey", "X26ABC1", "password", "n", 1, "202501011200");
        assert_eq!(
            a.check(Some(old.as_bytes()), "X26ABC1", pw),
            Err(ApiError::INVALID_TOKEN)
        );
        // switched off: the sandbox's behaviour
        let lax = auth(false, false, clock);
        assert_eq!(lax.check(Some(old.as_bytes()), "X26ABC1", pw), Ok(()));
        assert_eq!(lax.check(Some(old.as_bytes()), "X26ABC1", pw), Ok(()));
    }
}
