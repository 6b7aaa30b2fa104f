//! The POS at work (async): starting a job when a submission is accepted, answering it (job
//! created, then the result after the delay), and resuming unanswered jobs after a restart.
//! The decisions themselves are the pure functions of [`crate::pos`].

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::{analyse, open_message, Analysis, INVALID_FILE_LINE};
use crate::config::{PosEnv, POS_WORKFLOW};
use crate::error::Error;
use crate::headers::ContentEncoding;
use crate::state::State;
use crate::store::{create_private, ChunkSource, Message, MessageType, PosStage, Received};

/// Called once a message is complete and in its recipient's inbox: logs it and starts a POS
/// job if it is a submission to a POS mailbox.
pub(crate) fn on_accepted(state: &Arc<State>, m: &Message) {
    tracing::info!(
        message_id = %m.id,
        chunks = m.total_chunks,
        bytes = m.file_size(),
        "message accepted into inbox"
    );
    maybe_start(state, m);
}

/// Called once a chunk of a message is committed (before [`on_accepted`] if it completes the
/// message): a chunked POS submission is analysed while it uploads ([`super::early`]).
pub(crate) fn on_chunk(state: &Arc<State>, m: &Message) {
    if let Some(env) = pos_env(state, m) {
        super::early::on_chunk(state, m, env);
    }
}

/// The POS environment that answers `m`, if it is a submission to a POS mailbox.
fn pos_env(state: &State, m: &Message) -> Option<PosEnv> {
    let env = state.mailboxes.get(&m.recipient).and_then(|mb| mb.pos)?;
    let from_pos = m
        .sender
        .as_ref()
        .and_then(|s| state.mailboxes.get(s))
        .is_some_and(|mb| mb.pos.is_some());
    if m.workflow_id != POS_WORKFLOW || m.message_type != MessageType::Data || from_pos {
        return None;
    }
    Some(env)
}

/// Starts a POS job if `m` is a submission to a POS mailbox.
fn maybe_start(state: &Arc<State>, m: &Message) {
    let Some(env) = pos_env(state, m) else {
        return;
    };
    let job_state = state.clone();
    let m = m.clone();
    state.spawn(async move {
        let id = m.id.clone();
        if let Err(e) = run_job(job_state, m, env).await {
            tracing::error!(message_id = %id, error = %e, "POS job failed");
        }
    });
}

/// After a restart: answer submissions still waiting in POS inboxes.
pub(crate) fn recover(state: &Arc<State>) {
    let pos_boxes: Vec<String> = state
        .mailboxes
        .values()
        .filter(|m| m.pos.is_some())
        .map(|m| m.id.clone())
        .collect();
    for mb in pos_boxes {
        for m in state.store.pos_pending(&mb) {
            maybe_start(state, &m);
        }
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::Store {
        path: PathBuf::from("<pos>"),
        message: e.to_string(),
    }
}

/// Fields of a message the POS sends.
struct Reply {
    subject: Option<String>,
    file_name: Option<String>,
    content_type: Option<String>,
    /// How its chunks are stored.
    content_encoding: ContentEncoding,
}

async fn deliver(
    state: &Arc<State>,
    from: &str,
    to: &str,
    local_id: Option<String>,
    reply: Reply,
    chunks: Vec<Received>,
) -> Result<Message, Error> {
    let now = state.config.clock.now();
    let id = state.store.new_id(now);
    let sizes: Vec<Option<u64>> = chunks.iter().map(|c| Some(c.size())).collect();
    let total = sizes.len() as u32;
    state.store.commit_chunks(&id, chunks).await?;
    let m = Message {
        subject: reply.subject,
        local_id,
        file_name: reply.file_name,
        content_type: reply.content_type,
        content_encoding: reply.content_encoding,
        total_chunks: total,
        chunks: sizes,
        ..Message::new(
            id.clone(),
            MessageType::Data,
            Some(from.to_string()),
            to.to_string(),
            POS_WORKFLOW.to_string(),
            now.timestamp_micros(),
        )
    };
    let m = match state
        .store
        .commit(None, move |inner| Ok(vec![inner.new_message(m)?]))
        .await
    {
        Ok(mut v) => v.remove(0),
        Err(e) => {
            state.store.drop_data_of(&id, total).await;
            return Err(e.into());
        }
    };
    on_accepted(state, &m);
    Ok(m)
}

/// Analyses the stored submission `m` (at most `State::pos_readers` jobs read at once). The
/// inner error is the analysis's (an unreadable submission); the outer, missing chunk data.
async fn analyse_stored(
    state: &Arc<State>,
    m: &Message,
    env: PosEnv,
) -> Result<Result<Analysis, Error>, Error> {
    let sources: Vec<ChunkSource> = (1..=m.total_chunks)
        .filter_map(|n| {
            let size = m.chunks.get(n as usize - 1).copied().flatten()?;
            state.store.chunk_source(&m.id, n, size)
        })
        .collect();
    if sources.len() != m.total_chunks as usize {
        return Err(Error::Store {
            path: PathBuf::from(&m.id),
            message: "chunk data missing".into(),
        });
    }
    let gzip = m.content_encoding == ContentEncoding::Gzip;
    let sink = state.pos.result_sink(super::early::result_dir(state));
    let job_state = state.clone();
    let reading = state.pos_readers.acquire().await;
    let analysis = crate::store::blocking(move || {
        let reader = open_message(sources, gzip).map_err(io_err)?;
        analyse(reader, &job_state.pos, env, sink).map_err(io_err)
    })
    .await;
    drop(reading);
    Ok(analysis)
}

async fn run_job(state: Arc<State>, m: Message, env: PosEnv) -> Result<(), Error> {
    let received = state.config.clock.now();
    let analysis = match super::early::take(&state, &m, env).await {
        Some(a) => Ok(a),
        None => analyse_stored(&state, &m, env).await?,
    };
    let mut analysis = match analysis {
        Ok(a) => a,
        Err(e) => {
            // e.g. a corrupt gzip stream: the POS cannot read it, so treat it as invalid
            tracing::warn!(message_id = %m.id, error = %e, "POS could not read the submission");
            Analysis {
                size: 1,
                hash: String::new(),
                lines: 0,
                kept_lines: 0,
                invalid: true,
                line_ending: "\r\n",
                result: None,
                cpu: Default::default(),
            }
        }
    };
    let pos_mailbox = m.recipient.clone();
    let sender = m.sender.clone().unwrap_or_default();
    // the POS collects the submission (its data is kept until the job is answered, so that a
    // restart can finish the job)
    state
        .store
        .acknowledge(&m.id, &pos_mailbox, state.config.clock.now())
        .await?;
    if m.pos_stage == PosStage::JobSent {
        tracing::info!(submission = %m.id, "POS job resumed after a restart");
        return send_result(&state, &m, analysis).await;
    }
    let non_empty = analysis.size > 0;
    let mut duplicate_of = None;
    if non_empty && !analysis.hash.is_empty() {
        let (snapshot, dup) = state.store.record_pos_hash(&m.id, &analysis.hash);
        if let Some(s) = snapshot {
            state.store.persist(vec![s]).await?;
        }
        duplicate_of = dup;
    }
    let unique = duplicate_of.is_none();
    let passed = non_empty && unique;
    let stage = |name: &str, p: Option<bool>| json!({"stage": name, "passed": p});
    let iso = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let now = state.config.clock.now();
    let job = json!({
        "version": 1,
        "id": rand::random::<u32>() % 90_000_000 + 10_000_000,
        "status": if passed { "pending" } else { "failed" },
        "received": iso(received),
        "submitted": iso(crate::clock::from_us(m.accepted_us.unwrap_or(m.created_us))),
        "finished": if passed { serde_json::Value::Null } else { iso(now).into() },
        "stages": [
            stage("validate_non_empty_file", Some(non_empty)),
            stage("validate_is_unique_upload", non_empty.then_some(unique)),
            stage("validate_in_order", passed.then_some(true)),
        ],
        "runs": [],
        "sender_id": sender,
        "dataset_id": "mesh_to_pos",
        "metadata": {
            "request": {
                "extra": {
                    "sending_mailbox": sender,
                    "landing_mailbox": pos_mailbox,
                    "message_id": m.id,
                    "filename": m.file_name.clone().unwrap_or_else(|| format!("{}.dat", m.id)),
                    "local_id": m.local_id,
                    "subject": m.subject,
                    "compressed": m.compressed || m.content_encoding == ContentEncoding::Gzip,
                }
            },
            "filename": m.file_name.clone().unwrap_or_else(|| format!("{}.dat", m.id)),
            "filesize": analysis.size,
            "file_hash": analysis.hash,
        },
    });
    let mut job_body = job.to_string().into_bytes();
    job_body.push(b'\n');
    let job_msg = deliver(
        &state,
        &pos_mailbox,
        &sender,
        m.local_id.clone(),
        Reply {
            subject: Some("SUCCESS".into()),
            file_name: None,
            content_type: Some("application/json".into()),
            content_encoding: ContentEncoding::Identity,
        },
        vec![stage_bytes(&state, job_body)?],
    )
    .await?;
    tracing::info!(
        submission = %m.id,
        job_message = %job_msg.id,
        lines = analysis.lines,
        bytes = analysis.size,
        non_empty,
        unique,
        decode_cpu_s = %format_args!("{:.2}", analysis.cpu.decode),
        judge_cpu_s = %format_args!("{:.2}", analysis.cpu.judge),
        write_cpu_s = %format_args!("{:.2}", analysis.cpu.write),
        "POS job created"
    );
    if !passed {
        if let Some(s) = analysis.result.take() {
            s.discard();
        }
        return finish(&state, &m).await;
    }
    if let Some(snapshot) = state.store.set_pos_stage(&m.id, PosStage::JobSent) {
        state.store.persist(vec![snapshot]).await?;
    }
    send_result(&state, &m, analysis).await
}

/// Marks a submission answered and frees its data.
async fn finish(state: &Arc<State>, m: &Message) -> Result<(), Error> {
    if let Some(snapshot) = state.store.set_pos_stage(&m.id, PosStage::Done) {
        state.store.persist(vec![snapshot.clone()]).await?;
        state.store.drop_data(&snapshot).await;
    }
    Ok(())
}

/// After the configured delay, sends the result of a job whose "job created" message is out.
async fn send_result(state: &Arc<State>, m: &Message, mut analysis: Analysis) -> Result<(), Error> {
    if !state.pos.delay.is_zero() {
        tokio::time::sleep(state.pos.delay).await;
    }
    let (chunks, content_encoding) = match (analysis.invalid, analysis.result.take()) {
        (false, Some(sink)) => {
            let encoding = sink.encoding();
            let chunks = crate::store::blocking(move || sink.finish().map_err(io_err)).await?;
            (chunks, encoding)
        }
        (_, other) => {
            if let Some(s) = other {
                s.discard();
            }
            let line = format!("{INVALID_FILE_LINE}{}", analysis.line_ending);
            let chunks = vec![stage_bytes(state, line.into_bytes())?];
            (chunks, ContentEncoding::Identity)
        }
    };
    let result = deliver(
        state,
        &m.recipient,
        m.sender.as_deref().unwrap_or_default(),
        m.local_id.clone(),
        Reply {
            subject: m.subject.clone(),
            file_name: m.file_name.clone(),
            content_type: None,
            content_encoding,
        },
        chunks,
    )
    .await?;
    tracing::info!(
        submission = %m.id,
        result_message = %result.id,
        invalid = analysis.invalid,
        lines = analysis.lines,
        kept = analysis.kept_lines,
        "POS result sent"
    );
    finish(state, m).await
}

/// A small body as a chunk ready to commit (a durable temp file for the disk store).
fn stage_bytes(state: &State, data: Vec<u8>) -> Result<Received, Error> {
    match state.store.tmp_path() {
        None => Ok(Received::Memory(Bytes::from(data))),
        Some(tmp) => {
            let size = data.len() as u64;
            let mut f = create_private(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&data).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            Ok(Received::File { tmp, size })
        }
    }
}
