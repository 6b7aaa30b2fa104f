//! The database: opening (and refusing) it, batches, the as-of view, status, purge, audit.

use crate::error::{Error, Result};
use crate::import::NewBatch;
use crate::time::{format_age, format_time, now_ms, Age};
use roaring::RoaringBitmap;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database file inside the cache directory.
pub const DB_FILE: &str = "cache.sqlite";
/// The schema this build writes. Older schemas are upgraded when opened (in a transaction);
/// newer ones are refused.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a process waits for another one's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

const SCHEMA_V1: &str = "
CREATE TABLE cache_schema (
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    local_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    mailbox TEXT,
    pos_mailbox TEXT NOT NULL,
    request_message_id TEXT NOT NULL,
    response_message_id TEXT NOT NULL,
    request_file TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    answered_at INTEGER NOT NULL,
    checked_at INTEGER NOT NULL,
    request_sha256 TEXT NOT NULL,
    response_sha256 TEXT NOT NULL,
    requested_count INTEGER NOT NULL,
    returned_count INTEGER NOT NULL,
    requested BLOB NOT NULL,
    returned BLOB NOT NULL,
    imported_at INTEGER NOT NULL,
    source TEXT NOT NULL,
    UNIQUE (local_id, request_sha256, response_sha256)
);
CREATE INDEX batches_checked_at ON batches (checked_at);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    command TEXT NOT NULL,
    as_of INTEGER,
    max_age INTEGER,
    record TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// An open cache.
pub struct Cache {
    conn: Connection,
    path: PathBuf,
}

/// A batch as listed by status and used by views (without its sets).
#[derive(Debug, Clone, Serialize)]
pub struct BatchInfo {
    /// Its id in the cache.
    pub id: i64,
    /// The submission's LocalId.
    pub local_id: String,
    /// `int`, `live`, or the POS mailbox when it is neither.
    pub environment: String,
    /// When the POS checked it (RFC 3339): the earlier of sent and answered.
    pub checked_at: String,
    /// When MESH accepted the submission.
    pub sent_at: String,
    /// When MESH accepted the POS's answer.
    pub answered_at: String,
    /// Numbers requested.
    pub requested: u64,
    /// Numbers returned.
    pub returned: u64,
    /// The MESH message id of the submission.
    pub request_message_id: String,
    /// The MESH message id of the answer.
    pub response_message_id: String,
}

/// What the cache says at one time: the numbers that may be used, and those checked at all.
#[derive(Debug)]
pub struct View {
    /// Prefixes whose decisive check returned them (may be used).
    pub allowed: RoaringBitmap,
    /// Prefixes with a decisive check in the window (the rest are not checked).
    pub covered: RoaringBitmap,
    /// The batches in the window, oldest first.
    pub batches: Vec<BatchInfo>,
    /// The environment of those batches, if any.
    pub environment: Option<String>,
    /// The as-of time.
    pub as_of: i64,
    /// The maximum age.
    pub max_age: Age,
    /// For each batch in the window that decides some numbers (oldest first): its
    /// `checked_at` (milliseconds) and the prefixes it decides (requested by it and by no newer
    /// batch in the window). Together they make up `covered`.
    pub decided: Vec<(i64, RoaringBitmap)>,
}

impl View {
    /// The `checked_at` of the oldest batch that decides any number: the oldest result this
    /// view can apply.
    pub fn oldest_decided(&self) -> Option<i64> {
        self.decided.first().map(|(at, _)| *at)
    }

    /// Ids of the batches relied on.
    pub fn batch_ids(&self) -> Vec<i64> {
        self.batches.iter().map(|b| b.id).collect()
    }

    /// The oldest and newest `checked_at` of the batches relied on.
    pub fn checked_range(&self) -> Option<(String, String)> {
        Some((
            self.batches.first()?.checked_at.clone(),
            self.batches.last()?.checked_at.clone(),
        ))
    }
}

/// `ndop cache status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The database file.
    pub path: String,
    /// Its schema version.
    pub schema_version: i64,
    /// Size of the database file (and its WAL) in bytes.
    pub bytes: u64,
    /// The time the figures are for.
    pub as_of: String,
    /// The configured maximum age.
    pub max_age: String,
    /// Batches held (all of them, including any checked after the as-of time).
    pub batches: Vec<BatchInfo>,
    /// Distinct numbers checked at or before the as-of time.
    pub numbers_covered: u64,
    /// Numbers whose newest check at or before the as-of time is within each age.
    pub last_checked_within: Vec<(String, u64)>,
    /// Numbers whose newest check is within the maximum age (usable, opted out or not).
    pub fresh: u64,
    /// Numbers checked, but whose newest check is older than the maximum age: refresh these.
    pub stale: u64,
}

/// One audit record.
#[derive(Debug, Serialize)]
pub struct AuditRecord {
    /// Sequence number.
    pub id: i64,
    /// When (RFC 3339).
    pub time: String,
    /// The command (`import`, `filter`, `export`, `purge`, `refresh`).
    pub command: String,
    /// The as-of time used, if any.
    pub as_of: Option<String>,
    /// The maximum age used, if any.
    pub max_age: Option<String>,
    /// Counts, hashes, batch ids and overrides.
    pub record: serde_json::Value,
}

/// Test-only fault injection: when the environment variable `NDOP_TEST_CRASH_AT` names
/// `point`, the process says so on standard error and waits there (up to a minute) to be
/// killed, then aborts: a test kills it with SIGKILL in the middle of a write transaction and
/// checks that the cache is as it was. Point: `cache-import-before-commit` (every batch and the
/// audit record inserted, not committed). Never set it outside tests.
fn crash_point(point: &str) {
    if std::env::var_os("NDOP_TEST_CRASH_AT").is_some_and(|v| v == point) {
        eprintln!("ndop: test crash point {point} reached");
        std::thread::sleep(std::time::Duration::from_secs(60));
        std::process::abort();
    }
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    let hint = if text.contains("locked") || text.contains("busy") {
        " (another ndop process held the cache for too long; try again when it has finished)"
    } else if text.contains("not a database") || text.contains("malformed") {
        " (the file is not an intact ndop cache; restore it from a backup or start a new cache)"
    } else {
        ""
    };
    Error::Database {
        path: path.to_path_buf(),
        message: format!("{text}{hint}"),
    }
}

impl Cache {
    /// Opens the cache in `dir`, creating the directory (0700) and the database (0600) when
    /// `create` is true. A cache of an older schema is upgraded; a newer one is refused.
    pub fn open(dir: &Path, create: bool) -> Result<Cache> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            if !create {
                return Err(Error::Usage(format!(
                    "no cache in {} (no {DB_FILE}): create one with `ndop cache import WORK \
                     --cache {}` or `ndop run ... --cache {}`",
                    dir.display(),
                    dir.display(),
                    dir.display()
                )));
            }
            processor::files::create_private_dir(dir)?;
            // created here first so that it (and, after it, the WAL and shared-memory files
            // SQLite creates with the same mode) is private
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| processor::Error::write(&path, e))?;
        }
        let conn = Connection::open(&path).map_err(|e| db_err(&path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| db_err(&path, e))?;
        let mut cache = Cache { conn, path };
        cache.prepare()?;
        Ok(cache)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        db_err(&self.path, e)
    }

    /// Sets the connection up and creates, checks or upgrades the schema.
    fn prepare(&mut self) -> Result<()> {
        let path = self.path.clone();
        let e = |x: rusqlite::Error| db_err(&path, x);
        // must come before the first table; lets purge give space back
        self.conn
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(e)?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(e)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(self.err(format!("cannot use write-ahead logging (mode {mode})")));
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(e)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(e)?;
        if tables == 0 {
            tx.execute_batch(SCHEMA_V1).map_err(e)?;
            tx.execute(
                "INSERT INTO cache_schema (version, created_at, created_by) VALUES (?1, ?2, ?3)",
                params![
                    SCHEMA_VERSION,
                    now_ms(),
                    concat!("ndop ", env!("CARGO_PKG_VERSION"))
                ],
            )
            .map_err(e)?;
        } else {
            let version: Option<i64> = tx
                .query_row("SELECT version FROM cache_schema", [], |r| r.get(0))
                .optional()
                .map_err(|_| {
                    self_err(
                        &path,
                        "not an ndop cache (an SQLite database without ndop's tables); give \
                         --cache a directory of its own",
                    )
                })?;
            let version = version.unwrap_or(0);
            if version > SCHEMA_VERSION {
                return Err(Error::Version {
                    path: path.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                    hint: "it was written by a newer ndop: use that version (this one would \
                           misread it)",
                });
            }
            if version < 1 {
                return Err(Error::Version {
                    path: path.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                    hint: "this cache cannot be upgraded: start a new cache and import the work \
                           directories again",
                });
            }
            // upgrades from older versions go here, one step per version, in this transaction
        }
        tx.commit().map_err(e)?;
        Ok(())
    }

    /// The schema version of this cache.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT version FROM cache_schema", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Adds batches (one transaction with their audit record). Batches already present (same
    /// LocalId, request and answer) are left as they are. Returns the ids added and the
    /// number already present.
    pub fn add_batches(
        &mut self,
        batches: &[NewBatch],
        audit: serde_json::Value,
    ) -> Result<(Vec<i64>, u64)> {
        let path = self.path.clone();
        let e = |x: rusqlite::Error| db_err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let mut added = Vec::new();
        let mut present = 0;
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR IGNORE INTO batches (local_id, environment, mailbox, pos_mailbox,
                     request_message_id, response_message_id, request_file, sent_at,
                     answered_at, checked_at, request_sha256, response_sha256, requested_count,
                     returned_count, requested, returned, imported_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18)",
                )
                .map_err(e)?;
            let now = now_ms();
            for b in batches {
                let requested = serialize(&b.requested)?;
                let returned = serialize(&b.returned)?;
                let n = insert
                    .execute(params![
                        b.local_id,
                        b.environment,
                        b.mailbox,
                        b.pos_mailbox,
                        b.request_message_id,
                        b.response_message_id,
                        b.request_file,
                        b.sent_at,
                        b.answered_at,
                        b.checked_at,
                        b.request_sha256,
                        b.response_sha256,
                        b.requested.len() as i64,
                        b.returned.len() as i64,
                        requested,
                        returned,
                        now,
                        b.source,
                    ])
                    .map_err(e)?;
                if n == 1 {
                    added.push(tx.last_insert_rowid());
                } else {
                    present += 1;
                }
            }
        }
        let mut record = audit;
        record["batches_added"] = added.clone().into();
        record["batches_already_present"] = present.into();
        append_audit(&tx, "import", None, None, &record).map_err(e)?;
        crash_point("cache-import-before-commit");
        tx.commit().map_err(e)?;
        self.checkpoint();
        Ok((added, present))
    }

    /// Whether the cache holds the batch of this LocalId with these request and answer
    /// SHA-256 (the key an import is idempotent on).
    pub fn has_batch(
        &self,
        local_id: &str,
        request_sha256: &str,
        response_sha256: &str,
    ) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM batches WHERE local_id = ?1 AND request_sha256 = ?2
                 AND response_sha256 = ?3",
                params![local_id, request_sha256, response_sha256],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// Copies the write-ahead log into the database and truncates it, so that the files'
    /// size is the cache's real size and the sets are not kept twice on disk. Best effort:
    /// a reader still in the log only delays this to a later write.
    fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    /// Every batch (without its sets), oldest check first.
    pub fn batches(&self) -> Result<Vec<BatchInfo>> {
        self.batch_infos("1 = 1", params![])
    }

    fn batch_infos(&self, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<BatchInfo>> {
        let sql = format!(
            "SELECT id, local_id, environment, checked_at, sent_at, answered_at, requested_count,
             returned_count, request_message_id, response_message_id FROM batches WHERE {filter}
             ORDER BY checked_at, id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(BatchInfo {
                    id: r.get(0)?,
                    local_id: r.get(1)?,
                    environment: r.get(2)?,
                    checked_at: format_time(r.get(3)?),
                    sent_at: format_time(r.get(4)?),
                    answered_at: format_time(r.get(5)?),
                    requested: r.get::<_, i64>(6)? as u64,
                    returned: r.get::<_, i64>(7)? as u64,
                    request_message_id: r.get(8)?,
                    response_message_id: r.get(9)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Calls `f` with each batch checked in `[from, to]` (oldest first) and its sets
    /// (requested, returned), optionally of one environment only.
    fn for_each_set(
        &self,
        from: i64,
        to: i64,
        mut f: impl FnMut(&str, i64, RoaringBitmap, RoaringBitmap) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT environment, checked_at, requested, returned FROM batches
                 WHERE checked_at >= ?1 AND checked_at <= ?2 ORDER BY checked_at, id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query(params![from, to]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let env: String = row.get(0).map_err(|e| self.err(e))?;
            let at: i64 = row.get(1).map_err(|e| self.err(e))?;
            let requested = deserialize(&self.path, row.get_ref(2).map_err(|e| self.err(e))?)?;
            let returned = deserialize(&self.path, row.get_ref(3).map_err(|e| self.err(e))?)?;
            f(&env, at, requested, returned)?;
        }
        Ok(())
    }

    /// What the cache says at `as_of` with this maximum age: for each number, the newest batch
    /// checked in `[as_of - max_age, as_of]` that requested it decides. Results of two
    /// environments are never mixed: if the window holds both, `environment` must choose.
    pub fn view(&self, as_of: i64, max_age: Age, environment: Option<&str>) -> Result<View> {
        let from = as_of.saturating_sub(max_age);
        let mut batches = self.batch_infos(
            "checked_at >= ?1 AND checked_at <= ?2",
            params![from, as_of],
        )?;
        let mut envs: Vec<String> = batches.iter().map(|b| b.environment.clone()).collect();
        envs.sort();
        envs.dedup();
        let env = match environment {
            Some(e) => Some(e.to_ascii_lowercase()),
            None if envs.len() > 1 => {
                return Err(Error::Usage(format!(
                    "the cache holds results of more than one environment ({}) in this window; \
                     choose one with --environment (results of INT and LIVE are never mixed)",
                    envs.join(", ")
                )))
            }
            None => envs.pop(),
        };
        batches.retain(|b| Some(&b.environment) == env.as_ref());
        let mut allowed = RoaringBitmap::new();
        let mut covered = RoaringBitmap::new();
        let mut decided: Vec<(i64, RoaringBitmap)> = Vec::new();
        self.for_each_set(from, as_of, |e, at, requested, returned| {
            if Some(e) != env.as_deref() {
                return Ok(());
            }
            // newer batches come later and decide for the numbers they requested
            allowed -= &requested;
            allowed |= returned & &requested;
            for (_, d) in decided.iter_mut() {
                *d -= &requested;
            }
            decided.retain(|(_, d)| !d.is_empty());
            covered |= &requested;
            if !requested.is_empty() {
                decided.push((at, requested));
            }
            Ok(())
        })?;
        Ok(View {
            allowed,
            covered,
            batches,
            environment: env,
            as_of,
            max_age,
            decided,
        })
    }

    /// The figures of `ndop cache status` at `as_of`.
    pub fn status(&self, as_of: i64, max_age: Age) -> Result<Status> {
        const DAY: Age = 24 * 3600 * 1000;
        let batches = self.batches()?;
        let mut checked: Vec<(i64, RoaringBitmap)> = Vec::new();
        self.for_each_set(i64::MIN, as_of, |_, at, requested, _| {
            checked.push((at, requested));
            Ok(())
        })?;
        let covered_since = |since: i64| {
            let mut u = RoaringBitmap::new();
            for (t, s) in &checked {
                if *t >= since {
                    u |= s;
                }
            }
            u.len()
        };
        let all = covered_since(i64::MIN);
        let fresh = covered_since(as_of.saturating_sub(max_age));
        let within = [1, 3, 7, 14, 21]
            .iter()
            .map(|d| (format!("{d}d"), covered_since(as_of - d * DAY)))
            .collect();
        let bytes = [DB_FILE.to_string(), format!("{DB_FILE}-wal")]
            .iter()
            .filter_map(|n| std::fs::metadata(self.path.with_file_name(n)).ok())
            .map(|m| m.len())
            .sum();
        Ok(Status {
            path: self.path.display().to_string(),
            schema_version: self.schema_version()?,
            bytes,
            as_of: format_time(as_of),
            max_age: format_age(max_age),
            batches,
            numbers_covered: all,
            last_checked_within: within,
            fresh,
            stale: all - fresh,
        })
    }

    /// The prefixes whose newest check at or before `as_of` is older than `older_than` or that
    /// are in `population` but never checked: what a refresh of the stale part sends.
    pub fn stale_part(
        &self,
        population: &RoaringBitmap,
        as_of: i64,
        older_than: Age,
    ) -> Result<RoaringBitmap> {
        let mut fresh = RoaringBitmap::new();
        self.for_each_set(
            as_of.saturating_sub(older_than),
            as_of,
            |_, _, requested, _| {
                fresh |= requested;
                Ok(())
            },
        )?;
        Ok(population - fresh)
    }

    /// Deletes every batch checked before `before` (one transaction, audited) and gives the
    /// space back. Returns the ids deleted.
    pub fn purge(&mut self, before: i64, audit: serde_json::Value) -> Result<Vec<i64>> {
        let path = self.path.clone();
        let e = |x: rusqlite::Error| db_err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let ids: Vec<i64> = {
            let mut stmt = tx
                .prepare("SELECT id FROM batches WHERE checked_at < ?1 ORDER BY id")
                .map_err(e)?;
            let rows = stmt.query_map(params![before], |r| r.get(0)).map_err(e)?;
            rows.collect::<rusqlite::Result<_>>().map_err(e)?
        };
        tx.execute("DELETE FROM batches WHERE checked_at < ?1", params![before])
            .map_err(e)?;
        let mut record = audit;
        record["batches_deleted"] = ids.clone().into();
        append_audit(&tx, "purge", None, None, &record).map_err(e)?;
        tx.commit().map_err(e)?;
        self.conn
            .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(e)?;
        Ok(ids)
    }

    /// Appends an audit record (never give it an NHS number).
    pub fn audit(
        &mut self,
        command: &str,
        as_of: Option<i64>,
        max_age: Option<Age>,
        record: &serde_json::Value,
    ) -> Result<()> {
        let path = self.path.clone();
        let e = |x: rusqlite::Error| db_err(&path, x);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        append_audit(&tx, command, as_of, max_age, record).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Every audit record, oldest first.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, time, command, as_of, max_age, record FROM audit ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let record: String = r.get(5)?;
                Ok(AuditRecord {
                    id: r.get(0)?,
                    time: format_time(r.get(1)?),
                    command: r.get(2)?,
                    as_of: r.get::<_, Option<i64>>(3)?.map(format_time),
                    max_age: r.get::<_, Option<i64>>(4)?.map(format_age),
                    record: serde_json::from_str(&record).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

fn self_err(path: &Path, message: &str) -> Error {
    Error::Database {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn append_audit(
    conn: &Connection,
    command: &str,
    as_of: Option<i64>,
    max_age: Option<Age>,
    record: &serde_json::Value,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (time, command, as_of, max_age, record) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), command, as_of, max_age, record.to_string()],
    )?;
    Ok(())
}

fn serialize(b: &RoaringBitmap) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(b.serialized_size());
    b.serialize_into(&mut out)
        .map_err(|e| Error::Usage(format!("cannot serialise a set: {e}")))?;
    Ok(out)
}

fn deserialize(path: &Path, v: rusqlite::types::ValueRef<'_>) -> Result<RoaringBitmap> {
    let bytes = v
        .as_blob()
        .map_err(|e| self_err(path, &format!("a batch set is not a blob: {e}")))?;
    RoaringBitmap::deserialize_from(bytes).map_err(|e| {
        self_err(
            path,
            &format!("a batch set is corrupt ({e}); purge that batch or start a new cache"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(local_id: &str, at: i64, requested: &[u32], returned: &[u32]) -> NewBatch {
        NewBatch {
            local_id: local_id.into(),
            environment: "int".into(),
            mailbox: None,
            pos_mailbox: "X26OT154".into(),
            request_message_id: format!("REQ_{local_id}"),
            response_message_id: format!("RES_{local_id}"),
            request_file: format!("{local_id}.dat"),
            sent_at: at,
            answered_at: at,
            checked_at: at,
            request_sha256: format!("{local_id}-req"),
            response_sha256: format!("{local_id}-res"),
            requested: requested.iter().copied().collect(),
            returned: returned.iter().copied().collect(),
            source: "test".into(),
        }
    }

    fn count(c: &Cache, table: &str) -> i64 {
        c.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failed_import_leaves_the_cache_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(dir.path(), true).unwrap();
        c.add_batches(&[batch("a", 1000, &[1, 2], &[1])], serde_json::json!({}))
            .unwrap();
        // a write that fails half-way (the second batch of two)
        c.conn
            .execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON batches WHEN NEW.local_id = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
        let failed = c.add_batches(
            &[batch("b", 2000, &[3], &[3]), batch("boom", 3000, &[4], &[])],
            serde_json::json!({}),
        );
        assert!(failed.is_err());
        assert_eq!(count(&c, "batches"), 1);
        assert_eq!(count(&c, "audit"), 1);
        // the same content again is already present
        let (added, present) = c
            .add_batches(&[batch("a", 1000, &[1, 2], &[1])], serde_json::json!({}))
            .unwrap();
        assert!(added.is_empty());
        assert_eq!(present, 1);
    }

    #[test]
    fn the_audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(dir.path(), true).unwrap();
        c.audit("export", Some(1), Some(2), &serde_json::json!({"n": 1}))
            .unwrap();
        assert!(c
            .conn
            .execute("UPDATE audit SET command = 'x'", [])
            .is_err());
        assert!(c.conn.execute("DELETE FROM audit", []).is_err());
        assert_eq!(c.audit_records().unwrap().len(), 1);
    }

    #[test]
    fn newer_and_foreign_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Cache::open(dir.path(), true).unwrap();
            assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
            c.conn
                .execute("UPDATE cache_schema SET version = 99", [])
                .unwrap();
        }
        let e = Cache::open(dir.path(), false).err().unwrap().to_string();
        assert!(
            e.contains("schema version 99") && e.contains("newer ndop"),
            "{e}"
        );

        let other = tempfile::tempdir().unwrap();
        Connection::open(other.path().join(DB_FILE))
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let e = Cache::open(other.path(), false).err().unwrap().to_string();
        assert!(e.contains("not an ndop cache"), "{e}");

        let none = tempfile::tempdir().unwrap();
        let e = Cache::open(&none.path().join("c"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no cache in"), "{e}");
    }

    #[test]
    fn the_newest_check_in_the_window_decides() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cache::open(dir.path(), true).unwrap();
        let day = 86_400_000;
        c.add_batches(
            &[
                batch("old", 0, &[1, 2, 3], &[1, 2]),
                batch("new", 5 * day, &[2, 3, 4], &[3, 4]),
            ],
            serde_json::json!({}),
        )
        .unwrap();
        let v = c.view(6 * day, 7 * day, None).unwrap();
        assert_eq!(v.allowed.iter().collect::<Vec<_>>(), vec![1, 3, 4]);
        assert_eq!(v.covered.len(), 4);
        let decided: Vec<(i64, Vec<u32>)> = v
            .decided
            .iter()
            .map(|(at, d)| (*at, d.iter().collect()))
            .collect();
        assert_eq!(decided, vec![(0, vec![1]), (5 * day, vec![2, 3, 4])]);
        assert_eq!(v.oldest_decided(), Some(0));
        let v = c.view(6 * day, 3 * day, None).unwrap();
        assert_eq!(v.oldest_decided(), Some(5 * day));
        assert_eq!(v.allowed.iter().collect::<Vec<_>>(), vec![3, 4]);
        let v = c.view(4 * day, 7 * day, None).unwrap();
        assert_eq!(v.allowed.iter().collect::<Vec<_>>(), vec![1, 2]);
        assert!(c
            .view(6 * day, 7 * day, Some("live"))
            .unwrap()
            .covered
            .is_empty());
        c.add_batches(
            &[NewBatch {
                environment: "live".into(),
                ..batch("l", 5 * day, &[9], &[9])
            }],
            serde_json::json!({}),
        )
        .unwrap();
        let e = c.view(6 * day, 7 * day, None).unwrap_err().to_string();
        assert!(e.contains("--environment"), "{e}");
        let s = c.status(6 * day, 3 * day).unwrap();
        assert_eq!((s.numbers_covered, s.fresh, s.stale), (5, 4, 1));
    }
}
