//! Classifying a downloaded reply by its content: the POS's rejection line, a job-created JSON
//! object, or a cleaned file; anything else is not a POS reply this tool knows.

use std::path::Path;

use mesh_client::MessageMeta;
use processor::pos::{is_reply_line, REJECTION_LINE};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::journal::ReplyKind;

/// What classification learnt about a stored reply.
#[derive(Debug)]
pub(crate) struct Facts {
    pub(crate) sha256: String,
    pub(crate) bytes: u64,
    pub(crate) records: Option<u64>,
    pub(crate) job_status: Option<String>,
}

/// Largest job-created JSON read.
const MAX_JOB_JSON: u64 = 1 << 20;

/// Reads a downloaded data reply once: the invalid-numbers line, a job-created JSON object
/// (Subject `SUCCESS` or a JSON content type), or a cleaned file (every line ten digits passing
/// Modulus 11, an optional comma, CRLF or LF; empty = everyone opted out). Anything else is
/// `Ok(Err(reason))`.
pub(crate) async fn classify(
    path: &Path,
    meta: &MessageMeta,
) -> Result<Result<(ReplyKind, Facts), String>, Error> {
    let owned = path.to_path_buf();
    let job_like = meta.subject.as_deref() == Some("SUCCESS")
        || meta
            .content_type
            .as_deref()
            .is_some_and(|t| t.contains("json"));
    let result = tokio::task::spawn_blocking(move || classify_file(&owned, job_like))
        .await
        .map_err(|e| processor::Error::read(path, std::io::Error::other(e)))?;
    result.map_err(|e| Error::Local(processor::Error::read(path, e)))
}

fn classify_file(
    path: &Path,
    job_like: bool,
) -> std::io::Result<Result<(ReplyKind, Facts), String>> {
    let size = std::fs::metadata(path)?.len();
    if size <= MAX_JOB_JSON {
        let bytes = std::fs::read(path)?;
        let facts = |records, job_status| Facts {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
            records,
            job_status,
        };
        let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
        if text == REJECTION_LINE {
            return Ok(Ok((ReplyKind::InvalidNumbers, facts(None, None))));
        }
        if job_like || text.starts_with('{') {
            if let Ok(serde_json::Value::Object(job)) = serde_json::from_str(text) {
                let status = job
                    .get("status")
                    .and_then(|s| s.as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| "unknown".into());
                return Ok(Ok((ReplyKind::JobCreated, facts(None, Some(status)))));
            }
            if job_like {
                return Ok(Err(
                    "a job-created message whose body is not a JSON object".into()
                ));
            }
        }
    }
    // a cleaned file: stream it, checking every line
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut hasher = Sha256::new();
    let mut line = Vec::with_capacity(64);
    let (mut records, mut bytes, mut line_no) = (0u64, 0u64, 0u64);
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(
            &mut std::io::Read::take(&mut reader, 4096),
            b'\n',
            &mut line,
        )?;
        if n == 0 {
            break;
        }
        line_no += 1;
        hasher.update(&line);
        bytes += n as u64;
        if !is_reply_line(&line) {
            return Ok(Err(format!(
                "line {line_no} is not an NHS number line: not a POS reply this tool knows"
            )));
        }
        records += 1;
    }
    Ok(Ok((
        ReplyKind::Cleaned,
        Facts {
            sha256: hex::encode(hasher.finalize()),
            bytes,
            records: Some(records),
            job_status: None,
        },
    )))
}

/// A message id reduced to `[A-Za-z0-9_-]` for use in a file name.
pub(crate) fn safe_name(id: &str) -> String {
    let s: String = id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unnamed".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_bytes(bytes: &[u8], job_like: bool) -> Result<(ReplyKind, Facts), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        std::fs::write(&path, bytes).unwrap();
        classify_file(&path, job_like).unwrap()
    }

    #[test]
    fn replies_are_classified_by_content() {
        let (kind, f) = classify_bytes(b"9694116538,\r\n9694116546,\r\n", false).unwrap();
        assert_eq!(
            (kind, f.records, f.bytes),
            (ReplyKind::Cleaned, Some(2), 26)
        );
        let (kind, f) = classify_bytes(b"9694116538\n9694116546", false).unwrap();
        assert_eq!((kind, f.records), (ReplyKind::Cleaned, Some(2)));
        let (kind, f) = classify_bytes(b"", false).unwrap();
        assert_eq!(
            (kind, f.records),
            (ReplyKind::Cleaned, Some(0)),
            "all opted out"
        );
        let (kind, _) = classify_bytes(
            b"The file contains one or more invalid NHS Numbers.\r\n",
            false,
        )
        .unwrap();
        assert_eq!(kind, ReplyKind::InvalidNumbers);
        let (kind, f) = classify_bytes(br#"{"status": "pending", "stages": []}"#, true).unwrap();
        assert_eq!(
            (kind, f.job_status.as_deref()),
            (ReplyKind::JobCreated, Some("pending"))
        );
        let (kind, f) = classify_bytes(br#"{"status": "failed"}"#, false).unwrap();
        assert_eq!(
            (kind, f.job_status.as_deref()),
            (ReplyKind::JobCreated, Some("failed"))
        );
        // not ours to interpret
        assert!(
            classify_bytes(b"9694116539,\r\n", false).is_err(),
            "bad check digit"
        );
        assert!(classify_bytes(b"hello\n", false).is_err());
        assert!(classify_bytes(b"[1,2]", true).is_err());
        assert!(classify_bytes(&[b'9'; 5000], false).is_err(), "a long line");
        let err = classify_bytes(b"9694116538,\r\nx\r\n", false).unwrap_err();
        assert!(
            err.contains("line 2") && !err.contains("9694116538"),
            "{err}"
        );
    }

    #[test]
    fn file_names_from_message_ids_are_safe() {
        assert_eq!(
            safe_name("20200529155357895317_3573F8"),
            "20200529155357895317_3573F8"
        );
        assert_eq!(safe_name("../../etc/passwd"), "______etc_passwd");
        assert_eq!(safe_name(""), "unnamed");
    }
}
