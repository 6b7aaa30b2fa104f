//! Sending: `POST /messageexchange/{mailbox}/outbox` and `…/outbox/{id}/{n}` (sections 5.2,
//! 5.3, 7, 8).
//!
//! A file is split into chunks of at most the chunk size (uncompressed bytes; 75 MiB by
//! default, never over 100 MB); each chunk is read from disk on its own, so memory use is one
//! chunk whatever the file size. With compression each chunk is gzip'd independently ("never
//! compress then split") and every request says `Content-Encoding: gzip`. Chunk 1 carries all
//! the message headers and `Mex-Chunk-Range: 1:N` and returns the message id; chunks 2..N carry
//! only `Mex-Chunk-Range: n:N`.
//!
//! Chunk 1 is never retried (a repeat would be a second message). Chunks 2..N are: re-uploading
//! a chunk overwrites it while the message is still uploading. If a chunk still fails, the error
//! is [`Error::PartialSend`] naming the message id and the first missing chunk, for
//! [`MeshClient::resume_send`].

use std::path::Path;

use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};

use crate::client::describe;
use crate::config::check_chunk_size;
use crate::{Error, MeshClient};

/// What to send and to whom. `to` and `workflow_id` are required; the rest is optional
/// metadata passed through to the recipient (`Mex-*` headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Recipient mailbox id (`Mex-To`).
    pub to: String,
    /// Workflow id (`Mex-WorkflowID`), e.g. `SPINE_NTT_UPHOLDING`.
    pub workflow_id: String,
    /// `Mex-Subject`.
    pub subject: Option<String>,
    /// Sender's own reference (`Mex-LocalID`); must not contain patient data.
    pub local_id: Option<String>,
    /// `Mex-FileName`; defaults to the file name of the path being sent.
    pub file_name: Option<String>,
    /// Content type of the whole message (`Mex-Content-Type`; also `Content-Type` when the
    /// message is a single chunk).
    pub content_type: Option<String>,
    /// Opaque checksum passed to the recipient (`Mex-Content-Checksum`, section 9), e.g.
    /// `sha256:…`; MESH does not verify it.
    pub checksum: Option<String>,
    /// Gzip each chunk (also on when the client config says so).
    pub compress: bool,
    /// Chunk size for this message, overriding the client's; at most 100 MB. A resumed send
    /// must use the same chunk size as the original one.
    pub chunk_size: Option<u64>,
}

/// How a file is cut into chunks for sending (section 7): `chunks` pieces of `chunk_size`
/// bytes of the uncompressed file, the last one shorter, at least one (an empty file is one
/// empty chunk). From [`MeshClient::plan_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkPlan {
    /// Size of the file.
    pub file_size: u64,
    /// Bytes of the file per chunk (before compression).
    pub chunk_size: u64,
    /// Number of chunks.
    pub chunks: u32,
    /// Whether each chunk is gzip'd.
    pub compress: bool,
    /// Gzip level (0..=9) of compressed chunks, as
    /// [`ClientConfig::with_compression_level`](crate::ClientConfig::with_compression_level)
    /// maps it.
    pub level: u32,
}

impl ChunkPlan {
    /// Offset and length of chunk `n` (1-based, `1..=chunks`) in the file.
    fn span(&self, n: u32) -> (u64, u64) {
        let start = (u64::from(n.max(1)) - 1)
            .saturating_mul(self.chunk_size)
            .min(self.file_size);
        (start, self.chunk_size.min(self.file_size - start))
    }

    /// Reads chunk `n` (1-based) of the file at `path` and gzips it (on a blocking thread) if
    /// the plan compresses: the body [`MeshClient::upload_chunk`] sends. It needs no client,
    /// so a caller can read and compress the next chunks on tasks of their own while one is
    /// uploading, several at once: MESH compresses each chunk independently (section 7), so
    /// the bytes are the same whichever order they are made in.
    pub async fn read_chunk(&self, path: &Path, n: u32) -> Result<Bytes, Error> {
        if n == 0 || n > self.chunks {
            return Err(Error::Config(format!(
                "chunk {n} does not exist: {} has {} chunks",
                path.display(),
                self.chunks
            )));
        }
        Ok(read_chunk(path, self, n).await?.0)
    }

    /// File bytes held by chunks `1..=n` (the progress once chunk `n` is uploaded).
    pub fn bytes_through(&self, n: u32) -> u64 {
        u64::from(n)
            .saturating_mul(self.chunk_size)
            .min(self.file_size)
    }
}

/// Content type of chunks 2..N and of a multi-chunk chunk 1.
const OCTET_STREAM: &str = "application/octet-stream";

impl MeshClient {
    /// Sends the file at `path` as one message and returns its MESH message id.
    ///
    /// The file is streamed from disk chunk by chunk; `progress` is called with the number of
    /// file bytes sent so far after each chunk (and with 0 at the start). If a chunk after the
    /// first fails even after retries, the error is [`Error::PartialSend`]; finish the message
    /// with [`resume_send`](MeshClient::resume_send) rather than sending the file again.
    pub async fn send_file(
        &self,
        path: &Path,
        opts: &SendOptions,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<String, Error> {
        let plan = self.plan(path, opts).await?;
        progress(0);
        let (body, len) = read_chunk(path, &plan, 1).await?;
        let message_id = self.upload_first_chunk(path, opts, &plan, body).await?;
        tracing::debug!(
            message_id,
            chunks = plan.chunks,
            bytes = plan.file_size,
            "message created"
        );
        progress(len);
        self.upload_chunks(path, &plan, &message_id, 2, progress)
            .await?;
        Ok(message_id)
    }

    /// Finishes a chunked message whose chunks before `first_missing_chunk` were uploaded
    /// (see [`Error::PartialSend`]). `path` and `opts` must be those of the original send
    /// (same file, same chunk size and compression). `progress` starts at the bytes of the
    /// chunks already sent. A `first_missing_chunk` past the last chunk is a no-op.
    pub async fn resume_send(
        &self,
        path: &Path,
        opts: &SendOptions,
        message_id: &str,
        first_missing_chunk: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), Error> {
        if first_missing_chunk < 2 {
            return Err(Error::Config(
                "chunk 1 creates the message: use send_file, resume_send starts at chunk 2 or later"
                    .into(),
            ));
        }
        let plan = self.plan(path, opts).await?;
        if first_missing_chunk > plan.chunks {
            return Ok(());
        }
        progress(plan.span(first_missing_chunk).0);
        self.upload_chunks(path, &plan, message_id, first_missing_chunk, progress)
            .await
    }

    /// Low level: uploads chunk `chunk` (1-based) of `path` as cut by `opts`.
    ///
    /// Chunk 1 is sent with `message_id: None`, creates the message and returns its new id
    /// (never retried). Later chunks need the id and return it unchanged (retried). Use this
    /// to drive an upload yourself; [`send_file`](MeshClient::send_file) is the usual way.
    pub async fn send_chunk(
        &self,
        path: &Path,
        opts: &SendOptions,
        message_id: Option<&str>,
        chunk: u32,
    ) -> Result<String, Error> {
        let plan = self.plan(path, opts).await?;
        if chunk == 0 || chunk > plan.chunks {
            return Err(Error::Config(format!(
                "chunk {chunk} does not exist: {} has {} chunks",
                path.display(),
                plan.chunks
            )));
        }
        let (body, _) = read_chunk(path, &plan, chunk).await?;
        match (chunk, message_id) {
            (1, None) => self.upload_first_chunk(path, opts, &plan, body).await,
            (1, Some(_)) => Err(Error::Config(
                "chunk 1 creates a new message and takes no message id".into(),
            )),
            (_, Some(id)) => {
                self.post_chunk(id, chunk, &plan, body).await?;
                Ok(id.to_owned())
            }
            (_, None) => Err(Error::Config(format!(
                "chunk {chunk} needs the message id returned for chunk 1"
            ))),
        }
    }

    /// Uploads chunk `n` ≥ 2 of message `message_id`, its body made by
    /// [`ChunkPlan::read_chunk`] with the same `plan`; retried like
    /// [`send_chunk`](MeshClient::send_chunk).
    pub async fn upload_chunk(
        &self,
        message_id: &str,
        n: u32,
        plan: &ChunkPlan,
        body: Bytes,
    ) -> Result<(), Error> {
        if n < 2 || n > plan.chunks {
            return Err(Error::Config(format!(
                "chunk {n} is not one of 2..={} (chunk 1 creates the message)",
                plan.chunks
            )));
        }
        self.post_chunk(message_id, n, plan, body).await
    }

    /// Uploads chunks `from..=N`, reporting progress; any failure becomes `PartialSend`.
    async fn upload_chunks(
        &self,
        path: &Path,
        plan: &ChunkPlan,
        message_id: &str,
        from: u32,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), Error> {
        for n in from..=plan.chunks {
            let result = async {
                let (body, _) = read_chunk(path, plan, n).await?;
                self.post_chunk(message_id, n, plan, body).await
            }
            .await;
            match result {
                Ok(()) => progress(plan.bytes_through(n)),
                Err(source) => {
                    return Err(Error::PartialSend {
                        message_id: message_id.to_owned(),
                        next_chunk: n,
                        total_chunks: plan.chunks,
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok(())
    }

    /// Uploads chunk 1 of the file at `path` as cut by `plan` (from
    /// [`plan_send`](MeshClient::plan_send) with the same `opts`), its body made ahead by
    /// [`ChunkPlan::read_chunk`], creating the message: returns its new id. `POST …/outbox` with
    /// all the message headers; one attempt only (section 13), like
    /// [`send_chunk`](MeshClient::send_chunk) of chunk 1.
    pub async fn upload_first_chunk(
        &self,
        path: &Path,
        opts: &SendOptions,
        plan: &ChunkPlan,
        body: Bytes,
    ) -> Result<String, Error> {
        if opts.to.trim().is_empty() || opts.workflow_id.trim().is_empty() {
            return Err(Error::Config(
                "a message needs a recipient (to) and a workflow id".into(),
            ));
        }
        let url = self.endpoint(&[self.mailbox(), "outbox"]);
        let what = describe(&Method::POST, &url);
        let file_name = opts
            .file_name
            .clone()
            .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()));
        let content_type = match (&opts.content_type, plan.chunks) {
            (Some(ct), 1) => ct.as_str(),
            _ => OCTET_STREAM,
        };
        let mut request = self
            .request(Method::POST, url)
            .header(
                CONTENT_TYPE,
                header_value(CONTENT_TYPE.as_str(), content_type)?,
            )
            .header("Mex-Chunk-Range", format!("1:{}", plan.chunks));
        let optional = [
            ("Mex-To", Some(opts.to.trim())),
            ("Mex-WorkflowID", Some(opts.workflow_id.trim())),
            ("Mex-Subject", opts.subject.as_deref()),
            ("Mex-LocalID", opts.local_id.as_deref()),
            ("Mex-FileName", file_name.as_deref()),
            ("Mex-Content-Type", opts.content_type.as_deref()),
            ("Mex-Content-Checksum", opts.checksum.as_deref()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                request = request.header(name, header_value(name, value)?);
            }
        }
        let response = self
            .execute(with_encoding(request, plan).body(body), &what)
            .await?;
        let body = response.bytes().await.map_err(|source| Error::Transport {
            request: what.clone(),
            source,
        })?;
        // v2 {"message_id": …}, v1 {"messageID": …} (section 5.2)
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|json| {
                json.get("message_id")
                    .or_else(|| json.get("messageID"))
                    .and_then(|id| id.as_str())
                    .map(str::to_owned)
            })
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::Protocol {
                request: what,
                reason: "no message id in the response to the first chunk".into(),
            })
    }

    /// `POST …/outbox/{id}/{n}` for n ≥ 2, retried. The v2 answer is the JSON `null`
    /// (section 5.3) and is ignored.
    async fn post_chunk(
        &self,
        message_id: &str,
        n: u32,
        plan: &ChunkPlan,
        body: Bytes,
    ) -> Result<(), Error> {
        let url = self.endpoint(&[self.mailbox(), "outbox", message_id, &n.to_string()]);
        let what = describe(&Method::POST, &url);
        let mut attempt = 0;
        loop {
            let request = self
                .request(Method::POST, url.clone())
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header("Mex-Chunk-Range", format!("{n}:{}", plan.chunks));
            match self
                .execute(with_encoding(request, plan).body(body.clone()), &what)
                .await
            {
                Ok(_) => {
                    tracing::debug!(message_id, chunk = n, bytes = body.len(), "chunk uploaded");
                    return Ok(());
                }
                // 423 = message finalised: on a repeat of the last chunk this means the previous
                // attempt did arrive and completed the message, only its answer was lost.
                Err(Error::Api { status: 423, .. }) if attempt > 0 && n == plan.chunks => {
                    return Ok(())
                }
                Err(e) if self.should_retry(&e, &mut attempt).await => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// How [`send_file`](MeshClient::send_file) would cut the file at `path` with `opts`:
    /// chunk size, number of chunks, compression. Lets a caller driving
    /// [`send_chunk`](MeshClient::send_chunk) itself know how many chunks there are.
    pub async fn plan_send(&self, path: &Path, opts: &SendOptions) -> Result<ChunkPlan, Error> {
        self.plan(path, opts).await
    }

    /// Checks the options against the file and cuts it into chunks.
    async fn plan(&self, path: &Path, opts: &SendOptions) -> Result<ChunkPlan, Error> {
        let chunk_size = opts.chunk_size.unwrap_or(self.config.chunk_size);
        check_chunk_size(chunk_size)?;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::Config(format!("{} is not a file", path.display())));
        }
        let file_size = meta.len();
        let chunks = u32::try_from(file_size.div_ceil(chunk_size).max(1)).map_err(|_| {
            Error::Config(format!(
                "{} needs more than {} chunks of {chunk_size} bytes",
                path.display(),
                u32::MAX
            ))
        })?;
        Ok(ChunkPlan {
            file_size,
            chunk_size,
            chunks,
            compress: opts.compress || self.config.compress,
            level: self.config.compress_level,
        })
    }
}

fn with_encoding(request: RequestBuilder, plan: &ChunkPlan) -> RequestBuilder {
    if plan.compress {
        request.header(CONTENT_ENCODING, "gzip")
    } else {
        request
    }
}

/// Header values come from the caller: control characters are refused here rather than by the
/// server (which would answer 400 MalformedControlFile, section 5.2).
fn header_value(name: &str, value: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(value).map_err(|_| {
        Error::Config(format!(
            "{name}: value has characters not allowed in a header"
        ))
    })
}

/// The libdeflate level of MESH level `level` (0..=9; see
/// [`ClientConfig::with_compression_level`](crate::ClientConfig::with_compression_level)):
/// the same number, except 9, the smallest, which is libdeflate's 10 (near-optimal parsing:
/// on `.dat` files smaller than libdeflate's 8 and 9, and faster).
fn libdeflate_level(level: u32) -> u32 {
    if level >= 9 {
        10
    } else {
        level
    }
}

/// Reads chunk `n` and gzips it if asked ([`line_gzip::gzip`]), on a blocking thread;
/// returns the request body and the number of file bytes it holds.
///
/// The chunk is mapped, not read: the compressor reads the page cache in place (no copy into a
/// fresh 75 MiB buffer, whose zero-filled pages cost as much CPU as the read). Only the
/// compressed body is held in memory. Uncompressed, the chunk is copied once into the body.
async fn read_chunk(path: &Path, plan: &ChunkPlan, n: u32) -> Result<(Bytes, u64), Error> {
    let (start, len) = plan.span(n);
    let (owned, level, compress) = (path.to_path_buf(), plan.level, plan.compress);
    let body = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let file = std::fs::File::open(&owned)?;
        if file.metadata()?.len() < start + len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being sent",
            ));
        }
        if len == 0 {
            return if compress {
                line_gzip::gzip(&[], libdeflate_level(level))
            } else {
                Ok(Vec::new())
            };
        }
        // SAFETY: the map is read only while this function runs. A file truncated meanwhile by
        // another process would fault (SIGBUS); `ndop` sends its own prepared files, which
        // nothing else writes, as the rest of the engine maps its inputs.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(len as usize)
                .map(&file)?
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        if compress {
            line_gzip::gzip(&map, libdeflate_level(level))
        } else {
            Ok(map.to_vec())
        }
    })
    .await
    .map_err(|e| Error::io(path, std::io::Error::other(e)))?
    .map_err(|e| Error::io(path, e))?;
    Ok((Bytes::from(body), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_read_ahead_concurrently_are_the_file_cut_and_gzipped_independently() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..25_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&path, &data).unwrap();
        let plan = ChunkPlan {
            file_size: data.len() as u64,
            chunk_size: 30_000,
            chunks: 4,
            compress: true,
            level: 6,
        };
        // all at once, finished in reverse order
        let tasks: Vec<_> = (1..=4)
            .map(|n| {
                let path = path.clone();
                tokio::spawn(async move { plan.read_chunk(&path, n).await })
            })
            .collect();
        let mut bodies = Vec::new();
        for t in tasks.into_iter().rev() {
            bodies.push(t.await.unwrap().unwrap());
        }
        bodies.reverse();
        let mut joined = Vec::new();
        for body in &bodies {
            let mut part = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut part)
                .unwrap();
            assert!(part.len() <= 30_000);
            joined.extend(part);
        }
        assert_eq!(joined, data);
        assert!(plan.read_chunk(&path, 5).await.is_err());
        assert!(plan.read_chunk(&path, 0).await.is_err());
    }

    #[test]
    fn plan_spans_cover_the_file_exactly() {
        let plan = ChunkPlan {
            file_size: 25,
            chunk_size: 10,
            chunks: 3,
            compress: false,
            level: 6,
        };
        assert_eq!(plan.span(1), (0, 10));
        assert_eq!(plan.span(2), (10, 10));
        assert_eq!(plan.span(3), (20, 5));
        assert_eq!(plan.bytes_through(0), 0);
        assert_eq!(plan.bytes_through(2), 20);
        assert_eq!(plan.bytes_through(3), 25);
        assert_eq!(plan.bytes_through(9), 25);
        let empty = ChunkPlan {
            file_size: 0,
            chunk_size: 10,
            chunks: 1,
            compress: true,
            level: 6,
        };
        assert_eq!(empty.span(1), (0, 0));
    }

    #[test]
    fn levels_map_to_libdeflate_with_nine_its_near_optimal_ten() {
        let mapped: Vec<u32> = (0..=9).map(libdeflate_level).collect();
        assert_eq!(mapped, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]);
    }

    #[test]
    fn header_values_with_control_characters_are_refused() {
        assert!(header_value("Mex-Subject", "ok subject").is_ok());
        assert!(matches!(
            header_value("Mex-Subject", "bad\nsubject"),
            Err(Error::Config(_))
        ));
    }
}
