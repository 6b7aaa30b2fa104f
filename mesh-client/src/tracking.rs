//! Tracking a sent message: `GET /messageexchange/{mailbox}/outbox/tracking?messageID={id}`
//! (section 5.10). Only the sender may track; anyone else, or an unknown id, gets 404.
//!
//! Tracking by the sender's own `Mex-LocalID`, `GET /messageexchange/{mailbox}/outbox/tracking/
//! {local_id}` (section 5.11, deprecated but served by MESH and its sandbox), answers with the
//! v1 body whatever the `Accept` header: 404 if this mailbox sent no message with that local
//! id, 300 Multiple Choices if it sent several. It is how a sender that crashed between MESH
//! accepting a message and recording its id finds the message again ([`LocalIdLookup`]).

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

/// A message found by its local id (the v1 tracking body, section 5.11; absent fields empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[non_exhaustive]
pub struct LocalIdTracking {
    /// The message id.
    pub message_id: String,
    /// Lower-cased status: `uploading`, `accepted`, `acknowledged`, `undeliverable` or `error`.
    pub status: String,
    /// `Data` or `Report`.
    pub message_type: String,
    /// The sender's `Mex-LocalID`.
    pub local_id: String,
    /// The `Mex-Content-Checksum` the message was sent with (empty if none).
    pub checksum: String,
    /// Chunks the message was declared with (`Mex-Chunk-Range` of chunk 1).
    pub chunk_count: u32,
    /// `Mex-FileName`.
    pub file_name: String,
    /// Recipient mailbox id.
    pub recipient: String,
    /// `Mex-WorkflowID`.
    pub workflow_id: String,
}

/// What MESH holds under one local id of this mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalIdLookup {
    /// No message (404).
    None,
    /// Exactly one message.
    One(LocalIdTracking),
    /// More than one message (300 Multiple Choices): MESH does not say which.
    Several,
}

impl MeshClient {
    /// Looks up the message this mailbox sent with `Mex-LocalID: local_id` (section 5.11).
    /// 404 and 300 are answers ([`LocalIdLookup::None`], [`LocalIdLookup::Several`]), not
    /// errors; anything else that is not 200 is an [`Error`]. Retried like every GET.
    pub async fn track_local_id(&self, local_id: &str) -> Result<LocalIdLookup, Error> {
        let url = self.endpoint(&[self.mailbox(), "outbox", "tracking", local_id]);
        match self.get_json::<LocalIdTracking>(&url).await {
            Ok(mut t) => {
                t.status.make_ascii_lowercase();
                Ok(LocalIdLookup::One(t))
            }
            Err(e) if e.status() == Some(404) => Ok(LocalIdLookup::None),
            Err(e) if e.status() == Some(300) => Ok(LocalIdLookup::Several),
            Err(e) => Err(e),
        }
    }

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
    fn parses_the_sandbox_v1_body_of_a_local_id_lookup() {
        // E17
        let t: LocalIdTracking = serde_json::from_str(
            r#"{"addressType":"ALL","checksum":"md5:deadbeef","chunkCount":3,"compressFlag":"","contentEncoding":"","downloadTimestamp":"","dtsId":"34ABEE9E54C442818DD02B8D4B40670A","encryptedFlag":"","expiryTime":"20261127142621","fileName":"big.dat","fileSize":25,"isCompressed":"","localId":"local-chunked-3","meshRecipientOdsCode":"X26","messageId":"34ABEE9E54C442818DD02B8D4B40670A","messageType":"Data","partnerId":"","recipient":"X26ABC2","recipientName":"TESTMB2","recipientOrgCode":"X26","recipientOrgName":"","recipientSmtp":"","sender":"X26ABC1","senderName":"TESTMB1","senderOdsCode":"X26","senderOrgCode":"X26","senderOrgName":"","senderSmtp":"","status":"Accepted","statusSuccess":"SUCCESS","subject":"","uploadTimestamp":"20261122142621","version":"1.0","workflowId":"TEST_WORKFLOW"}"#,
        )
        .unwrap();
        assert_eq!(t.message_id, "34ABEE9E54C442818DD02B8D4B40670A");
        assert_eq!(t.status, "Accepted");
        assert_eq!(t.message_type, "Data");
        assert_eq!(t.local_id, "local-chunked-3");
        assert_eq!(t.checksum, "md5:deadbeef");
        assert_eq!(t.chunk_count, 3);
        assert_eq!(t.file_name, "big.dat");
        assert_eq!(t.workflow_id, "TEST_WORKFLOW");
    }

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
