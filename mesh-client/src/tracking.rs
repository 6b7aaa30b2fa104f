//! Tracking a sent message: `GET /messageexchange/{mailbox}/outbox/tracking?messageID={id}`
//! (section 5.10). Only the sender may track; anyone else, or an unknown id, gets 404.

use serde::Deserialize;

use crate::{Error, MeshClient};

/// Where a sent message is, as MESH reports it (v2 tracking body; absent fields are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Tracking {
    /// The message id.
    #[serde(alias = "messageId")]
    pub message_id: String,
    /// Lower-case status: `uploading`, `accepted`, `acknowledged`, `undeliverable` or `error`.
    pub status: String,
    /// `true` for a message with no error event.
    pub status_success: Option<bool>,
    /// For failures: the MESH event, e.g. `SEND`.
    pub status_event: Option<String>,
    /// For failures: the MESH code, e.g. `14` (not collected in time).
    pub status_code: Option<String>,
    /// For failures: the description.
    pub status_description: Option<String>,
    /// When the status last changed, as the server formats it.
    pub status_timestamp: Option<String>,
    /// The sender's `Mex-LocalID`.
    pub local_id: Option<String>,
    /// `Mex-WorkflowID`.
    pub workflow_id: Option<String>,
    /// `Mex-FileName`.
    pub filename: Option<String>,
    /// Recipient mailbox id.
    pub recipient: Option<String>,
    /// Recipient mailbox name.
    pub recipient_name: Option<String>,
    /// When the upload finished, as the server formats it.
    pub upload_timestamp: Option<String>,
    /// When an uncollected message leaves the inbox (5 days after upload).
    pub expiry_time: Option<String>,
}

impl MeshClient {
    /// The tracking record of a message this mailbox sent.
    pub async fn track(&self, id: &str) -> Result<Tracking, Error> {
        let mut url = self.endpoint(&[self.mailbox(), "outbox", "tracking"]);
        url.query_pairs_mut().append_pair("messageID", id);
        let mut tracking: Tracking = self.get_json(&url).await?;
        tracking.status.make_ascii_lowercase();
        Ok(tracking)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sandbox_v2_body() {
        // E11
        let t: Tracking = serde_json::from_str(
            r#"{"message_id":"34ABEE9E54C442818DD02B8D4B40670A","local_id":"local-chunked-3","workflow_id":"TEST_WORKFLOW","filename":"big.dat","expiry_time":"2026-11-27T14:26:21.372725","upload_timestamp":"2026-11-22T14:26:21.372762","recipient":"X26ABC2","recipient_name":"TESTMB2","recipient_ods_code":"X26","recipient_org_code":"X26","recipient_org_name":"","status_success":true,"status":"accepted"}"#,
        )
        .unwrap();
        assert_eq!(t.message_id, "34ABEE9E54C442818DD02B8D4B40670A");
        assert_eq!(t.status, "accepted");
        assert_eq!(t.status_success, Some(true));
        assert_eq!(t.local_id.as_deref(), Some("local-chunked-3"));
        assert_eq!(t.status_code, None);
    }
}
