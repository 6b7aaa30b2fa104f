//! `consent_export`: how long `ndop reconcile --consent-out` takes to write the Consent
//! resources of a national-scale result (docs/PERFORMANCE.md, section "Consent export"): by
//! default 3 million opted-out numbers (about 5 % of 65 million), each round a fresh file,
//! synced and renamed like the real command (`processor::consent::write_consents`).
//!
//! Example (from the workspace root):
//!
//!   cargo build --release -p ndop-benches --bin consent_export
//!   target/release/consent_export --rounds 3

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use processor::consent::{
    write_consents, ConsentFormat, ConsentOptions, ConsentState, FhirVersion,
};
use processor::seen::NumberSet;

/// Times the Consent export of N opted-out numbers.
#[derive(Debug, Parser)]
struct Args {
    /// Opted-out numbers: the first N valid NHS numbers from 9000000000 up (made in memory;
    /// the 999 test range holds fewer than a million).
    #[arg(long, default_value_t = 3_000_000)]
    numbers: u64,
    /// Rounds per format; medians are over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the output files (each removed after its round).
    #[arg(long, default_value = "target/consent-export")]
    dir: PathBuf,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.dir)?;
    let requested = NumberSet::new();
    let mut prefix = 900_000_000u32;
    let mut made = 0;
    while made < a.numbers {
        if let Some(c) = processor::nhs::check_digit_of_prefix(prefix) {
            requested.insert(u64::from(prefix) * 10 + u64::from(c));
            made += 1;
        }
        prefix += 1;
    }
    let returned = NumberSet::new();
    let checked_at = chrono::DateTime::parse_from_rfc3339("2025-02-27T14:10:16Z")?;
    println!("| output | median s | rounds (s) | size | throughput | Consents/s |");
    println!("|---|---|---|---|---|---|");
    for (fhir, format, name) in [
        (FhirVersion::R4, ConsentFormat::Ndjson, "R4 NDJSON"),
        (FhirVersion::R4, ConsentFormat::Bundle, "R4 Bundle"),
        (FhirVersion::Stu3, ConsentFormat::Ndjson, "STU3 NDJSON"),
    ] {
        let opts = ConsentOptions {
            fhir,
            format,
            state: ConsentState::OptedOut,
            checked_at,
        };
        let mut secs = Vec::new();
        let mut bytes = 0;
        for _ in 0..a.rounds {
            let path = a.dir.join("consents.out");
            let _ = std::fs::remove_file(&path);
            let started = Instant::now();
            let s = write_consents(&path, &requested, &returned, None, &opts)?;
            secs.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(s.active == a.numbers, "wrote {} Consents", s.active);
            bytes = std::fs::metadata(&path)?.len();
            std::fs::remove_file(&path)?;
        }
        let rounds: Vec<String> = secs.iter().map(|s| format!("{s:.2}")).collect();
        let m = median(&mut secs);
        println!(
            "| {name} | {m:.2} | {} | {:.2} GB | {:.0} MB/s | {:.2} M/s |",
            rounds.join(", "),
            bytes as f64 / 1e9,
            bytes as f64 / 1e6 / m,
            a.numbers as f64 / 1e6 / m
        );
    }
    Ok(())
}
