//! `ndop demo`: the whole pipeline on a sample extract against an in-process mock MESH.

use crate::exit;
use crate::pipeline::{Outcome, Pipeline};
use crate::report::thousands;
use crate::sample::{int_test_patients, write_sample};
use crate::settings::{MeshSettings, Secret};
use anyhow::{bail, Context};
use clap::Args;
use pos_client::CollectOptions;
use processor::scan::{Format, ScanOptions};
use std::path::PathBuf;
use std::time::Duration;

/// Run the whole pipeline on a sample extract against an in-process mock MESH.
///
/// The mock listens on a loopback port: no Spine access, certificates or mailbox needed. The sample holds the
/// published INT test patients (10 of whom have an opt-out), synthetic patients from the 999
/// test range with several rows each (one in ten of them given an opt-out in the mock POS) and a few invalid
/// lines. Prints what happened and where the files are, and writes the record of the check,
/// WORK/report.html (see `ndop report`).
///
/// Examples:
///   ndop demo
///   ndop demo --work /tmp/ndop-demo --patients 100000
///   ndop demo --mesh-folder   (through MESH client folders, with the stand-in client)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct DemoArgs {
    /// Work directory (must be new or empty; default: a fresh temporary directory, kept).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,

    /// Synthetic 999-range patients in the sample, each with 1 to 4 rows.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub patients: u32,

    /// Go through MESH client folders (WORK/mesh-client/X26ABC1/{IN,OUT,SENT,FAILED,TEMP}),
    /// synced with the mock by the stand-in client `mesh-folder-client` (a test double of NHS
    /// England's Java MESH client), instead of calling the MESH API.
    #[arg(long)]
    pub mesh_folder: bool,
}

/// Runs `ndop demo`.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let work = match args.work {
        Some(w) => {
            processor::files::ensure_empty_dir(&w)?;
            w
        }
        None => tempfile::Builder::new()
            .prefix("ndop-demo-")
            .tempdir()
            .context("cannot create a temporary directory")?
            .keep(),
    };
    let extract = work.join("extract.csv");
    let (rows, synthetic_opt_outs) = write_sample(&extract, args.patients)?;
    eprintln!(
        "ndop demo: sample extract {} ({} rows: the 20 INT test patients twice each, {} synthetic \
         patients with 1-4 rows each, 3 invalid rows)",
        extract.display(),
        thousands(rows),
        thousands(args.patients as u64)
    );

    // The mock MESH runs on its own threads so that the pipeline can block on it.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the mock MESH runtime")?;
    let mut config = mock_mesh::Config::default().with_store_dir(work.join("mesh-store"));
    config.pos.optout_numbers = synthetic_opt_outs.clone();
    let mesh = server_rt
        .block_on(mock_mesh::MockMesh::start(config))
        .context("cannot start the mock MESH")?;
    eprintln!(
        "ndop demo: mock MESH listening on {} (store {})",
        mesh.base_url(),
        work.join("mesh-store").display()
    );
    let stand_in = if args.mesh_folder {
        let root = work.join("mesh-client").join("X26ABC1");
        for name in ["IN", "OUT", "SENT", "FAILED", "TEMP"] {
            std::fs::create_dir_all(root.join(name))
                .with_context(|| format!("cannot create {}", root.join(name).display()))?;
        }
        let client = mesh_client::MeshClient::new(
            mesh_client::ClientConfig::default()
                .with_url(mesh.base_url())
                .with_mailbox("X26ABC1", "password")
                .with_shared_key("TestKey"),
        )?;
        let stand_in = mesh_folder_client::StandIn {
            root: root.clone(),
            client,
            poll: Duration::from_millis(200),
            min_age: Duration::from_secs(1),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = server_rt.spawn(async move {
            stand_in
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        eprintln!(
            "ndop demo: through the MESH client folders in {} (stand-in client polling every 200 ms)",
            root.display()
        );
        Some((root, stop, task))
    } else {
        None
    };
    let settings = MeshSettings {
        env: Some(mesh.base_url()),
        mailbox: Some("X26ABC1".into()),
        password: Some(Secret::new("password")),
        shared_key: Some(Secret::new("TestKey")),
        ..MeshSettings::default()
    }
    .over(MeshSettings::defaults());
    let pipeline = Pipeline {
        extract: extract.clone(),
        scan: ScanOptions {
            format: Format::Csv(processor::csv::Column::Name("nhs_number".into())),
            ..ScanOptions::default()
        },
        work: work.clone(),
        out: work.join("cleared.csv"),
        settings,
        tag: Some("demo".into()),
        max_records: Some(400),
        poll: CollectOptions {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(60),
        },
        folders: match &stand_in {
            Some((root, _, _)) => Some(pos_client::folder::Folders::open(root)?),
            None => None,
        },
        consent: None,
    };
    let outcome = pipeline.run();
    if let Some((_, stop, task)) = stand_in {
        let _ = stop.send(());
        let _ = server_rt.block_on(task);
    }
    server_rt.block_on(mesh.stop());
    let report = crate::evidence::report_run(&work, "ndop demo");
    let Outcome::Done(done) = outcome? else {
        bail!("the mock POS did not answer within a minute");
    };
    let (summary, reconciled) = *done;

    // Check the answer: exactly the test patients the published table marks, and the synthetic
    // patients the mock POS was told about, are gone.
    let gone = |n: u64| reconciled.requested.contains(n) && !reconciled.returned.contains(n);
    let mut removed = Vec::new();
    let mut agrees = true;
    for (n, opted_out) in int_test_patients() {
        agrees &= gone(n) == opted_out;
        if gone(n) {
            removed.push(n.to_string());
        }
    }
    agrees &= synthetic_opt_outs.iter().all(|&n| gone(n));
    agrees &= summary.reconcile.opted_out == (removed.len() + synthetic_opt_outs.len()) as u64;
    let f = &summary.filter.counts;
    println!("ndop demo: done.");
    println!(
        "  sent        {} unique NHS numbers in {} file(s) over MESH to the POS mailbox X26OT154{}",
        thousands(summary.prepare.unique),
        summary.prepare.files.len(),
        if args.mesh_folder {
            " (through the MESH client folders)"
        } else {
            ""
        }
    );
    println!(
        "  opted out   {} patients ({} of the 20 INT test patients: {})",
        thousands(summary.reconcile.opted_out),
        removed.len(),
        removed.join(" ")
    );
    println!(
        "  expected    the published table and the mock's synthetic opt-outs agree: {}",
        if agrees { "yes" } else { "NO" }
    );
    println!(
        "  extract     {} rows: kept {}, dropped {} opted out, {} invalid",
        thousands(f.rows),
        thousands(f.kept),
        thousands(f.opted_out),
        thousands(f.invalid)
    );
    println!("  files       {}", work.display());
    println!("                extract.csv            the sample extract");
    println!("                prepared/              the .dat + .ctl files sent, invalid.csv, summary.json");
    println!("                replies/               the POS replies as received");
    println!("                reconciled/            opted-out.txt, summary.json");
    println!("                cleared.csv            the extract without opted-out patients");
    println!(
        "                cleared.csv.rejects.csv  where each invalid or unparseable record is"
    );
    println!("                run.json               everything above as JSON");
    if let Some(report) = &report {
        println!("  report      {}", report.display());
        println!("                the record of this check, to read, print and file");
    }
    Ok(if agrees { exit::OK } else { exit::POS })
}
