//! `csv_extract`: a realistic 8-column CSV extract for the CSV-reader benchmark (issue 8,
//! "Performance"; tools/bench-csv.sh), with its exact truth.
//!
//! Columns (with a header row):
//! `record_id,nhs_number,event_date,provider,code,description,notes,amount`.
//!
//! - `nhs_number`: only the 999 test range (never issued to a patient), drawn with repeats from
//!   a pool of patients (many rows per patient, some patients much more frequent than others),
//!   plus about 0.1% invalid values made on purpose (a digit lost, a letter, a wrong check
//!   digit, a prefix with no possible check digit, Excel's `9.99E+09`), counted by kind.
//! - `description` and `notes`: free text, quoted when needed (RFC 4180), with commas, doubled
//!   quotes and some UTF-8; `notes` is empty in most rows. One record in a thousand
//!   (`--break-every`) has a quoted line break in `notes`, CRLF or LF at random; half of those
//!   continue on the next physical line with `…,NNNNNNNNNN, …`, a valid pool number in the
//!   second comma-separated position, which a line-based reader takes for a row.
//! - Records end with CRLF; `--bom` starts the file with a UTF-8 byte-order mark.
//!
//! The same seed and options give the same bytes. The truth (JSON) goes to stderr or
//! `--truth FILE`. With `--allowed-out FILE` it also writes the POS-style result for the extract:
//! every distinct valid number that did not opt out (about `--opt-out` of them did), one
//! `NNNNNNNNNN,` line each, CRLF; the truth then says how many rows `ndop filter` must keep.
//!
//! Example (from the workspace root):
//!
//!   cargo build --release -p ndop-benches --bin csv_extract
//!   target/release/csv_extract --rows 20000000 --seed 1 --out bench-data/csv-20000000.csv \
//!       --allowed-out bench-data/csv-20000000.allowed.dat \
//!       --truth bench-data/csv-20000000.truth.json

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use processor::generate::Rng;
use processor::nhs::{check_digit_of_prefix, write_digits};
use serde_json::json;

/// Writes a realistic 8-column CSV extract (999-range NHS numbers, quoted free text, quoted line
/// breaks, CRLF) and prints its truth as JSON.
#[derive(Debug, Parser)]
struct Args {
    /// Data records (the header is extra).
    #[arg(long, default_value_t = 20_000_000)]
    rows: u64,
    /// Seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the extract here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the truth JSON here instead of standard error.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Start with a UTF-8 byte-order mark (as Excel's "CSV UTF-8" does).
    #[arg(long)]
    bom: bool,
    /// Distinct patients in the pool (default: rows / 20, at most 900,000; the 999 range has
    /// about 909,000 valid numbers).
    #[arg(long)]
    patients: Option<u64>,
    /// Share of records whose NHS number is invalid.
    #[arg(long, default_value_t = 0.001)]
    invalid: f64,
    /// One record in this many has a quoted line break in `notes` (0: none).
    #[arg(long, default_value_t = 1000)]
    break_every: u64,
    /// Write the allowed numbers (distinct valid numbers seen, minus the opted-out ones) as a
    /// POS result `.dat`: `NNNNNNNNNN,` and CRLF per line.
    #[arg(long, value_name = "FILE")]
    allowed_out: Option<PathBuf>,
    /// Share of patients who opted out (left out of --allowed-out).
    #[arg(long, default_value_t = 0.02)]
    opt_out: f64,
}

/// ODS-style provider codes.
const PROVIDERS: &[&str] = &[
    "RR8", "RTH", "RJ1", "RYJ", "R0A", "RAL", "RGT", "RHQ", "RM1", "RWE", "RXN", "RBZ", "Y02568",
    "M85063", "F84012", "B86019", "J82132", "P81040", "RX1", "RCF",
];

/// Diagnosis / procedure codes (ICD-10, OPCS-4, SNOMED CT).
const CODES: &[&str] = &[
    "I10",
    "E11.9",
    "J45.9",
    "F32.1",
    "M54.5",
    "N39.0",
    "K21.9",
    "I48.0",
    "J44.1",
    "E78.0",
    "Z51.1",
    "R07.4",
    "W19",
    "H81.1",
    "L03.1",
    "C50.9",
    "K35.8",
    "S72.0",
    "X40.1",
    "W37.1",
    "38341003",
    "44054006",
    "195967001",
    "35489007",
    "22298006",
    "73211009",
];

/// Descriptions, already escaped for a quoted field (`"` doubled); quoted when they hold a
/// comma or a quote.
const DESCRIPTIONS: &[&str] = &[
    "Essential hypertension",
    "Type 2 diabetes mellitus, without complications",
    "Asthma, unspecified",
    "Depressive episode, moderate",
    "Low back pain",
    "Urinary tract infection, site not specified",
    "Gastro-oesophageal reflux disease without oesophagitis",
    "Atrial fibrillation, paroxysmal",
    "COPD with acute exacerbation, unspecified",
    "Pure hypercholesterolaemia",
    "Chemotherapy session for neoplasm",
    "Chest pain on breathing",
    "Unspecified fall",
    "Benign paroxysmal vertigo",
    "Cellulitis of finger and toe",
    "Malignant neoplasm of breast, unspecified",
    "Acute appendicitis, other and unspecified",
    "Fracture of neck of femur",
    "Primary total hip replacement using cement",
    "Primary total knee replacement",
    "Review: \"\"stable\"\", continue",
    "Referral to \"\"Talking Therapies\"\"",
    "Follow-up, 6 weeks",
    "Medication review",
    "Blood pressure 142/91 mmHg",
    "HbA1c 53 mmol/mol",
    "Smoking cessation advice given",
    "Did not attend",
    "Telephone consultation, GP",
    "Home visit, district nurse",
];

/// Note fragments, already escaped for a quoted field.
const NOTES: &[&str] = &[
    "Seen in clinic.",
    "Pt reports improvement, no new symptoms.",
    "Advised to return if worse",
    "BP re-checked, 138/88",
    "Discussed options with patient and daughter, agreed plan.",
    "Said \"\"feeling much better\"\" today",
    "Bloods: FBC, U&E, LFT, HbA1c",
    "Referred to physio; waiting list ~12 wks",
    "Allergy: penicillin (rash)",
    "Temp 37.8°C, sats 96% on air",
    "Metformin 500 mg b.d., titrate",
    "Carer present, consent obtained",
    "Letter to GP, cc patient",
    "Zoë to book follow-up, café leaflet given",
    "Wound clean, dry and intact",
    "No safeguarding concerns",
    "Asked for \"\"second opinion\"\", noted",
    "DNA x2, text reminder sent",
    "Interpreter used (Polish)",
    "Plan: repeat in 3/12, sooner if needed",
];

/// Text after a quoted line break that a line-based reader takes for a row: the second
/// comma-separated field is a valid pool number.
const TAIL_BEFORE: &[&str] = &["cf. earlier entry", "linked record", "see also", "dup of"];
const TAIL_AFTER: &[&str] = &[" reviewed", " same episode", " secret", " see letter"];
/// Plain continuations after a quoted line break.
const CONTINUATIONS: &[&str] = &[
    "Plan:",
    "- repeat bloods, 2/52",
    "Addendum: results normal",
    "2nd line of address, \"\"Flat 3\"\"",
    "Safety-netting advice given",
];

/// Kinds of invalid NHS numbers, in the order reported.
const INVALID_KINDS: [&str; 5] = [
    "wrong_length",
    "non_digit",
    "check_digit_mismatch",
    "no_check_digit_possible",
    "scientific_notation",
];

/// One patient of the pool: 16 bytes, so a row costs one cache miss at most.
struct Patient {
    digits: [u8; 10],
    opted_out: bool,
    rows: u32,
}

const RANGE: u64 = 1_000_000;
const STRIDE: u64 = 387_419; // odd and not a multiple of 5: a permutation of 0..10^6
const FLUSH_AT: usize = 1 << 20;

/// Appends the decimal digits of `n`.
#[inline]
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends `n` as exactly two digits.
#[inline]
fn push_2(buf: &mut Vec<u8>, n: u64) {
    buf.push(b'0' + (n / 10) as u8);
    buf.push(b'0' + (n % 10) as u8);
}

/// A table of already-escaped text as fields: quoted when they hold a comma or a quote (made
/// once, at start-up).
fn as_fields(table: &[&str]) -> Vec<Vec<u8>> {
    table
        .iter()
        .map(|s| {
            let b = s.as_bytes();
            if b.iter().any(|&c| c == b',' || c == b'"') {
                [&b"\""[..], b, b"\""].concat()
            } else {
                b.to_vec()
            }
        })
        .collect()
}

/// The ten digits of the valid 999-range number with this six-digit suffix of its prefix.
fn valid_digits(p: u32) -> Option<[u8; 10]> {
    let prefix = 999_000_000 + p;
    let check = check_digit_of_prefix(prefix)?;
    let mut d = [0u8; 10];
    write_digits(prefix as u64 * 10 + check as u64, &mut d);
    Some(d)
}

/// Writes one invalid NHS number of a random kind; returns the kind's index.
/// One of `items`, uniformly.
#[inline]
fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

fn push_invalid(buf: &mut Vec<u8>, rng: &mut Rng) -> usize {
    let d = loop {
        if let Some(d) = valid_digits(rng.below(RANGE) as u32) {
            break d;
        }
    };
    let kind = rng.below(INVALID_KINDS.len() as u64) as usize;
    match kind {
        0 => buf.extend_from_slice(&d[..9]), // the check digit lost
        1 => {
            let mut e = d;
            e[3 + rng.below(7) as usize] = b'A' + rng.below(26) as u8;
            buf.extend_from_slice(&e);
        }
        2 => {
            let mut e = d;
            e[9] = b'0' + ((e[9] - b'0' + 1 + rng.below(9) as u8) % 10);
            buf.extend_from_slice(&e);
        }
        3 => {
            let p = loop {
                let p = 999_000_000 + rng.below(RANGE) as u32;
                if check_digit_of_prefix(p).is_none() {
                    break p;
                }
            };
            let mut e = [0u8; 10];
            write_digits(p as u64 * 10 + rng.below(10), &mut e);
            buf.extend_from_slice(&e);
        }
        _ => {
            // What Excel shows for a ten-digit number in a General cell: 9.99E+09.
            buf.extend_from_slice(b"9.99E+09");
        }
    }
    kind
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.invalid) || !(0.0..=1.0).contains(&args.opt_out) {
        bail!("--invalid and --opt-out are shares between 0 and 1");
    }
    let started = Instant::now();
    let mut rng = Rng(args.seed);
    let mut opt_rng = Rng(args.seed ^ 0x5EED_0F0F_A11C_E5ED);

    // The patient pool: the first P valid prefixes of a seeded permutation of the 999 range.
    let patients = args
        .patients
        .unwrap_or((args.rows / 20).clamp(1, 900_000))
        .max(1);
    if patients > 909_000 {
        bail!("--patients: the 999 range has about 909,000 valid numbers");
    }
    let offset = rng.below(RANGE);
    let mut pool: Vec<Patient> = Vec::with_capacity(patients as usize);
    let mut j = 0u64;
    while (pool.len() as u64) < patients {
        if let Some(digits) = valid_digits(((j * STRIDE + offset) % RANGE) as u32) {
            pool.push(Patient {
                digits,
                opted_out: false,
                rows: 0,
            });
        }
        j += 1;
    }
    for p in &mut pool {
        p.opted_out = opt_rng.unit() < args.opt_out;
    }
    // A tenth of the patients ("frequent attenders") get half of the rows.
    let frequent = (patients / 10).max(1);

    let descriptions = as_fields(DESCRIPTIONS);
    let notes = as_fields(NOTES);

    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
    let mut bytes = 0u64;
    if args.bom {
        buf.extend_from_slice(b"\xEF\xBB\xBF");
    }
    buf.extend_from_slice(
        b"record_id,nhs_number,event_date,provider,code,description,notes,amount\r\n",
    );
    // What `filter` must write: the BOM and header, then the kept records byte for byte.
    let mut kept_bytes = buf.len() as u64;

    let mut valid = 0u64;
    let mut invalid_by_kind = [0u64; INVALID_KINDS.len()];
    let mut kept_rows = 0u64;
    let mut opted_out_rows = 0u64;
    let mut with_breaks = 0u64;
    let mut embedded_crlf = 0u64;
    let mut embedded_lf = 0u64;
    let mut lookalike_tails = 0u64;

    for i in 0..args.rows {
        let start = buf.len();
        let mut kept = false;
        push_u64(&mut buf, 1_000_000 + i);
        buf.push(b',');
        if rng.unit() < args.invalid {
            invalid_by_kind[push_invalid(&mut buf, &mut rng)] += 1;
        } else {
            let k = if rng.below(2) == 0 {
                rng.below(frequent)
            } else {
                rng.below(patients)
            } as usize;
            let p = &mut pool[k];
            buf.extend_from_slice(&p.digits);
            p.rows += 1;
            valid += 1;
            if p.opted_out {
                opted_out_rows += 1;
            } else {
                kept_rows += 1;
                kept = true;
            }
        }
        // event_date
        let r = rng.next_u64();
        buf.extend_from_slice(b",20");
        push_2(&mut buf, 19 + (r & 7) % 7);
        buf.push(b'-');
        push_2(&mut buf, 1 + ((r >> 8) & 0xFFFF) % 12);
        buf.push(b'-');
        push_2(&mut buf, 1 + ((r >> 24) & 0xFFFF) % 28);
        buf.push(b',');
        buf.extend_from_slice(pick(&mut rng, PROVIDERS).as_bytes());
        buf.push(b',');
        buf.extend_from_slice(pick(&mut rng, CODES).as_bytes());
        buf.push(b',');
        buf.extend_from_slice(&descriptions[rng.below(descriptions.len() as u64) as usize]);
        buf.push(b',');
        // notes: a line break one record in `break_every`, else empty in most rows
        let has_break = args.break_every > 0 && rng.below(args.break_every) == 0;
        if has_break {
            with_breaks += 1;
            buf.push(b'"');
            buf.extend_from_slice(pick(&mut rng, NOTES).as_bytes());
            // one line break, sometimes two; CRLF or LF each
            let breaks = 1 + (rng.below(4) == 0) as u64;
            for _ in 0..breaks {
                if rng.below(2) == 0 {
                    buf.extend_from_slice(b"\r\n");
                    embedded_crlf += 1;
                } else {
                    buf.push(b'\n');
                    embedded_lf += 1;
                }
                if rng.below(2) == 0 {
                    lookalike_tails += 1;
                    buf.extend_from_slice(pick(&mut rng, TAIL_BEFORE).as_bytes());
                    buf.push(b',');
                    buf.extend_from_slice(&pool[rng.below(patients) as usize].digits);
                    buf.push(b',');
                    buf.extend_from_slice(pick(&mut rng, TAIL_AFTER).as_bytes());
                } else {
                    buf.extend_from_slice(pick(&mut rng, CONTINUATIONS).as_bytes());
                }
            }
            buf.push(b'"');
        } else {
            match rng.below(8) {
                0..=4 => {}
                5 | 6 => buf.extend_from_slice(&notes[rng.below(notes.len() as u64) as usize]),
                _ => {
                    let (a, b) = (pick(&mut rng, NOTES), pick(&mut rng, NOTES));
                    buf.push(b'"');
                    buf.extend_from_slice(a.as_bytes());
                    buf.extend_from_slice(b", ");
                    buf.extend_from_slice(b.as_bytes());
                    buf.push(b'"');
                }
            }
        }
        buf.push(b',');
        // amount: pounds and pence, empty in a tenth of rows
        let a = rng.below(1_000_000);
        if a >= 100_000 {
            push_u64(&mut buf, a / 100);
            buf.push(b'.');
            push_2(&mut buf, a % 100);
        }
        buf.extend_from_slice(b"\r\n");
        if kept {
            kept_bytes += (buf.len() - start) as u64;
        }
        if buf.len() >= FLUSH_AT {
            out.write_all(&buf)?;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    bytes += buf.len() as u64;
    out.flush()?;
    drop(out);

    let distinct = pool.iter().filter(|p| p.rows > 0).count() as u64;
    let distinct_opted_out = pool.iter().filter(|p| p.rows > 0 && p.opted_out).count() as u64;
    if let Some(p) = &args.allowed_out {
        let mut f = io::BufWriter::with_capacity(
            1 << 20,
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        );
        for p in &pool {
            if p.rows > 0 && !p.opted_out {
                f.write_all(&p.digits)?;
                f.write_all(b",\r\n")?;
            }
        }
        f.flush()?;
    }
    let invalid: u64 = invalid_by_kind.iter().sum();
    let secs = started.elapsed().as_secs_f64();
    let truth = json!({
        "rows": args.rows,
        "valid": valid,
        "invalid": invalid,
        "invalid_by_kind": INVALID_KINDS.iter().zip(invalid_by_kind)
            .map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "distinct_numbers": distinct,
        "records_with_line_breaks": with_breaks,
        "embedded_crlf": embedded_crlf,
        "embedded_lf": embedded_lf,
        "lookalike_tails": lookalike_tails,
        "physical_lines": args.rows + 1 + embedded_crlf + embedded_lf,
        "bytes": bytes,
        "bom": args.bom,
        "header": true,
        "columns": ["record_id", "nhs_number", "event_date", "provider", "code",
                    "description", "notes", "amount"],
        "seed": args.seed,
        "patients": patients,
        "opt_out_share": args.opt_out,
        "distinct_opted_out": distinct_opted_out,
        "distinct_allowed": distinct - distinct_opted_out,
        "kept_rows": kept_rows,
        "opted_out_rows": opted_out_rows,
        "kept_bytes": kept_bytes,
    });
    let text = serde_json::to_string_pretty(&truth)? + "\n";
    match &args.truth {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            // Timing only here: the truth itself stays the same for the same seed.
            eprintln!(
                "csv_extract: {} records, {} bytes in {:.2} s ({:.0} MB/s)",
                args.rows,
                bytes,
                secs,
                bytes as f64 / 1e6 / secs
            );
        }
        None => io::stderr().write_all(text.as_bytes())?,
    }
    Ok(())
}
