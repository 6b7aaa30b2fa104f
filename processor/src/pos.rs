//! Facts about the POS ("Check for National Data Opt-outs Service") that the engine's file
//! formats depend on: which mailbox a request goes to, the workflow id, the one-line rejection,
//! the mailbox-id rule and the shape of a line of the POS's cleaned reply
//! (`ndop-domain.md` §2.1–2.3, §3.2).

use serde::Serialize;

/// The POS workflow id ("SPINE NDOP External Upholding").
pub const WORKFLOW_ID: &str = "SPINE_NTT_UPHOLDING";

/// The whole body of the POS's reply when a request holds an invalid line.
pub const REJECTION_LINE: &str = "The file contains one or more invalid NHS Numbers.";

/// The Spine environment, which fixes the POS mailbox. Not the MESH environment
/// (`mesh_client::Environment`), which picks a base URL; the binary derives this from that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEnv {
    /// Integration: POS mailbox `X26OT154`.
    #[default]
    Int,
    /// Live: POS mailbox `X26HC065`.
    Live,
}

impl PosEnv {
    /// The POS mailbox of this environment.
    pub fn pos_mailbox(self) -> &'static str {
        match self {
            PosEnv::Int => "X26OT154",
            PosEnv::Live => "X26HC065",
        }
    }
}

impl std::str::FromStr for PosEnv {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "int" => Ok(PosEnv::Int),
            "live" => Ok(PosEnv::Live),
            _ => Err(format!("expected int or live, got {s:?}")),
        }
    }
}

/// The MESH mailbox-id rule: 1 to 20 ASCII letters and digits (compared case-insensitively;
/// written upper-case).
pub fn is_mailbox_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `line` is a line of a POS cleaned reply: `NNNNNNNNNN[,](\r\n|\n)?` with a valid
/// Modulus 11 check digit.
pub fn is_reply_line(line: &[u8]) -> bool {
    let mut l = line;
    if let Some(rest) = l.strip_suffix(b"\n") {
        l = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let l = l.strip_suffix(b",").unwrap_or(l);
    crate::nhs::is_valid(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_ids_and_environments() {
        assert!(is_mailbox_id("X26ABC1"));
        assert!(is_mailbox_id("x26abc1"));
        for bad in ["", "X26:1", " X1", &"A".repeat(21)] {
            assert!(!is_mailbox_id(bad), "{bad:?}");
        }
        assert_eq!("LIVE".parse::<PosEnv>(), Ok(PosEnv::Live));
        assert_eq!(PosEnv::default().pos_mailbox(), "X26OT154");
        assert_eq!(PosEnv::Live.pos_mailbox(), "X26HC065");
    }

    #[test]
    fn reply_lines() {
        assert!(is_reply_line(b"9694116538,\r\n"));
        assert!(is_reply_line(b"9694116538\n"));
        assert!(is_reply_line(b"9694116538"));
        assert!(!is_reply_line(b"9694116539,\r\n"));
        assert!(!is_reply_line(REJECTION_LINE.as_bytes()));
    }
}
