//! The `Authorization: NHSMESH …` header (mesh-protocol.md section 3).
//!
//! ```text
//! NHSMESH <mailbox>:<nonce>:<nonce_count>:<yyyyMMddHHmm UTC>:<hex HMAC-SHA256>
//! HMAC key = shared secret, message = mailbox:nonce:nonce_count:password:timestamp
//! ```
//!
//! Real MESH accepts each token once and only within ±2 h of its clock, so every request gets a
//! fresh token: a new uuid v4 nonce with count 0. The clock and the nonce source are function
//! pointers so the worked examples of section 3.2 can be checked exactly.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Builds one header value per request for one mailbox.
pub(crate) struct Authenticator {
    mailbox: String,
    password: String,
    shared_key: String,
    clock: fn() -> DateTime<Utc>,
    nonce: fn() -> String,
}

impl Authenticator {
    /// An authenticator using the system clock and random uuid v4 nonces.
    pub(crate) fn new(mailbox: &str, password: &str, shared_key: &str) -> Authenticator {
        Authenticator {
            mailbox: mailbox.to_owned(),
            password: password.to_owned(),
            shared_key: shared_key.to_owned(),
            clock: Utc::now,
            nonce: || uuid::Uuid::new_v4().to_string(),
        }
    }

    /// A fresh header value (new nonce, count 0, current minute).
    pub(crate) fn header(&self) -> String {
        let timestamp = (self.clock)().format("%Y%m%d%H%M").to_string();
        header_value(
            &self.mailbox,
            &self.password,
            &self.shared_key,
            &(self.nonce)(),
            0,
            &timestamp,
        )
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

/// The header value for explicit inputs (section 3.1). The password goes into the HMAC input
/// between the nonce count and the timestamp but never into the header itself.
pub(crate) fn header_value(
    mailbox: &str,
    password: &str,
    shared_key: &str,
    nonce: &str,
    nonce_count: u64,
    timestamp: &str,
) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(shared_key.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(format!("{mailbox}:{nonce}:{nonce_count}:{password}:{timestamp}").as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("NHSMESH {mailbox}:{nonce}:{nonce_count}:{timestamp}:{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn official_test_vector_example_a() {
        assert_eq!(
            header_value(
                "X26",
                "testing",
                "SharedKey",
                "97bf007e-3027-4127-ac9d-f9a25de4de68",
                1,
                "202210241155"
            ),
            "NHSMESH X26:97bf007e-3027-4127-ac9d-f9a25de4de68:1:202210241155:\
             b1a882d3615305602f10b8f9a0453865284ce3e4b9e88e7899fb8bb5339da179"
        );
    }

    #[test]
    fn sandbox_credentials_example_b_through_injected_clock_and_nonce() {
        let auth = Authenticator {
            clock: || Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 59).unwrap(),
            nonce: || "2c001608-5f09-4840-9611-bea43e666a30".to_owned(),
            ..Authenticator::new("X26ABC1", "password", "TestKey")
        };
        assert_eq!(
            auth.header(),
            "NHSMESH X26ABC1:2c001608-5f09-4840-9611-bea43e666a30:0:202501011200:\
             98f12e381953cc3062b5a24422146ce86fcf9838d25377bcc27207dae2220e4f"
        );
    }

    #[test]
    fn example_b_variants() {
        let nonce = "2c001608-5f09-4840-9611-bea43e666a30";
        let count1 = header_value("X26ABC1", "password", "TestKey", nonce, 1, "202501011200");
        assert!(
            count1.ends_with(":c7108b9843d3fdf328a95e63d499bae5be8a627aeba8eb858eb3c8ed1bfe9b82")
        );
        let backbone = header_value("X26ABC1", "password", "BackBone", nonce, 0, "202501011200");
        assert!(
            backbone.ends_with(":4bdd5179aab2ac872d6677d0c90f499b7bf955a3761328de21c7a2053727e2b5")
        );
    }

    #[test]
    fn every_header_has_a_fresh_nonce_and_no_secret() {
        let auth = Authenticator::new("X26ABC1", "s3cret-pw", "k3y-secret");
        let (a, b) = (auth.header(), auth.header());
        assert_ne!(a, b);
        for h in [&a, &b] {
            let fields: Vec<&str> = h.trim_start_matches("NHSMESH ").split(':').collect();
            assert_eq!(fields.len(), 5);
            assert_eq!(fields[0], "X26ABC1");
            assert!(uuid::Uuid::parse_str(fields[1]).is_ok());
            assert_eq!(fields[2], "0");
            assert_eq!(fields[3].len(), 12);
            assert_eq!(fields[4].len(), 64);
            assert!(!h.contains("s3cret") && !h.contains("k3y"));
        }
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
