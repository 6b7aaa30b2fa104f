//! Analysing a chunked submission while it uploads, so that the POS's answer is ready soon
//! after the last chunk is accepted (a national file is 11 chunks: the upload of chunk k + 1
//! overlaps the analysis of chunk k).
//!
//! Faithful all the same: nothing is sent before the whole message is accepted
//! ([`run_job`](super::job) still waits for that), and the early work is only used if it read
//! exactly the accepted data and answered with the same opt-out state:
//! * a chunk is read only once it is committed, in order (a thread waits for the next one,
//!   woken by [`on_chunk`] or every [`POLL`] to notice an abandoned upload or a stopped
//!   server);
//! * each chunk read is kept ([`Held`]: its file open, or its bytes) and compared with the
//!   accepted chunk at acceptance (same file, or same bytes): a chunk replaced by a retry after it was
//!   read makes the job start again from the accepted data, as does a change in the opt-out
//!   answers ([`Decider`](super::Decider)) during the upload;
//! * the result chunks are written (and fsynced) as the analysis goes, into the store's
//!   `tmp/`, and only committed after acceptance, so they are durable before visible; a
//!   restart clears `tmp/` and the job is redone from the stored submission.
//!
//! Bounded: at most [`MAX_RUNNING`] early analyses at once (one thread each plus the
//! pipeline's, see [`scan`](super::scan)); further submissions are analysed after acceptance.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::scan::{Next, Parts};
use super::{analyse_with, open_chunk, Analysis, Decider};
use crate::config::PosEnv;
use crate::state::State;
use crate::store::{ChunkSource, Message, Status};

/// Early analyses running at once.
const MAX_RUNNING: usize = 2;
/// How often a thread waiting for a chunk looks at the message anyway.
const POLL: Duration = Duration::from_millis(250);

/// A chunk as it was read, kept until the job starts: holding the open file (or the bytes)
/// keeps its inode (or address) from being reused by a later upload, so "the same inode" (or
/// "the same address") means the same data.
pub(super) enum Held {
    File(std::fs::File),
    Memory(bytes::Bytes),
}

impl Held {
    /// Whether `s` is the very data that was read.
    fn is(&self, s: &ChunkSource) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self, s) {
            (Held::Memory(a), ChunkSource::Memory(b)) => {
                a.as_ptr() == b.as_ptr() && a.len() == b.len()
            }
            (Held::File(f), ChunkSource::File { path, .. }) => {
                match (f.metadata(), std::fs::metadata(path)) {
                    (Ok(a), Ok(b)) => (a.dev(), a.ino(), a.len()) == (b.dev(), b.ino(), b.len()),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// A finished early analysis: the analysis, every chunk it read, and the answers
/// it used.
type Done = (Analysis, Vec<Held>, Decider);

/// One submission analysed while it uploads.
struct Early {
    /// Bumped whenever a chunk of the message is committed.
    ticks: Mutex<u64>,
    /// Chunks the analysis has opened (the last one is being read).
    opened: AtomicU32,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<Option<Done>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Early {
    fn poke(&self) {
        *lock(&self.ticks) += 1;
        self.wake.notify_all();
    }

    fn running(&self) -> bool {
        lock(&self.thread)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Waits until a chunk is committed after `seen` ticks, or [`POLL`].
    fn wait(&self, seen: u64) {
        let g = lock(&self.ticks);
        if *g == seen {
            let _ = self.wake.wait_timeout(g, POLL);
        }
    }

    /// The analysis, once its thread ends (blocking); `None` if it failed.
    fn join(&self) -> Option<Done> {
        let t = lock(&self.thread).take()?;
        t.join().ok().flatten()
    }
}

/// The early analyses by message id (part of the [`PosEngine`](super::PosEngine)).
#[derive(Default)]
pub(super) struct Registry(Mutex<HashMap<String, Arc<Early>>>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registry({} early analyses)", lock(&self.0).len())
    }
}

/// Called once chunk data of a message is committed: wakes the message's early analysis, or
/// starts one for a chunked POS submission still uploading (if fewer than [`MAX_RUNNING`]
/// run).
pub(super) fn on_chunk(state: &Arc<State>, m: &Message, env: PosEnv) {
    if m.total_chunks < 2 {
        return;
    }
    let mut map = lock(&state.pos.early.0);
    if let Some(e) = map.get(&m.id) {
        e.poke();
        return;
    }
    if m.status != Status::Uploading {
        return;
    }
    // forget the analyses of uploads that will never be accepted
    map.retain(|id, e| {
        e.running()
            || state
                .store
                .get(id)
                .is_some_and(|m| matches!(m.status, Status::Uploading | Status::Accepted))
    });
    if map.values().filter(|e| e.running()).count() >= MAX_RUNNING {
        return;
    }
    let early = Arc::new(Early {
        ticks: Mutex::new(0),
        opened: AtomicU32::new(0),
        wake: Condvar::new(),
        thread: Mutex::new(None),
    });
    let feed = Feed {
        state: Arc::downgrade(state),
        early: early.clone(),
        id: m.id.clone(),
        total: m.total_chunks,
        gzip: m.content_encoding == crate::headers::ContentEncoding::Gzip,
        next: 1,
        read: Vec::new(),
    };
    let decider = state.pos.decider(env);
    let max = state.pos.max_decoded;
    let sink = state.pos.result_sink(result_dir(state));
    let id = m.id.clone();
    let spawned = std::thread::Builder::new()
        .name("pos-early".into())
        .spawn(move || {
            let read = Arc::new(Mutex::new(Vec::new()));
            let parts = Box::new(Recorder(feed, read.clone()));
            match analyse_with(parts, &decider, max, sink) {
                Ok(a) => {
                    let ids = std::mem::take(&mut *lock(&read));
                    Some((a, ids, decider))
                }
                Err(e) => {
                    tracing::info!(message_id = %id, error = %e, "POS early analysis stopped");
                    None
                }
            }
        });
    if let Ok(t) = spawned {
        *lock(&early.thread) = Some(t);
        map.insert(m.id.clone(), early);
    }
}

/// Where a job's result chunks are written before they are committed (`None`: in memory).
pub(super) fn result_dir(state: &State) -> Option<PathBuf> {
    state
        .store
        .tmp_path()
        .and_then(|p| p.parent().map(PathBuf::from))
}

/// The early analysis of accepted message `m`, if there was one and it read exactly the
/// accepted chunks with the answers the POS gives now; otherwise `None` (its result files
/// removed), and the job analyses the stored submission.
pub(super) async fn take(state: &Arc<State>, m: &Message, env: PosEnv) -> Option<Analysis> {
    let early = lock(&state.pos.early.0).remove(&m.id)?;
    // how far the analysis had come when the upload ended (the rest is the job's wait)
    let reading = early.opened.load(Ordering::Relaxed);
    let accepted_at = std::time::Instant::now();
    early.poke();
    let state = state.clone();
    let m = m.clone();
    let got = crate::store::blocking(move || {
        let Some((mut a, ids, decider)) = early.join() else {
            return Ok(None);
        };
        let same_data = ids.len() == m.total_chunks as usize
            && ids.iter().enumerate().all(|(i, read)| {
                let n = i as u32 + 1;
                m.chunks
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|size| state.store.chunk_source(&m.id, n, size))
                    .is_some_and(|s| read.is(&s))
            });
        let same_answers = decider == state.pos.decider(env);
        if same_data && same_answers {
            tracing::info!(
                message_id = %m.id,
                chunks = m.total_chunks,
                reading_chunk_at_acceptance = reading,
                finished_after_s = %format_args!("{:.2}", accepted_at.elapsed().as_secs_f64()),
                "POS analysed the submission while it uploaded"
            );
            return Ok(Some(a));
        }
        tracing::info!(
            message_id = %m.id,
            same_data,
            same_answers,
            "POS early analysis discarded: the job reads the accepted submission again"
        );
        if let Some(s) = a.result.take() {
            s.discard();
        }
        Ok(None)
    })
    .await;
    got.ok().flatten()
}

/// The decoded content of a message still uploading: each chunk once it is committed (the
/// next one opened early, while one is decoded, only if it is already committed).
struct Feed {
    state: Weak<State>,
    early: Arc<Early>,
    id: String,
    total: u32,
    gzip: bool,
    /// The next chunk to open.
    next: u32,
    /// Every chunk opened, in order.
    read: Vec<Held>,
}

impl Feed {
    /// Where to read chunk `n` if it is committed (`None`: not yet).
    fn source(&self, n: u32) -> std::io::Result<Option<ChunkSource>> {
        let gone = |why: &str| std::io::Error::other(why.to_string());
        let state = self
            .state
            .upgrade()
            .ok_or_else(|| gone("the server stopped"))?;
        let m = state
            .store
            .get(&self.id)
            .ok_or_else(|| gone("the message is gone"))?;
        if !matches!(m.status, Status::Uploading | Status::Accepted) {
            return Err(gone("the upload was abandoned"));
        }
        if let Some(size) = m.chunks.get(n as usize - 1).copied().flatten() {
            return state
                .store
                .chunk_source(&self.id, n, size)
                .map(Some)
                .ok_or_else(|| gone("chunk data missing"));
        }
        if m.status != Status::Uploading {
            return Err(gone("chunk data missing"));
        }
        Ok(None)
    }
}

impl Parts for Feed {
    fn next_part(&mut self, wait: bool) -> std::io::Result<Next> {
        if self.next > self.total {
            return Ok(Next::End);
        }
        let source = loop {
            let seen = *lock(&self.early.ticks);
            match self.source(self.next)? {
                Some(s) => break s,
                None if !wait => return Ok(Next::NotYet),
                None => self.early.wait(seen),
            }
        };
        let (reader, id) = open_chunk(source, self.gzip)?;
        self.early.opened.fetch_add(1, Ordering::Relaxed);
        self.read.push(id);
        self.next += 1;
        Ok(Next::Part(reader))
    }
}

/// A [`Feed`] that leaves the chunks it read behind when it is dropped (the
/// pipeline owns its parts).
struct Recorder(Feed, Arc<Mutex<Vec<Held>>>);

impl Parts for Recorder {
    fn next_part(&mut self, wait: bool) -> std::io::Result<Next> {
        self.0.next_part(wait)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        *lock(&self.1) = std::mem::take(&mut self.0.read);
    }
}
