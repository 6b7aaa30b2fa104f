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

/// Longest line of a cleaned reply looked at: a POS line is at most 13 bytes
/// (`NNNNNNNNNN,\r\n`), so anything longer is refused without reading it whole.
const MAX_REPLY_LINE: usize = 64;

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
    check_cleaned(path, 4 << 20)
}

/// Reads a cleaned file in blocks of `block` bytes, once: this thread reads and hashes each block
/// whole while a second thread checks its lines (no per-line read calls; the two halves of the
/// work overlap on two cores). Its facts, or why it is not one.
fn check_cleaned(path: &Path, block: usize) -> std::io::Result<Result<(ReplyKind, Facts), String>> {
    use std::sync::mpsc::{channel, sync_channel};
    let mut file = std::fs::File::open(path)?;
    // three buffers go round: one being read, one being checked, one waiting between them
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(1);
    let (free_tx, free_rx) = channel::<Vec<u8>>();
    for _ in 0..3 {
        let _ = free_tx.send(vec![0u8; block.max(1)]);
    }
    std::thread::scope(|scope| {
        let checker = scope.spawn(move || {
            let mut lines = Lines::default();
            for (buf, n) in full_rx {
                let fed = lines.feed(&buf[..n]);
                let _ = free_tx.send(buf);
                fed?;
            }
            lines.finish()
        });
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut read = Ok(());
        // ends when the file ends, or when the checker stops at a bad line (its buffers are gone)
        while let Ok(mut buf) = free_rx.recv() {
            let n = match read_some(&mut file, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            };
            hasher.update(&buf[..n]);
            bytes += n as u64;
            if full_tx.send((buf, n)).is_err() {
                break;
            }
        }
        drop(full_tx);
        let checked = checker
            .join()
            .map_err(|_| std::io::Error::other("the line checker stopped unexpectedly"))?;
        read?;
        Ok(match checked {
            Err(line_no) => Err(format!(
                "line {line_no} is not an NHS number line: not a POS reply this tool knows"
            )),
            Ok(records) => Ok((
                ReplyKind::Cleaned,
                Facts {
                    sha256: hex::encode(hasher.finalize()),
                    bytes,
                    records: Some(records),
                    job_status: None,
                },
            )),
        })
    })
}

/// `read`, retried when interrupted.
fn read_some(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match std::io::Read::read(file, buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The line check of a cleaned reply, fed block by block: `Err(n)` names the first bad line.
#[derive(Default)]
struct Lines {
    /// Good lines so far.
    records: u64,
    /// Bytes of a line cut by the end of the previous block.
    carry: Vec<u8>,
}

impl Lines {
    fn feed(&mut self, block: &[u8]) -> Result<(), u64> {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', block) {
            let line = &block[start..=end];
            start = end + 1;
            let ok = if self.carry.is_empty() {
                is_reply_line(line)
            } else {
                self.carry.extend_from_slice(line);
                let ok = is_reply_line(&self.carry);
                self.carry.clear();
                ok
            };
            if !ok {
                return Err(self.records + 1);
            }
            self.records += 1;
        }
        self.carry.extend_from_slice(&block[start..]);
        if self.carry.len() > MAX_REPLY_LINE {
            return Err(self.records + 1);
        }
        Ok(())
    }

    /// The number of lines, once the last (without a line ending) is checked.
    fn finish(mut self) -> Result<u64, u64> {
        if !self.carry.is_empty() {
            if !is_reply_line(&self.carry) {
                return Err(self.records + 1);
            }
            self.records += 1;
        }
        Ok(self.records)
    }
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
    fn lines_cut_by_block_boundaries_are_checked_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let good = "9694116538,\r\n9694116546\n9434765919,\r\n9434765919";
        std::fs::write(&path, good).unwrap();
        let whole = check_cleaned(&path, 1 << 20).unwrap().unwrap().1;
        assert_eq!(whole.records, Some(4));
        assert_eq!(whole.sha256, hex::encode(Sha256::digest(good)));
        for block in 1..=good.len() + 1 {
            let f = check_cleaned(&path, block).unwrap().unwrap().1;
            assert_eq!(
                (f.records, f.bytes),
                (whole.records, whole.bytes),
                "{block}"
            );
            assert_eq!(f.sha256, whole.sha256, "{block}");
        }
        // a bad line found whatever the cut: its number, never its content
        for (bad, line) in [
            ("9694116538,\r\n9694116539,\r\n", 2),
            ("9694116538\n\n9694116546\n", 2),
            ("9694116538\n96941165469694116546\n", 2),
            ("9694116538\n969411654", 2),
            (&*format!("9694116538\n{}", "9".repeat(200)), 2),
        ] {
            std::fs::write(&path, bad).unwrap();
            for block in [1, 2, 3, 7, 11, 13, 64, 1 << 20] {
                let reason = check_cleaned(&path, block).unwrap().unwrap_err();
                assert!(
                    reason.starts_with(&format!("line {line} ")),
                    "{bad:?} {block}: {reason}"
                );
            }
        }
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
