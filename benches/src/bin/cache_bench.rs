//! `cache_bench`: the results cache at national scale (issue 11, "Performance"): a work
//! directory holding one POS batch of `--numbers` distinct valid numbers (65M by default) and
//! its cleaned reply, then the wall-clock time of `cache import` (reading both files, the sets,
//! one SQLite transaction), of a second, idempotent import, of the as-of view, and of the
//! Parquet and CSV exports, and the size of the cache and of the Parquet file. Medians of
//! `--rounds` rounds, each on a fresh cache. Then `filter --cache` against `filter --allowed
//! FILE` on the same extract (the batch's request file, one number a line): the allow-list
//! read from the cleaned reply, or taken from the cache's as-of view (issue 11: within 1.2x).
//! Prints JSON.
//!
//! Example (from the workspace root):
//!
//!   cargo build --release -p ndop-benches --bin cache_bench
//!   target/release/cache_bench --numbers 65000000 --shape england --rounds 3
//!   target/release/cache_bench --numbers 65000000 --shape uniform --rounds 3

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use pos_cache::{Cache, ExportFormat, ExportList, NumberType};
use pos_client::journal::{Entry, Reply, ReplyKind, Submission};
use processor::generate::Rng;
use processor::nhs::{check_digit_of_prefix, write_digits};
use sha2::{Digest, Sha256};

#[derive(Parser)]
struct Args {
    /// Distinct numbers in the batch.
    #[arg(long, default_value_t = 65_000_000)]
    numbers: u64,
    /// Share of them the POS does not return.
    #[arg(long, default_value_t = 0.03)]
    opt_out: f64,
    /// Where to write the work directory and the caches (kept between runs).
    #[arg(long, default_value = "bench-data/cache-bench")]
    dir: PathBuf,
    /// Rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the numbers lie: `england` (prefixes 400M..500M and 600M..800M, the ranges
    /// England's numbers are issued from: the national shape) or `uniform` (100M..10^9, the
    /// worst case for the roaring containers).
    #[arg(long, default_value = "england")]
    shape: String,
}

/// The prefix ranges of a shape.
fn ranges(shape: &str) -> anyhow::Result<Vec<std::ops::Range<u32>>> {
    match shape {
        "england" => Ok(vec![400_000_000..500_000_000, 600_000_000..800_000_000]),
        "uniform" => Ok(std::iter::once(100_000_000..1_000_000_000).collect()),
        s => anyhow::bail!("unknown --shape {s}: england or uniform"),
    }
}

/// Draws valid numbers uniformly from the prefix ranges, each with the probability that gives
/// about `n`.
fn write_batch(
    work: &Path,
    n: u64,
    opt_out: f64,
    ranges: &[std::ops::Range<u32>],
) -> anyhow::Result<()> {
    let prepared = work.join("prepared");
    let replies = work.join("replies");
    std::fs::create_dir_all(&prepared)?;
    std::fs::create_dir_all(&replies)?;
    let mut req = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(prepared.join("BENCH-1.dat"))?,
    );
    let mut res = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(replies.join("BENCH-1.cleaned.dat"))?,
    );
    let (mut hreq, mut hres) = (Sha256::new(), Sha256::new());
    let (mut requested, mut returned, mut rbytes, mut sbytes) = (0u64, 0u64, 0u64, 0u64);
    // about 10 in 11 prefixes have a check digit
    let span: u64 = ranges.iter().map(|r| (r.end - r.start) as u64).sum();
    let p = n as f64 / (span as f64 * 10.0 / 11.0);
    let mut rng = Rng(1);
    let mut d = [0u8; 10];
    for prefix in ranges.iter().flat_map(|r| r.clone()) {
        let Some(c) = check_digit_of_prefix(prefix) else {
            continue;
        };
        if requested >= n || rng.unit() >= p {
            continue;
        }
        write_digits(prefix as u64 * 10 + c as u64, &mut d);
        let mut line = [0u8; 13];
        line[..10].copy_from_slice(&d);
        line[10..].copy_from_slice(b",\r\n");
        req.write_all(&line)?;
        hreq.update(line);
        requested += 1;
        rbytes += 13;
        if rng.unit() >= opt_out {
            let mut out = [0u8; 12];
            out[..10].copy_from_slice(&d);
            out[10..].copy_from_slice(b"\r\n");
            res.write_all(&out)?;
            hres.update(out);
            returned += 1;
            sbytes += 12;
        }
    }
    req.flush()?;
    res.flush()?;
    let now = chrono::Utc::now();
    let time = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let entries = [
        Entry::Submitted(Submission {
            local_id: "BENCH-1".into(),
            message_id: format!("{}_000001", now.format("%Y%m%d%H%M%S%6f")),
            file: "BENCH-1.dat".into(),
            sha256: hex::encode(hreq.finalize()),
            records: requested,
            bytes: rbytes,
            subject: "BENCH-1".into(),
            to: "X26OT154".into(),
            workflow_id: "SPINE_NTT_UPHOLDING".into(),
            time: time.clone(),
            adopted: false,
        }),
        Entry::Reply(Reply {
            local_id: "BENCH-1".into(),
            message_id: format!("{}_000002", now.format("%Y%m%d%H%M%S%6f")),
            reply: ReplyKind::Cleaned,
            file: "replies/BENCH-1.cleaned.dat".into(),
            sha256: hex::encode(hres.finalize()),
            bytes: sbytes,
            records: Some(returned),
            job_status: None,
            status_code: None,
            status_event: None,
            status_description: None,
            status_success: None,
            time,
        }),
    ];
    let mut journal = String::new();
    for e in &entries {
        journal += &serde_json::to_string(e)?;
        journal.push('\n');
    }
    std::fs::write(work.join("journal.jsonl"), journal)?;
    eprintln!("wrote a batch of {requested} numbers, {returned} returned");
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let work = a.dir.join(format!("work-{}-{}", a.shape, a.numbers));
    if !work.join("journal.jsonl").exists() {
        write_batch(&work, a.numbers, a.opt_out, &ranges(&a.shape)?)
            .context("writing the batch")?;
    }
    let scan = processor::scan::ScanOptions::default();
    let (mut import, mut again, mut view_t, mut parquet_t, mut csv_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut db_bytes, mut parquet_bytes, mut exported) = (0, 0, 0);
    let (mut filter_allowed_t, mut filter_cache_t) = (Vec::new(), Vec::new());
    // within filter --cache: the two sets made from the view's bitmaps
    let mut sets_t = Vec::new();
    let extract = work.join("prepared").join("BENCH-1.dat");
    let reply = work.join("replies").join("BENCH-1.cleaned.dat");
    let filtered = a.dir.join("filtered.dat");
    for round in 0..a.rounds {
        let cache_dir = a.dir.join(format!("cache-{round}"));
        let _ = std::fs::remove_dir_all(&cache_dir);
        let t = Instant::now();
        let (batches, _) = pos_cache::read_work_dir(&work, &scan)?;
        let mut cache = Cache::open(&cache_dir, true)?;
        cache.add_batches(&batches, serde_json::json!({}))?;
        import.push(t.elapsed().as_secs_f64());
        drop(batches);
        // as `ndop cache import` does it: batches already held are not read
        let t = Instant::now();
        let (batches, _, present) =
            pos_cache::read_new_batches(&work, &scan, &mut |id, req, res| {
                cache.has_batch(id, req, res)
            })?;
        let (added, _) = cache.add_batches(&batches, serde_json::json!({}))?;
        assert!(added.is_empty() && present == 1);
        again.push(t.elapsed().as_secs_f64());
        drop(batches);
        db_bytes = std::fs::metadata(cache.path())?.len()
            + std::fs::metadata(cache.path().with_file_name("cache.sqlite-wal"))
                .map_or(0, |m| m.len());
        let t = Instant::now();
        let view = cache.view(
            chrono::Utc::now().timestamp_millis(),
            pos_cache::DEFAULT_MAX_AGE,
            None,
        )?;
        view_t.push(t.elapsed().as_secs_f64());
        for (format, times, name) in [
            (ExportFormat::Parquet, &mut parquet_t, "allow.parquet"),
            (ExportFormat::Csv, &mut csv_t, "allow.csv"),
        ] {
            let out = a.dir.join(name);
            let _ = std::fs::remove_file(&out);
            let t = Instant::now();
            let s =
                pos_cache::export(&view, ExportList::Allowed, format, NumberType::String, &out)?;
            times.push(t.elapsed().as_secs_f64());
            exported = s.numbers;
            if format == ExportFormat::Parquet {
                parquet_bytes = std::fs::metadata(&out)?.len();
            }
        }
        drop(view);
        // filter --allowed FILE and filter --cache, as `ndop filter` runs them
        let mut kept = Vec::new();
        for (times, from_cache) in [(&mut filter_allowed_t, false), (&mut filter_cache_t, true)] {
            for f in [
                filtered.clone(),
                processor::filter::default_rejects(&filtered),
            ] {
                let _ = std::fs::remove_file(f);
            }
            let t = Instant::now();
            let (allowed, requested) = if from_cache {
                let view = cache.view(
                    chrono::Utc::now().timestamp_millis(),
                    pos_cache::DEFAULT_MAX_AGE,
                    None,
                )?;
                let sets = Instant::now();
                let allowed = pos_cache::number_set_of(&view.allowed);
                let requested = pos_cache::number_set_of(&view.covered);
                sets_t.push(sets.elapsed().as_secs_f64());
                (allowed, Some(requested))
            } else {
                let set = processor::reconcile::read_numbers(
                    std::slice::from_ref(&reply),
                    "result",
                    &scan,
                    &mut |_| {},
                )?
                .set;
                (set, None)
            };
            let s = processor::filter::filter(
                &extract,
                &allowed,
                requested.as_ref(),
                &scan,
                &filtered,
                &mut |_| {},
            )?;
            times.push(t.elapsed().as_secs_f64());
            kept.push(s.counts.kept);
        }
        // the two must agree, or the timing compares different work
        anyhow::ensure!(
            kept[0] == kept[1],
            "filter --cache kept {} rows, --allowed {}",
            kept[1],
            kept[0]
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "numbers": a.numbers,
            "shape": a.shape,
            "exported": exported,
            "rounds": a.rounds,
            "import_seconds_median": median(import),
            "idempotent_import_seconds_median": median(again),
            "view_seconds_median": median(view_t),
            "export_parquet_seconds_median": median(parquet_t),
            "export_csv_seconds_median": median(csv_t),
            "filter_allowed_file_seconds_median": median(filter_allowed_t.clone()),
            "filter_cache_seconds_median": median(filter_cache_t.clone()),
            "filter_cache_sets_seconds_median": median(sets_t),
            "filter_cache_over_allowed": median(filter_cache_t) / median(filter_allowed_t),
            "cache_bytes": db_bytes,
            "parquet_bytes": parquet_bytes,
        }))?
    );
    Ok(())
}
