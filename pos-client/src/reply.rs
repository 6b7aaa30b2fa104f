//! Classifying a downloaded reply by its content: the POS's rejection line, a job-created JSON
//! object, or a cleaned file; anything else is not a POS reply this tool knows.

use std::path::Path;

use mesh_client::MessageMeta;
use processor::pos::REJECTION_LINE;
use processor::reconcile::{ReplyLines, ReplyNumbers};
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
    /// Judged from what was seen as it downloaded, without reading the file again.
    pub(crate) streamed: bool,
    /// A cleaned reply's numbers, gathered as its lines were checked.
    pub(crate) numbers: Option<ReplyNumbers>,
}

/// Largest job-created JSON read.
const MAX_JOB_JSON: u64 = 1 << 20;

/// What was learnt of a data reply while it downloaded (see [`check_stream`]).
#[derive(Debug)]
pub(crate) struct Streamed {
    /// SHA-256 of the bytes seen.
    sha256: String,
    /// Bytes seen.
    bytes: u64,
    /// The line check of a cleaned reply: the lines and their numbers, or the first bad line.
    lines: Result<(u64, Option<ReplyNumbers>), u64>,
    /// False when the pieces did not follow one another (a chunk retried from its start): the
    /// file must be read instead.
    whole: bool,
}

/// Checks and hashes a reply's pieces as [`mesh_client::MeshClient::download_to_tee`] writes
/// them (run it on a thread of its own beside the download): this thread takes the SHA-256
/// while a second checks the lines, so that the download waits for neither (the hash alone is
/// about 1.3 s of one core for a national reply of 803 MB; hash and check on one thread held
/// the download back). Stops reading at the first piece out of order; the line check stops at
/// the first bad line while the hash goes on.
pub(crate) fn check_stream(
    mut pieces: tokio::sync::mpsc::Receiver<mesh_client::Piece>,
) -> Streamed {
    let (to_lines, from_hash) = std::sync::mpsc::sync_channel::<mesh_client::Piece>(LINE_PIECES);
    let checker = std::thread::spawn(move || {
        let (mut lines, mut bytes) = (ReplyLines::collecting(), 0u64);
        for (_, piece) in from_hash {
            lines.feed(&piece)?;
            bytes += piece.len() as u64;
        }
        lines.finish_gathered(bytes)
    });
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut whole = true;
    let mut checking = true;
    while let Some((at, piece)) = pieces.blocking_recv() {
        if at != bytes {
            whole = false;
            break;
        }
        hasher.update(&piece);
        bytes += piece.len() as u64;
        // a checker that stopped at a bad line takes no more
        checking = checking && to_lines.send((at, piece)).is_ok();
    }
    drop(to_lines);
    // a checker that did not finish leaves the check to a reading of the file (not whole)
    let lines = checker.join();
    Streamed {
        sha256: hex::encode(hasher.finalize()),
        bytes,
        whole: whole && lines.is_ok(),
        lines: lines.unwrap_or(Ok((0, None))),
    }
}

/// Pieces queued between the hashing thread and the line checker at most.
const LINE_PIECES: usize = 64;

/// The reason a cleaned reply's line `line_no` is refused.
fn bad_line(line_no: u64) -> String {
    format!("line {line_no} is not an NHS number line: not a POS reply this tool knows")
}

/// Reads a downloaded data reply once: the invalid-numbers line, a job-created JSON object
/// (Subject `SUCCESS` or a JSON content type), or a cleaned file (every line ten digits passing
/// Modulus 11, an optional comma, CRLF or LF; empty = everyone opted out). Anything else is
/// `Ok(Err(reason))`.
///
/// With `streamed` (what [`check_stream`] learnt while it downloaded), a reply too large to be
/// a job-created object or the rejection line is judged from that instead of being read
/// again, provided every byte of the file was seen in order.
pub(crate) async fn classify(
    path: &Path,
    meta: &MessageMeta,
    streamed: Option<Streamed>,
) -> Result<Result<(ReplyKind, Facts), String>, Error> {
    let owned = path.to_path_buf();
    let job_like = meta.subject.as_deref() == Some("SUCCESS")
        || meta
            .content_type
            .as_deref()
            .is_some_and(|t| t.contains("json"));
    let result = tokio::task::spawn_blocking(move || classify_file(&owned, job_like, streamed))
        .await
        .map_err(|e| processor::Error::read(path, std::io::Error::other(e)))?;
    result.map_err(|e| Error::Local(processor::Error::read(path, e)))
}

fn classify_file(
    path: &Path,
    job_like: bool,
    streamed: Option<Streamed>,
) -> std::io::Result<Result<(ReplyKind, Facts), String>> {
    let size = std::fs::metadata(path)?.len();
    if let Some(s) = streamed.filter(|s| s.whole && s.bytes == size && size > MAX_JOB_JSON) {
        return Ok(match s.lines {
            Err(line_no) => Err(bad_line(line_no)),
            Ok((records, numbers)) => Ok((
                ReplyKind::Cleaned,
                Facts {
                    sha256: s.sha256,
                    bytes: s.bytes,
                    records: Some(records),
                    job_status: None,
                    streamed: true,
                    numbers,
                },
            )),
        });
    }
    if size <= MAX_JOB_JSON {
        let bytes = std::fs::read(path)?;
        let facts = |records, job_status| Facts {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
            records,
            job_status,
            streamed: false,
            numbers: None,
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
            let (mut lines, mut bytes) = (ReplyLines::collecting(), 0u64);
            for (buf, n) in full_rx {
                let fed = lines.feed(&buf[..n]);
                bytes += n as u64;
                let _ = free_tx.send(buf);
                fed?;
            }
            lines.finish_gathered(bytes)
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
            Err(line_no) => Err(bad_line(line_no)),
            Ok((records, numbers)) => Ok((
                ReplyKind::Cleaned,
                Facts {
                    sha256: hex::encode(hasher.finalize()),
                    bytes,
                    records: Some(records),
                    job_status: None,
                    streamed: false,
                    numbers,
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
        classify_file(&path, job_like, None).unwrap()
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

    /// What [`check_stream`] learns of `pieces` (offset, bytes), sent as a download would.
    fn streamed(pieces: &[(u64, &[u8])]) -> Streamed {
        let (tx, rx) = tokio::sync::mpsc::channel(pieces.len().max(1));
        for (at, piece) in pieces {
            let piece: mesh_client::Piece = (*at, piece.to_vec().into());
            tx.try_send(piece).unwrap();
        }
        drop(tx);
        check_stream(rx)
    }

    /// [`streamed`] of `body` cut into pieces of `size` bytes.
    fn streamed_in(body: &[u8], size: usize) -> Streamed {
        let pieces: Vec<(u64, &[u8])> = body
            .chunks(size)
            .enumerate()
            .map(|(i, p)| ((i * size) as u64, p))
            .collect();
        streamed(&pieces)
    }

    #[test]
    fn a_reply_is_checked_and_hashed_as_it_arrives_and_read_again_only_when_it_must_be() {
        // a reply over the job-created size, in pieces that cut its lines anywhere
        let line = b"9694116538,\r\n";
        let body: Vec<u8> = line.iter().copied().cycle().take(13 * 90_000).collect();
        assert!(body.len() as u64 > MAX_JOB_JSON);
        let s = streamed_in(&body, 7777);
        assert!(s.whole);
        assert_eq!(
            (s.bytes, s.lines.as_ref().map(|l| l.0)),
            (body.len() as u64, Ok(90_000))
        );
        assert_eq!(s.sha256, hex::encode(Sha256::digest(&body)));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        std::fs::write(&path, &body).unwrap();
        let (kind, f) = classify_file(&path, false, Some(s)).unwrap().unwrap();
        assert_eq!((kind, f.records), (ReplyKind::Cleaned, Some(90_000)));
        assert!(f.streamed);
        assert_eq!(f.sha256, hex::encode(Sha256::digest(&body)));
        // and its numbers were gathered as it was checked
        let opts = processor::scan::ScanOptions::default();
        let numbers = vec![(path.clone(), f.numbers.unwrap())];
        let returned = processor::reconcile::returned_from(numbers, &opts).unwrap();
        assert_eq!((returned.counts.lines, returned.counts.unique), (90_000, 1));
        assert!(returned.set.contains(9694116538));

        // a bad line is named by number, and the hash still covers every byte
        let mut bad = body.clone();
        bad[13 * 70_000 + 9] = b'9';
        let s = streamed_in(&bad, 4096);
        assert_eq!(
            (s.bytes, s.lines.as_ref().map(|l| l.0).map_err(|e| *e)),
            (bad.len() as u64, Err(70_001))
        );
        std::fs::write(&path, &bad).unwrap();
        let reason = classify_file(&path, false, Some(s)).unwrap().unwrap_err();
        assert!(reason.starts_with("line 70001 "), "{reason}");

        // a chunk sent again from its start (a retried transfer): the pieces are not trusted
        // and the file is read instead; so is a file of another size than the bytes seen
        let retried = streamed(&[(0, &body[..5000]), (0, &body[..5000])]);
        assert!(!retried.whole);
        let reason = classify_file(&path, false, Some(retried))
            .unwrap()
            .unwrap_err();
        assert!(
            reason.starts_with("line 70001 "),
            "read from the file: {reason}"
        );
        std::fs::write(&path, &body).unwrap();
        let short = streamed(&[(0, &body[..5000])]);
        let (_, f) = classify_file(&path, false, Some(short)).unwrap().unwrap();
        assert_eq!(f.records, Some(90_000), "read from the file");
        assert!(!f.streamed);
        let lying = streamed(&[(0, &bad[..]), (0, &bad[..])]);
        let (_, f) = classify_file(&path, false, Some(lying)).unwrap().unwrap();
        assert_eq!(
            f.sha256,
            hex::encode(Sha256::digest(&body)),
            "read from the file"
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
