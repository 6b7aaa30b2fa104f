//! `ndop reconcile`: requested minus returned is who opted out.

use crate::args::EngineArgs;
use crate::report::{print_json, thousands};
use crate::{exit, progress};
use anyhow::Context;
use clap::{Args, ValueEnum};
use processor::consent::{
    write_consents, ConsentFormat, ConsentOptions, ConsentState, ConsentSummary, FhirVersion,
};
use processor::reconcile::{read_numbers, reconcile, Reconciled, OPTED_OUT_FILE, UNEXPECTED_FILE};
use processor::scan::ScanOptions;
use std::path::{Path, PathBuf};

/// Work out who opted out: requested minus returned.
///
/// The opted-out patients are the numbers in the request files that are not in the POS result
/// files. Writes OUT/opted-out.txt, OUT/unexpected.txt (numbers returned that were never
/// requested: there should be none) and OUT/summary.json, and prints the summary as JSON.
///
/// An empty result file means every requested patient opted out. A result that is the POS's
/// rejection ("The file contains one or more invalid NHS Numbers.") or holds anything but NHS
/// numbers is an error (exit 6), as is any unexpected number.
///
/// With --consent-out it also writes the result as FHIR Consent resources for a data
/// exchange's FHIR store: `active` for each opted-out patient (plus, with --consent-state full,
/// `inactive` for every patient returned; with --previous, `inactive` for patients opted out in
/// that earlier reconciliation and returned now), one deterministic id per patient, `dateTime`
/// the time the POS answered. R4 UK Core by default, STU3 with --fhir stu3.
///
/// Examples:
///   ndop reconcile --request outbox/*.dat --response inbox/*.dat --out reconciled
///   ndop reconcile --request sent.dat --response returned.dat --out r | jq .opted_out
///   ndop reconcile --request sent.dat --response returned.dat --out r2 \
///     --consent-out consents.ndjson --previous r1
///   ndop reconcile --request sent.dat --response returned.dat --out r \
///     --consent-out bundle.json --consent-format bundle --consent-state full --fhir stu3
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct ReconcileArgs {
    /// The .dat files sent to the POS.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub request: Vec<PathBuf>,

    /// The files the POS returned (may be empty files).
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub response: Vec<PathBuf>,

    /// Output directory; must be new or empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub consent: ConsentArgs,
}

/// `--consent-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    /// One Consent per line.
    Ndjson,
    /// A transaction Bundle of `PUT Consent/{id}` entries.
    Bundle,
}

/// `--fhir`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FhirArg {
    /// R4 UK Core Consent (what data exchanges store).
    R4,
    /// STU3, the NDOP FHIR API's element layout.
    Stu3,
}

/// `--consent-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateArg {
    /// `active` for each opted-out patient only.
    OptedOut,
    /// Also `inactive` for every patient sent and returned.
    Full,
}

/// The POS result as FHIR Consent resources (shared by `reconcile` and `run`).
#[derive(Debug, Args)]
pub(crate) struct ConsentArgs {
    /// Also write the result as FHIR Consent resources to FILE (must not exist; mode 0600).
    #[arg(long, value_name = "FILE")]
    pub consent_out: Option<PathBuf>,

    /// ndjson (one Consent per line) or bundle (a transaction Bundle of PUT Consent/{id}).
    #[arg(long, value_enum, default_value = "ndjson", requires = "consent_out")]
    pub consent_format: FormatArg,

    /// FHIR version of the Consents: r4 (R4 UK Core) or stu3.
    #[arg(long, value_enum, default_value = "r4", requires = "consent_out")]
    pub fhir: FhirArg,

    /// opted-out (active Consents only) or full (also inactive for every patient returned).
    #[arg(
        long,
        value_enum,
        default_value = "opted-out",
        requires = "consent_out"
    )]
    pub consent_state: StateArg,

    /// An earlier reconciliation's output directory: patients opted out there and returned
    /// now get an inactive Consent (their opt-out was withdrawn).
    #[arg(long, value_name = "RECONCILED_DIR", requires = "consent_out")]
    pub previous: Option<PathBuf>,

    /// When the POS answered (RFC 3339), written as every Consent's dateTime (default: the
    /// newest modification time of the result files).
    #[arg(long, value_name = "TIME", requires = "consent_out")]
    pub checked_at: Option<String>,
}

impl ConsentArgs {
    /// The writer's options these flags ask for, dated `checked_at`.
    pub(crate) fn options(
        &self,
        checked_at: chrono::DateTime<chrono::FixedOffset>,
    ) -> ConsentOptions {
        ConsentOptions {
            fhir: match self.fhir {
                FhirArg::R4 => FhirVersion::R4,
                FhirArg::Stu3 => FhirVersion::Stu3,
            },
            format: match self.consent_format {
                FormatArg::Ndjson => ConsentFormat::Ndjson,
                FormatArg::Bundle => ConsentFormat::Bundle,
            },
            state: match self.consent_state {
                StateArg::OptedOut => ConsentState::OptedOut,
                StateArg::Full => ConsentState::Full,
            },
            checked_at,
        }
    }

    /// Writes the Consents if --consent-out was given; `responses` date them.
    pub(crate) fn export(
        &self,
        reconciled: &Reconciled,
        responses: &[PathBuf],
        scan: &ScanOptions,
    ) -> anyhow::Result<Option<ConsentSummary>> {
        let Some(path) = &self.consent_out else {
            return Ok(None);
        };
        if self.consent_state == StateArg::Full && self.previous.is_some() {
            anyhow::bail!(processor::Error::Usage(
                "--consent-state full already writes every returned patient; drop --previous"
                    .into()
            ));
        }
        let checked_at = match &self.checked_at {
            Some(t) => chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
                processor::Error::Usage(format!(
                    "--checked-at {t:?} is not an RFC 3339 time ({e}); e.g. 2025-02-27T14:10:16Z"
                ))
            })?,
            None => newest_mtime(responses)?,
        };
        let previous = match &self.previous {
            Some(dir) => {
                let file = dir.join(OPTED_OUT_FILE);
                if !file.is_file() {
                    anyhow::bail!(processor::Error::Usage(format!(
                        "--previous {}: no {OPTED_OUT_FILE} there; name the output directory of \
                         an earlier ndop reconcile",
                        dir.display()
                    )));
                }
                Some(read_numbers(&[file], "previous", scan, &mut |_| {})?.set)
            }
            None => None,
        };
        let opts = self.options(checked_at);
        let s = write_consents(
            path,
            &reconciled.requested,
            &reconciled.returned,
            previous.as_ref(),
            &opts,
        )?;
        eprintln!(
            "ndop: wrote {} active and {} inactive Consent resources ({:?}, {:?}, dateTime {}) to {}",
            thousands(s.active),
            thousands(s.inactive),
            s.fhir,
            s.format,
            s.date_time,
            path.display()
        );
        Ok(Some(s))
    }
}

/// The newest modification time of `files` (when the POS answers were stored).
fn newest_mtime(files: &[PathBuf]) -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
    let mut newest = None;
    for f in files.iter().filter(|f| f.as_path() != Path::new("-")) {
        let t = std::fs::metadata(f)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading the modification time of {}", f.display()))?;
        newest = newest.max(Some(t));
    }
    let t = newest.ok_or_else(|| {
        processor::Error::Usage("no result files to date the Consents: pass --checked-at".into())
    })?;
    Ok(chrono::DateTime::<chrono::Utc>::from(t).fixed_offset())
}

/// Runs `ndop reconcile`.
pub(crate) fn run(args: ReconcileArgs) -> anyhow::Result<u8> {
    let total = processor::scan::total_len(&args.request)
        .zip(processor::scan::total_len(&args.response))
        .map(|(a, b)| a + b);
    let bar = progress::bytes("reconcile", total);
    let r = reconcile(
        &args.request,
        &args.response,
        &args.engine.scan_options(),
        &args.out,
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let s = &r.summary;
    print_json(s)?;
    eprintln!(
        "ndop reconcile: {} requested, {} returned, {} opted out ({}) in {:.2} s",
        thousands(s.requested),
        thousands(s.returned),
        thousands(s.opted_out),
        args.out.join(OPTED_OUT_FILE).display(),
        s.elapsed_seconds
    );
    if s.unexpected > 0 {
        eprintln!(
            "ndop reconcile: WARNING: {} numbers were returned that were never requested \
             (listed in {}); the request and result files do not belong together",
            thousands(s.unexpected),
            args.out.join(UNEXPECTED_FILE).display()
        );
        if args.consent.consent_out.is_some() {
            eprintln!("ndop reconcile: no Consent resources written: the result does not match the request");
        }
        return Ok(exit::POS);
    }
    args.consent
        .export(&r, &args.response, &args.engine.scan_options())?;
    Ok(exit::OK)
}
