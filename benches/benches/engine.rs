//! Criterion benchmarks of the processor engine (the whole-binary comparison with `cat`, `wc` and
//! `sort -u` on a 100M-line file is in docs/PERFORMANCE.md, "Engine").
//!
//! * `engine/validate/{SHAPE}/{mmap,read}`: `processor::validate::validate` of a generated
//!   ~50 MB `.dat` extract (3.9M CRLF lines), no `invalid.csv`; Throughput::Bytes = input size.
//!   Shapes (the files of tools/bench-engine.sh, smaller): `national` (65% of the lines distinct
//!   numbers over England's prefix ranges, 0.5% invalid: `ndop_benches::national`, bench data
//!   only), `worst` (every valid line a new number over the whole range, 0.5% invalid) and `999`
//!   (`processor::generate`: the 999 test range, 10% duplicates, 0.1% invalid). Pick shapes
//!   with `NDOP_BENCH_SHAPES=national,999` (default: all three).
//! * `engine/prepare/{SHAPE}/{mmap,read}`: `processor::prepare::prepare` of the same files into
//!   a fresh directory (`.dat` + `.ctl`, `invalid.csv`, `summary.json`).
//! * `engine/classify/*`: `processor::nhs::classify` of one field (bare, 3-3-4 spaced, invalid),
//!   and `engine/classify_lines`: every line of a 1 MB slice of the file through `classify`
//!   (Throughput::Bytes = slice size).
//!
//! Each file is generated once into a tempdir (seed 1).
//! Run quickly: `cargo bench -p ndop-benches --bench engine -- --warm-up-time 1 --measurement-time 3`

// criterion_group! defines an undocumented `pub fn`; a bench target has no API to document.
#![allow(missing_docs)]

use std::fs::File;
use std::hint::black_box;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ndop_benches::national;
use processor::dat::{DatOptions, LineEnding};
use processor::generate::{generate, GenFormat, GenerateOptions};
use processor::nhs::{classify, Field, Rules};
use processor::pos::PosEnv;
use processor::prepare::{prepare, PrepareOptions};
use processor::scan::ScanOptions;
use processor::validate::validate;
use processor::IoMode;

/// 13-byte CRLF `.dat` lines: about 50 MB.
const LINES: u64 = 3_900_000;

struct Data {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: u64,
}

/// The bench file of one shape (see the module docs).
fn data(shape: &str) -> Data {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("extract.dat");
    let mut out = BufWriter::new(File::create(&path).expect("create"));
    let truth = if shape == "999" {
        let opts = GenerateOptions {
            lines: LINES,
            seed: 1,
            format: GenFormat::Dat,
            line_ending: LineEnding::Crlf,
            ..GenerateOptions::default()
        };
        generate(&mut out, &opts).expect("generate")
    } else {
        let opts = national::shape(shape, LINES).expect("shape");
        national::generate_national(&mut out, &opts).expect("generate")
    };
    drop(out);
    assert_eq!(truth.lines, LINES);
    let bytes = std::fs::metadata(&path).expect("stat").len();
    Data {
        _dir: dir,
        path,
        bytes,
    }
}

fn scan(io: IoMode) -> ScanOptions {
    ScanOptions {
        io,
        ..ScanOptions::default()
    }
}

fn dat_options(dir: &Path) -> DatOptions {
    DatOptions {
        dir: dir.to_path_buf(),
        mailbox: "X26ABC1".to_string(),
        date: NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
        seq: 1,
        env: PosEnv::Int,
        tag: None,
        line_ending: LineEnding::Crlf,
        max_bytes: 20_000_000_000,
        max_records: None,
    }
}

const MODES: [(&str, IoMode); 2] = [("mmap", IoMode::Mmap), ("read", IoMode::Read)];

fn engine(c: &mut Criterion) {
    let shapes = std::env::var("NDOP_BENCH_SHAPES").unwrap_or("national,worst,999".into());
    for shape in shapes.split(',') {
        let d = data(shape);
        let inputs = vec![d.path.clone()];

        let mut g = c.benchmark_group("engine/validate");
        g.throughput(Throughput::Bytes(d.bytes));
        g.sample_size(10);
        for (name, io) in MODES {
            let opts = scan(io);
            g.bench_function(format!("{shape}/{name}"), |b| {
                b.iter(|| {
                    let v = validate(&inputs, &opts, None, &mut |_| {}).expect("validate");
                    assert_eq!(v.counts.lines, LINES);
                    black_box(v.counts.unique)
                })
            });
        }
        g.finish();

        let mut g = c.benchmark_group("engine/prepare");
        g.throughput(Throughput::Bytes(d.bytes));
        g.sample_size(10);
        for (name, io) in MODES {
            g.bench_function(format!("{shape}/{name}"), |b| {
                b.iter_batched(
                    || {
                        let out = tempfile::tempdir().expect("out dir");
                        let opts = PrepareOptions {
                            scan: scan(io),
                            dat: dat_options(out.path()),
                        };
                        (out, opts)
                    },
                    |(out, opts)| {
                        let s = prepare(&inputs, &opts, &mut |_| {}).expect("prepare");
                        assert_eq!(s.counts.lines, LINES);
                        (out, s.files.len())
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
}

fn classify_fields(c: &mut Criterion) {
    let lenient = Rules::default();
    let strict = Rules {
        strict: true,
        reject_placeholders: false,
    };
    let mut g = c.benchmark_group("engine/classify");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, &[u8], Rules); 4] = [
        ("bare", b"9434765919", lenient),
        ("bare_strict", b"9434765919", strict),
        ("spaced", b" 943 476 5919 ", lenient),
        ("check_digit_mismatch", b"9434765918", lenient),
    ];
    for (name, field, rules) in cases {
        g.bench_function(name, |b| b.iter(|| classify(black_box(field), rules)));
    }
    g.finish();

    // one classify per line, as the engine calls it: line ending and `.dat` comma removed first
    let mut buf = Vec::new();
    let opts = GenerateOptions {
        lines: 1_000_000 / 13,
        seed: 2,
        ..GenerateOptions::default()
    };
    generate(&mut buf, &opts).expect("generate");
    let mut g = c.benchmark_group("engine/classify_lines");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("dat_crlf_1MB", |b| {
        b.iter(|| {
            let mut valid = 0u64;
            for line in black_box(&buf[..]).split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let field = line.strip_suffix(b",").unwrap_or(line);
                valid += matches!(classify(field, lenient), Field::Valid { .. }) as u64;
            }
            valid
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = engine, classify_fields
}
criterion_main!(benches);
