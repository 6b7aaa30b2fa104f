//! One message's metadata and its lifecycle vocabulary (`mesh-protocol.md` §11), and the
//! inbox `workflow_filter` grammar (§5.4). Plain data: no locks, no files.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::from_us;
use crate::headers::ContentEncoding;

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Uploading,
    Accepted,
    Acknowledged,
    Undeliverable,
    Error,
}

impl Status {
    /// v2 tracking spelling.
    pub(crate) fn lower(self) -> &'static str {
        match self {
            Status::Uploading => "uploading",
            Status::Accepted => "accepted",
            Status::Acknowledged => "acknowledged",
            Status::Undeliverable => "undeliverable",
            Status::Error => "error",
        }
    }
    /// v1 tracking spelling.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Status::Uploading => "Uploading",
            Status::Accepted => "Accepted",
            Status::Acknowledged => "Acknowledged",
            Status::Undeliverable => "Undeliverable",
            Status::Error => "Error",
        }
    }
}

/// DATA or REPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MessageType {
    Data,
    Report,
}

/// The error event of a REPORT (or of a failed DATA message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorEvent {
    pub event: String,
    pub code: String,
    pub description: String,
    pub linked_message_id: Option<String>,
}

/// How far the POS has answered a submission (persisted, so a restart resumes the job).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PosStage {
    /// Not answered yet (or not a POS submission).
    #[default]
    New,
    /// The "job created" message is in the sender's inbox; the result is still to come.
    JobSent,
    /// Answered completely; the submission's data has been freed.
    Done,
}

/// One message's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub id: String,
    pub version: u64,
    pub message_type: MessageType,
    pub sender: Option<String>,
    pub recipient: String,
    pub workflow_id: String,
    pub subject: Option<String>,
    pub local_id: Option<String>,
    pub partner_id: Option<String>,
    pub file_name: Option<String>,
    pub checksum: Option<String>,
    pub content_type: Option<String>,
    pub encrypted: bool,
    pub compressed: bool,
    pub content_encoding: ContentEncoding,
    pub total_chunks: u32,
    /// Stored size of each chunk (as uploaded), `None` while missing.
    pub chunks: Vec<Option<u64>>,
    pub status: Status,
    pub created_us: i64,
    pub accepted_us: Option<i64>,
    pub acknowledged_us: Option<i64>,
    pub status_us: i64,
    /// Inbox order, assigned on acceptance.
    pub seq: u64,
    pub error: Option<ErrorEvent>,
    /// POS: SHA-256 of the decoded file, recorded when the job was created.
    pub pos_hash: Option<String>,
    /// POS: progress of the answer to this submission.
    #[serde(default)]
    pub pos_stage: PosStage,
}

impl Message {
    /// An accepted message created at `now_us` with no optional metadata, no chunks and no
    /// error; callers fill in the rest with struct update syntax.
    pub(crate) fn new(
        id: String,
        message_type: MessageType,
        sender: Option<String>,
        recipient: String,
        workflow_id: String,
        now_us: i64,
    ) -> Message {
        Message {
            id,
            version: 1,
            message_type,
            sender,
            recipient,
            workflow_id,
            subject: None,
            local_id: None,
            partner_id: None,
            file_name: None,
            checksum: None,
            content_type: None,
            encrypted: false,
            compressed: false,
            content_encoding: ContentEncoding::Identity,
            total_chunks: 0,
            chunks: Vec::new(),
            status: Status::Accepted,
            created_us: now_us,
            accepted_us: Some(now_us),
            acknowledged_us: None,
            status_us: now_us,
            seq: 0,
            error: None,
            pos_hash: None,
            pos_stage: PosStage::New,
        }
    }

    pub(crate) fn file_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.unwrap_or(0)).sum()
    }
    pub(crate) fn created(&self) -> DateTime<Utc> {
        from_us(self.created_us)
    }
    pub(crate) fn status_time(&self) -> DateTime<Utc> {
        from_us(self.status_us)
    }
    pub(crate) fn all_chunks_present(&self) -> bool {
        self.chunks.iter().all(Option::is_some)
    }
}

/// `workflow_filter` grammar (§5.4): `WF` equals, `!WF` not equal, `WF*` begins with,
/// `*WF*` contains; `!` negates any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkflowFilter {
    negate: bool,
    kind: FilterKind,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    Equals,
    Prefix,
    Contains,
}

impl WorkflowFilter {
    pub(crate) fn parse(s: &str) -> WorkflowFilter {
        let (negate, rest) = match s.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (kind, text) = if let Some(inner) = rest
            .strip_prefix('*')
            .map(|r| r.strip_suffix('*').unwrap_or(r))
        {
            (FilterKind::Contains, inner)
        } else if let Some(p) = rest.strip_suffix('*') {
            (FilterKind::Prefix, p)
        } else {
            (FilterKind::Equals, rest)
        };
        WorkflowFilter {
            negate,
            kind,
            text: text.to_string(),
        }
    }

    pub(crate) fn matches(&self, workflow: &str) -> bool {
        let hit = match self.kind {
            FilterKind::Equals => workflow == self.text,
            FilterKind::Prefix => workflow.starts_with(&self.text),
            FilterKind::Contains => workflow.contains(&self.text),
        };
        hit != self.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_filters() {
        let f = WorkflowFilter::parse;
        assert!(f("TEST_WORKFLOW").matches("TEST_WORKFLOW"));
        assert!(!f("TEST_WORKFLOW").matches("TEST_WORKFLOW_ACK"));
        assert!(f("TEST*").matches("TEST_WORKFLOW_ACK"));
        assert!(f("*ACK*").matches("TEST_WORKFLOW_ACK"));
        assert!(f("!*ACK*").matches("TEST_WORKFLOW"));
        assert!(!f("!TEST*").matches("TEST_WORKFLOW"));
    }
}
