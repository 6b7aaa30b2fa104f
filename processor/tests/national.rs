//! National-shaped output: several million distinct numbers spread over the whole prefix range,
//! far more than the 999 range holds, so the set does not fit in the cache and the `.dat`
//! writer's parallel slices all carry lines. The numbers are made in a tempdir by the test and
//! never leave it (committed fixtures stay in the 999 range).
//!
//! `prepare` at 1, 2 and 8 threads must write the same bytes, split at the same records, and
//! those bytes must be the sorted distinct numbers the test put in.

use processor::dat::{DatOptions, LineEnding};
use processor::generate::Rng;
use processor::nhs::{check_digit_of_prefix, write_digits};
use processor::pos::PosEnv;
use processor::prepare::{prepare, PrepareOptions};
use processor::scan::ScanOptions;
use sha2::{Digest, Sha256};
use std::io::Write;

/// Distinct numbers drawn (a few thousand collide, and are duplicates).
const DRAWN: usize = 2_000_000;
/// Records per `.dat`: odd, so the files end inside the writer's slices.
const PER_FILE: u64 = 999_983;

#[test]
fn prepare_writes_the_same_bytes_at_1_2_and_8_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("national.dat");
    let mut rng = Rng(15);
    let mut prefixes: Vec<u32> = Vec::with_capacity(DRAWN + 2);
    // Both ends of the range (0 has check digit 0; 999999999 has check digit 9).
    prefixes.extend([0, 999_999_999]);
    while prefixes.len() < DRAWN {
        let p = (rng.next_u64() % 1_000_000_000) as u32;
        if check_digit_of_prefix(p).is_some() {
            prefixes.push(p);
        }
    }
    let number = |p: u32| p as u64 * 10 + check_digit_of_prefix(p).unwrap() as u64;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let mut d = [0u8; 10];
    for (i, &p) in prefixes.iter().enumerate() {
        write_digits(number(p), &mut d);
        file.write_all(&d).unwrap();
        file.write_all(b"\n").unwrap();
        // Every tenth number again, and a line the engine must quarantine.
        if i % 10 == 0 {
            file.write_all(&d).unwrap();
            file.write_all(b"\nnot a number\n").unwrap();
        }
    }
    drop(file);
    let mut sorted = prefixes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let mut expected = Vec::with_capacity(sorted.len() * 13);
    for &p in &sorted {
        write_digits(number(p), &mut d);
        expected.extend_from_slice(&d);
        expected.extend_from_slice(b",\r\n");
    }

    let mut first: Option<(Vec<Vec<u8>>, Vec<String>)> = None;
    for threads in [1, 2, 8] {
        let out = dir.path().join(format!("out{threads}"));
        let opts = PrepareOptions {
            scan: ScanOptions {
                threads,
                ..ScanOptions::default()
            },
            dat: DatOptions {
                dir: out.clone(),
                mailbox: "X26ABC1".into(),
                date: chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
                seq: 1,
                env: PosEnv::Int,
                tag: None,
                line_ending: LineEnding::Crlf,
                max_bytes: 20_000_000_000,
                max_records: Some(PER_FILE),
            },
        };
        let s = prepare(std::slice::from_ref(&input), &opts, &mut |_| {}).unwrap();
        assert_eq!(s.threads, threads);
        assert_eq!(s.counts.unique, sorted.len() as u64);
        assert_eq!(s.counts.invalid, DRAWN.div_ceil(10) as u64);
        assert_eq!(
            s.counts.duplicates,
            (DRAWN + DRAWN.div_ceil(10) - sorted.len()) as u64
        );
        assert_eq!(s.files.len(), sorted.len().div_ceil(PER_FILE as usize));
        let mut bytes = Vec::new();
        for (k, f) in s.files.iter().enumerate() {
            assert_eq!(f.name, format!("X26ABC1-231126-{:04}.dat", k + 1));
            let b = std::fs::read(out.join(&f.name)).unwrap();
            assert_eq!(b.len() as u64, f.bytes);
            assert_eq!(f.records * 13, f.bytes);
            assert_eq!(f.sha256, hex::encode(Sha256::digest(&b)));
            if k + 1 < s.files.len() {
                assert_eq!(f.records, PER_FILE);
            }
            assert!(out.join(&f.ctl).exists());
            bytes.push(b);
        }
        assert!(
            bytes.concat() == expected,
            "{threads} threads: wrong .dat bytes"
        );
        let hashes: Vec<String> = s.files.iter().map(|f| f.sha256.clone()).collect();
        match &first {
            None => first = Some((bytes, hashes)),
            Some((b, h)) => {
                assert!(*b == bytes, "{threads} threads: bytes differ from 1 thread");
                assert_eq!(*h, hashes);
            }
        }
    }
}
