//! `ndop report` on real runs: the report of an `ndop run` against a real mock-mesh holds no
//! NHS number, and the page of `ndop demo` renders in a real browser (headless Chromium: a
//! screenshot of the expected size that is not blank, the verdict in the DOM, no console
//! error, an A4 PDF). Where Chromium is not installed the browser test says so on standard
//! error and skips; with `NDOP_REQUIRE_CHROMIUM=1` (set by `.ci/run`, which installs it) it
//! fails instead.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use util::{generate_csv, ndop, run_in, start_mesh};

/// Every run of exactly ten digits in `text` not part of a longer run of letters or digits,
/// and every `ddd ddd dddd` / `ddd-ddd-dddd`, that passes Modulus 11.
fn nhs_numbers_in(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    for i in 0..b.len() {
        if i > 0 && b[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        for len in [10, 12] {
            let Some(cand) = b.get(i..i + len) else {
                continue;
            };
            if b.get(i + len).is_some_and(u8::is_ascii_alphanumeric) {
                continue;
            }
            let digits: Vec<u8> = if len == 10 {
                cand.to_vec()
            } else if (cand[3] == b' ' || cand[3] == b'-') && cand[7] == cand[3] {
                [&cand[0..3], &cand[4..7], &cand[8..12]].concat()
            } else {
                continue;
            };
            if processor::nhs::is_valid(&digits) {
                found.push(String::from_utf8_lossy(cand).into_owned());
            }
        }
    }
    found
}

#[test]
fn the_check_for_nhs_numbers_finds_them() {
    // the test below is only as good as this
    let found =
        nhs_numbers_in("a 9434765919, 943 476 5919 and x9434765919 9434765918 <9990000018>");
    assert_eq!(found, ["9434765919", "943 476 5919", "9990000018"]);
}

/// The valid NHS numbers in column 2 of a CSV extract.
fn numbers_of(extract: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(extract).unwrap();
    let mut seen = HashSet::new();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .filter(|n| processor::nhs::is_valid(n.as_bytes()))
        .filter(|n| seen.insert(n.to_string()))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_report_of_an_extract_full_of_nhs_numbers_holds_none() {
    let dir = tempfile::tempdir().unwrap();
    let generated = dir.path().join("generated.csv");
    generate_csv(&generated, "800", "14");
    let numbers = numbers_of(&generated);
    assert!(numbers.len() > 500, "{} numbers", numbers.len());
    // the extract's own name holds one of its numbers, as a careless export might
    let extract = dir.path().join(format!("extract {}.csv", numbers[0]));
    std::fs::rename(&generated, &extract).unwrap();
    let mut config = mock_mesh::Config::default();
    config.pos.optout_numbers = numbers
        .iter()
        .step_by(9)
        .map(|n| n.parse().unwrap())
        .collect();
    let (rt, mesh) = start_mesh(config);
    let work = dir.path().join("work");
    let run = run_in(&extract, &work, &mesh.base_url(), "30");
    rt.block_on(mesh.stop());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("the record of this check"), "{stderr}");

    let html = std::fs::read_to_string(work.join("report.html")).unwrap();
    let json = ndop(&["report", work.to_str().unwrap(), "--json"]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let json = String::from_utf8(json.stdout).unwrap();
    let facts: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(facts["state"], "complete");
    let opted_out = numbers.len().div_ceil(9);
    assert_eq!(facts["patients"]["opted_out"], opted_out as u64);
    assert_eq!(facts["patients"]["checked"], numbers.len() as u64);
    assert_eq!(
        facts["verdict"].as_str().unwrap(),
        format!(
            "{opted_out} of {} patients opted out; the cleared extract keeps {} of 800 records.",
            numbers.len(),
            facts["output"]["records"]
        )
    );
    for (what, text) in [("HTML", &html), ("JSON", &json)] {
        let found = nhs_numbers_in(text);
        assert!(found.is_empty(), "{what} holds NHS numbers: {found:?}");
        for n in &numbers {
            assert!(
                !text.contains(n.as_str()),
                "{what} holds an NHS number of the extract"
            );
        }
        // the name was kept, with the number taken out
        assert!(text.contains("extract [NHS number removed].csv"), "{what}");
    }
    assert!(html.contains(facts["verdict"].as_str().unwrap()));
}

/// Runs `ndop` and returns its standard output, failing the test on a failure.
#[track_caller]
fn ok_stdout(args: &[&str]) -> String {
    let out = ndop(args);
    assert!(
        out.status.success(),
        "{:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_report_of_a_filter_that_used_the_results_cache() {
    let dir = tempfile::tempdir().unwrap();
    let extract = dir.path().join("extract.csv");
    generate_csv(&extract, "300", "15");
    let numbers = numbers_of(&extract);
    let mut config = mock_mesh::Config::default();
    config.pos.optout_numbers = numbers
        .iter()
        .step_by(7)
        .map(|n| n.parse().unwrap())
        .collect();
    let (rt, mesh) = start_mesh(config);
    let work = dir.path().join("work");
    let cache = dir.path().join("cache");
    let run = run_in(&extract, &work, &mesh.base_url(), "30");
    rt.block_on(mesh.stop());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let w = work.to_str().unwrap();
    let c = cache.to_str().unwrap();
    ok_stdout(&["cache", "import", w, "--cache", c]);
    let as_of = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let cleared = dir.path().join("cleared.csv");
    let x = extract.to_str().unwrap();
    let o = cleared.to_str().unwrap();
    let filter_args = [
        "filter",
        x,
        "--column",
        "nhs_number",
        "--cache",
        c,
        "--as-of",
        &as_of,
        "--out",
        o,
    ];
    let summary_text = ok_stdout(
        &[
            &filter_args[..],
            &["--max-age", "30d", "--allow-stale-cache"],
        ]
        .concat(),
    );
    let summary: serde_json::Value = serde_json::from_str(&summary_text).unwrap();
    let cached = &summary["cache"];
    assert_eq!(cached["as_of"], as_of.as_str(), "{summary}");
    assert_eq!(cached["allow_stale_cache"], true);
    assert_eq!(cached["not_checked"], summary["not_checked"]);
    let oldest = cached["oldest_checked_at"].as_str().unwrap().to_string();
    let summary_file = dir.path().join("filter.json");
    std::fs::write(&summary_file, &summary_text).unwrap();
    let html = dir.path().join("filter-report.html");
    let json = ok_stdout(&[
        "report",
        "--filter-summary",
        summary_file.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
        "--json",
    ]);
    let facts: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(facts["cache"]["as_of"], as_of.as_str(), "{facts}");
    assert_eq!(facts["cache"]["oldest_checked_at"], oldest.as_str());
    assert_eq!(facts["cache"]["max_age"], "30d");
    // the POS answered within the last minutes: the oldest result is that young
    let age = facts["cache"]["oldest_age"].as_str().unwrap();
    assert!(
        age.ends_with('h') || age.ends_with('m') || age.ends_with('s'),
        "{age}"
    );
    assert_eq!(facts["output"]["records"], summary["kept"]);
    let opted_out = numbers.len().div_ceil(7) as u64;
    let html = std::fs::read_to_string(&html).unwrap();
    let verdict = facts["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with(&format!(
            "The cleared extract keeps {} of 300 records",
            summary["kept"]
        )),
        "{verdict}"
    );
    assert!(
        summary["opted_out"].as_u64().unwrap() >= opted_out,
        "{summary}"
    );
    assert!(html.contains(verdict));
    assert!(html.contains("Oldest result used") && html.contains("over the 21-day ceiling"));
    let alerts: Vec<&str> = facts["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "alert")
        .filter_map(|f| f["text"].as_str())
        .collect();
    assert!(
        alerts.iter().any(|a| a.contains("--allow-stale-cache")),
        "{alerts:?}"
    );
    for (what, text) in [("HTML", &html), ("JSON", &json)] {
        let found = nhs_numbers_in(text);
        assert!(found.is_empty(), "{what} holds NHS numbers: {found:?}");
    }
}

#[test]
fn a_run_that_times_out_leaves_a_report_that_says_it_is_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = mock_mesh::Config::default();
    config.pos.delay = Duration::from_secs(30);
    let (rt, mesh) = start_mesh(config);
    let extract = dir.path().join("extract.csv");
    generate_csv(&extract, "300", "5");
    let work = dir.path().join("work");
    let run = run_in(&extract, &work, &mesh.base_url(), "0");
    rt.block_on(mesh.stop());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("report.html"), "{stderr}");
    let html = std::fs::read_to_string(work.join("report.html")).unwrap();
    assert!(html.contains("class=\"verdict bad\""));
    assert!(html.contains("Not finished: the POS has not yet answered 1 of 1 file(s) sent."));
    let json = ndop(&["report", work.to_str().unwrap(), "--json", "--no-hash"]);
    let facts: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(facts["state"], "waiting");
    assert_eq!(facts["files"][0]["status"], "waiting for the POS");
    assert!(facts["output"].is_null());
}

/// A Chromium to test with, or `None` after saying on standard error why the test skips (not
/// captured by the test harness, so the skip is seen). With `NDOP_REQUIRE_CHROMIUM=1` a
/// missing Chromium fails the test.
fn chromium(test: &str) -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("NDOP_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("NDOP_REQUIRE_CHROMIUM=1 but no chromium on PATH");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no `chromium` on PATH (install Debian's package: apt-get \
             install -y chromium)"
        );
    }
    found
}

/// Runs headless Chromium on `page` with `extra` flags, killed after two minutes.
fn run_chromium(chromium: &Path, page: &Path, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // drain both pipes while waiting (a full pipe would stall chromium)
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// The console messages and uncaught errors in Chromium's log.
fn console_errors(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect()
}

/// Width, height and RGBA pixels of an 8-bit RGB or RGBA PNG (what Chromium writes).
fn decode_png(png: &[u8]) -> (usize, usize, Vec<[u8; 4]>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut pos, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0, 0, 0);
    while pos + 8 <= png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &png[pos + 4..pos + 8];
        let data = &png[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "bit depth");
                assert_eq!(data[12], 0, "interlaced");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("PNG colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width * channels;
    assert_eq!(raw.len(), height * (stride + 1), "PNG data size");
    // undo the per-row filters (PNG spec, section 9)
    let mut pixels = vec![0u8; height * stride];
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        for x in 0..stride {
            let v = raw[y * (stride + 1) + 1 + x];
            let a = if x >= channels {
                pixels[y * stride + x - channels]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * stride + x]
            } else {
                0
            };
            let c = if x >= channels && y > 0 {
                pixels[(y - 1) * stride + x - channels]
            } else {
                0
            };
            pixels[y * stride + x] = match filter {
                0 => v,
                1 => v.wrapping_add(a),
                2 => v.wrapping_add(b),
                3 => v.wrapping_add(((a as u16 + b as u16) / 2) as u8),
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    let pred = if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    };
                    v.wrapping_add(pred)
                }
                f => panic!("PNG filter {f}"),
            };
        }
    }
    let rgba = pixels
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2], if channels == 4 { p[3] } else { 255 }])
        .collect();
    (width, height, rgba)
}

#[test]
fn the_demo_report_renders_in_chromium() {
    let Some(chromium) = chromium("the_demo_report_renders_in_chromium") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let demo = ndop(&[
        "demo",
        "--work",
        work.to_str().unwrap(),
        "--patients",
        "100",
    ]);
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "{stdout}");
    let page = work.join("report.html");
    assert!(stdout.contains(&page.display().to_string()), "{stdout}");
    let html = std::fs::read_to_string(&page).unwrap();
    // self-contained: nothing to fetch
    for fetch in [
        "<script", "<link", "<img", "src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(fetch), "the page fetches something: {fetch}");
    }
    let facts = ndop(&["report", work.to_str().unwrap(), "--json", "--no-hash"]);
    let facts: serde_json::Value = serde_json::from_slice(&facts.stdout).unwrap();
    let verdict = facts["verdict"].as_str().unwrap();
    assert!(verdict.contains("patients opted out"), "{verdict}");

    // the DOM Chromium built holds the verdict, and nothing was logged to the console
    let dom = run_chromium(&chromium, &page, &["--dump-dom".into()]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(dom_text.contains(&format!("<p class=\"verdict-text\">{verdict}</p>")));
    assert_eq!(console_errors(&dom.stderr), Vec::<String>::new());

    // a screenshot of the size asked for, with the page drawn on it
    let shot = dir.path().join("shot.png");
    let out = run_chromium(
        &chromium,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,1400".into(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(console_errors(&out.stderr), Vec::<String>::new());
    let (width, height, pixels) = decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!((width, height), (1000, 1400));
    let distinct: HashSet<[u8; 4]> = pixels.iter().copied().collect();
    assert!(
        distinct.len() > 50,
        "{} colours: a blank page",
        distinct.len()
    );
    let dark = pixels
        .iter()
        .filter(|p| p[0] < 100 && p[1] < 100 && p[2] < 100)
        .count();
    assert!(
        dark > pixels.len() / 200,
        "{dark} dark pixels: no text drawn"
    );
    // the demo ran against a mock: the verdict box is amber (#fff6e0), the kept bar green
    assert!(
        pixels.contains(&[0xff, 0xf6, 0xe0, 0xff]),
        "no amber verdict box"
    );
    assert!(pixels.contains(&[0x1b, 0x7f, 0x3b, 0xff]), "no chart");

    // printed: A4 pages
    let pdf = dir.path().join("report.pdf");
    let out = run_chromium(
        &chromium,
        &page,
        &[
            format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer".into(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pdf = std::fs::read(&pdf).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    // every page 210 x 297 mm: 595.3 x 841.9 points (Chromium rounds to its own units)
    let text = String::from_utf8_lossy(&pdf);
    let boxes: Vec<&str> = text.split("/MediaBox [").skip(1).collect();
    assert!(!boxes.is_empty(), "no page in the PDF");
    for b in boxes {
        let v: Vec<f64> = b
            .split(']')
            .next()
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            (v[2] - 595.3).abs() < 1.5 && (v[3] - 841.9).abs() < 1.5,
            "not A4: {v:?}"
        );
    }
}

#[test]
fn the_console_check_sees_an_error() {
    // the check above is only as good as this
    let Some(chromium) = chromium("the_console_check_sees_an_error") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(&page, "<p>x</p><script>throw new Error('boom')</script>").unwrap();
    let out = run_chromium(&chromium, &page, &["--dump-dom".into()]);
    let errors = console_errors(&out.stderr);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("Uncaught") && l.contains("boom")),
        "{errors:?}"
    );
}
