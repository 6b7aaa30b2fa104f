//! `deflate_levels`: gzip size and CPU per backend and level on one real chunk (issue 15 item 5).
//!
//! `ndop send` gzips each MESH chunk (75 MiB of `.dat` by default) whole. This reads one chunk's
//! worth of a file (`--offset`, `--len`) and compresses it on one thread with:
//! - `zlib-rs`: flate2's `GzEncoder` with the zlib-rs backend, the buffer written in one
//!   `write_all` (what `mesh-client` did before libdeflate);
//! - `libdeflate`: [`mesh_client::gzip`], the function `ndop send` runs now.
//!
//! For each it prints the gzip bytes, their share of the input, and the median over `--runs` of
//! the thread's CPU seconds (`CLOCK_THREAD_CPUTIME_ID`: steady on a loaded machine, unlike wall
//! time, which is printed beside it with the load average), and the input MB per CPU second;
//! then what the output costs to DECODE, median CPU seconds over `--runs` with each of the two
//! decoders a receiver may use: flate2 with zlib-rs streaming (what mock-mesh's POS runs) and
//! libdeflate whole-buffer (`--no-decode` leaves them out). Every output is checked: decoded by
//! both back to the input (CRC-32 and ISIZE verified), and compressed twice to the same bytes.
//!
//! Example (from the workspace root; a chunk of the national prepared `.dat`):
//!
//!   cargo build --release -p ndop-benches --bin deflate_levels
//!   target/release/deflate_levels \
//!       --file bench-data/send-100000000-65000000.prepared/X26ABC1-281126-0001.dat

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use clap::Parser;

/// Gzip bytes and CPU seconds per backend and level on one chunk of a file.
#[derive(Debug, Parser)]
#[command(after_help = "Example:\n  deflate_levels --file \
    bench-data/send-100000000-65000000.prepared/X26ABC1-281126-0001.dat --runs 3")]
struct Args {
    /// File to take the chunk from (a prepared `.dat`).
    #[arg(long)]
    file: PathBuf,
    /// Where the chunk starts in the file, in bytes.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Chunk length in bytes (default: MESH's 75 MiB chunk); shorter if the file ends first.
    #[arg(long, default_value_t = mesh_client::DEFAULT_CHUNK_SIZE)]
    len: u64,
    /// Compressions per backend and level (the median is printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// zlib-rs levels (flate2), comma-separated; empty for none.
    #[arg(long, default_value = "0,1,3,6")]
    zlib: String,
    /// libdeflate levels (mesh_client::gzip), comma-separated; empty for none.
    #[arg(long, default_value = "0,1,3,6,9,12")]
    libdeflate: String,
    /// Leave out the decode columns (each output is still decoded once, to check it).
    #[arg(long)]
    no_decode: bool,
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    ZlibRs,
    Libdeflate,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::ZlibRs => "zlib-rs",
            Backend::Libdeflate => "libdeflate",
        }
    }

    fn gzip(self, data: &[u8], level: u32) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Backend::ZlibRs => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2),
                    flate2::Compression::new(level),
                );
                encoder.write_all(data)?;
                encoder.finish()?
            }
            Backend::Libdeflate => mesh_client::gzip(data, level)?,
        })
    }
}

/// CPU seconds this thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn levels(list: &str) -> anyhow::Result<Vec<u32>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("level {s:?} is not a number"))
        })
        .collect()
}

/// Decodes a gzip member with flate2 (zlib-rs), streaming, as mock-mesh's POS does.
fn gunzip_zlib_rs(gz: &[u8], len: usize) -> anyhow::Result<Vec<u8>> {
    let mut back = Vec::with_capacity(len);
    flate2::read::GzDecoder::new(gz).read_to_end(&mut back)?;
    Ok(back)
}

/// Decodes a gzip member with libdeflate, whole (the output's size known).
fn gunzip_libdeflate(gz: &[u8], len: usize) -> anyhow::Result<Vec<u8>> {
    let mut back = vec![0u8; len];
    let n = libdeflater::Decompressor::new().gzip_decompress(gz, &mut back)?;
    back.truncate(n);
    Ok(back)
}

/// The median thread CPU seconds of `runs` decodes by `decode`, each checked against `data`.
fn decode_cpu(
    runs: usize,
    data: &[u8],
    name: &str,
    decode: impl Fn() -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<f64> {
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let c = thread_cpu_seconds();
        let back = decode().with_context(|| format!("{name}: gunzip"))?;
        cpu.push(thread_cpu_seconds() - c);
        ensure!(back == data, "{name}: round trip differs");
    }
    Ok(median(cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.runs > 0, "--runs must be at least 1");
    let mut file =
        File::open(&args.file).with_context(|| format!("open {}", args.file.display()))?;
    file.seek(SeekFrom::Start(args.offset))?;
    let mut data = Vec::new();
    file.take(args.len).read_to_end(&mut data)?;
    if data.is_empty() {
        bail!(
            "no bytes at offset {} of {}",
            args.offset,
            args.file.display()
        );
    }
    let mb = data.len() as f64 / 1e6;
    println!(
        "{} bytes from {} at offset {}, {} runs each, load average {}",
        data.len(),
        args.file.display(),
        args.offset,
        args.runs,
        load_average()
    );
    println!();
    println!(
        "| backend | level | gzip bytes | of the input | CPU s (median) | MB/CPU s | wall s (median) \
         | decode zlib-rs CPU s | decode libdeflate CPU s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let plan = [
        (Backend::ZlibRs, levels(&args.zlib)?),
        (Backend::Libdeflate, levels(&args.libdeflate)?),
    ];
    for (backend, list) in plan {
        for level in list {
            let mut cpu = Vec::new();
            let mut wall = Vec::new();
            let mut first: Option<Vec<u8>> = None;
            for _ in 0..args.runs {
                let (c, w) = (thread_cpu_seconds(), Instant::now());
                let gz = backend.gzip(&data, level)?;
                cpu.push(thread_cpu_seconds() - c);
                wall.push(w.elapsed().as_secs_f64());
                match &first {
                    None => first = Some(gz),
                    Some(f) => ensure!(
                        *f == gz,
                        "{} level {level}: two compressions differ",
                        backend.name()
                    ),
                }
            }
            let gz = first.expect("runs > 0");
            let name = format!("{} level {level}", backend.name());
            let decode_runs = if args.no_decode { 1 } else { args.runs };
            let zlib_rs = decode_cpu(decode_runs, &data, &name, || {
                gunzip_zlib_rs(&gz, data.len())
            })?;
            let libdeflate = decode_cpu(decode_runs, &data, &name, || {
                gunzip_libdeflate(&gz, data.len())
            })?;
            let (zlib_rs, libdeflate) = if args.no_decode {
                ("-".to_string(), "-".to_string())
            } else {
                (format!("{zlib_rs:.3}"), format!("{libdeflate:.3}"))
            };
            let cpu = median(cpu);
            println!(
                "| {} | {level} | {} | {:.1} % | {cpu:.3} | {:.0} | {:.3} | {zlib_rs} | {libdeflate} |",
                backend.name(),
                gz.len(),
                100.0 * gz.len() as f64 / data.len() as f64,
                mb / cpu,
                median(wall),
            );
        }
    }
    println!();
    println!("load average at the end {}", load_average());
    Ok(())
}
