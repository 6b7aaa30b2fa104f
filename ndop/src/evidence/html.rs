//! The report as one self-contained HTML page, rendered from [`Facts`] alone: inline CSS (with
//! an A4 print stylesheet) and an inline SVG chart; no script, font, image or other file is
//! fetched. Every piece of text from the facts is escaped ([`esc`]): file names and paths are
//! user data.

use super::facts::{Bucket, Facts, FileFacts, Severity, State};
use crate::report::thousands;
use std::fmt::Write;

/// The page's style: screen and print (A4).
const STYLE: &str = r#"
:root { --ink:#1d2530; --muted:#5b6573; --line:#d5dae1; --ok:#1b6e35; --okbg:#e8f4ec;
  --bad:#b3261e; --badbg:#fdecea; --note:#8a5a00; --notebg:#fff6e0; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f5f8; color: var(--ink);
  font: 15px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 60rem; margin: 1.5rem auto; background: #fff; padding: 2rem 2.5rem;
  border: 1px solid var(--line); border-radius: 6px; }
header { border-bottom: 3px solid #005eb8; padding-bottom: .8rem; margin-bottom: 1.2rem; }
.kicker { margin: 0; color: #005eb8; font-weight: 600; letter-spacing: .04em;
  text-transform: uppercase; font-size: .8rem; }
h1 { margin: .2rem 0 .3rem; font-size: 1.6rem; line-height: 1.2; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--line);
  padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; overflow-wrap: anywhere; }
.meta, .small { color: var(--muted); font-size: .85rem; margin: .2rem 0; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: .85em; overflow-wrap: anywhere; word-break: break-all; }
.verdict { border-left: 8px solid var(--ok); background: var(--okbg); padding: .9rem 1.2rem;
  border-radius: 4px; }
.verdict.bad { border-color: var(--bad); background: var(--badbg); }
.verdict.test { border-color: #d9a400; background: var(--notebg); }
.verdict h2 { border: 0; margin: 0 0 .2rem; font-size: .85rem; text-transform: uppercase;
  letter-spacing: .05em; color: var(--muted); }
.verdict-text { font-size: 1.35rem; font-weight: 650; margin: 0 0 .3rem; }
.verdict.bad .verdict-text { color: var(--bad); }
ul.findings { list-style: none; padding: 0; margin: 0; }
ul.findings li { padding: .45rem .7rem; margin: .3rem 0; border-radius: 4px; }
li.alert { background: var(--badbg); color: var(--bad); border-left: 5px solid var(--bad);
  font-weight: 600; }
li.note { background: var(--notebg); color: var(--note); border-left: 5px solid #d9a400; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0 .6rem; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem;
  border-bottom: 1px solid var(--line); }
th { font-weight: 600; }
thead th { background: #eef1f5; font-size: .85rem; }
table.kv th { width: 13rem; color: var(--muted); font-weight: 500; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.swatch { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px;
  margin-right: .45rem; vertical-align: -1px; }
tr.total td { font-weight: 650; border-top: 2px solid var(--ink); }
.red { color: var(--bad); font-weight: 650; }
.chart { width: 100%; height: auto; display: block; margin: .4rem 0; }
.bar { background: #005eb8; height: .7rem; border-radius: 2px; min-width: 1px; }
.file { border: 1px solid var(--line); border-radius: 4px; padding: .2rem .8rem .4rem;
  margin: .6rem 0; }
.signoff td { height: 2.4rem; }
footer { margin-top: 2rem; color: var(--muted); font-size: .8rem;
  border-top: 1px solid var(--line); padding-top: .6rem; }
@media print {
  @page { size: A4; margin: 14mm 12mm 16mm; }
  body { background: #fff; font-size: 8.5pt; line-height: 1.3; }
  main { max-width: none; margin: 0; padding: 0; border: 0; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h1 { font-size: 15pt; }
  h2 { font-size: 11pt; margin: .9rem 0 .3rem; break-after: avoid; }
  th, td { padding: .12rem .4rem; }
  .meta, .small, thead th, footer { font-size: 7.5pt; }
  code, .mono { font-size: 7.5pt; }
  table.kv th { width: 10rem; }
  .verdict-text { font-size: 13pt; }
  ul.findings li { padding: .25rem .6rem; margin: .2rem 0; }
  .verdict, tr, .chart, .signoff { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"#;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An RFC 3339 time as `28 Nov 2026 07:03:12 UTC`; anything else as it is.
fn when(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(d) => d
            .with_timezone(&chrono::Utc)
            .format("%-d %b %Y %H:%M:%S UTC")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

/// An optional time, or a dash.
fn when_opt(t: Option<&str>) -> String {
    t.map(when).unwrap_or_else(|| "—".into())
}

/// `7,742 bytes (7.7 kB)`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} bytes", thousands(bytes))
    } else {
        format!("{} bytes ({v:.1} {})", thousands(bytes), UNITS[unit])
    }
}

/// A share as a percentage with one decimal.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// The colour of an outcome.
fn colour(b: &Bucket) -> &'static str {
    match b.key.split(':').next().unwrap_or("") {
        "kept" => "#1b7f3b",
        "opted_out" => "#4b3a8f",
        "not_checked" => "#c0392b",
        "invalid" => "#d98c1f",
        "unparseable" => "#a14f00",
        "awaiting" => "#b8c0cc",
        _ => "#8a8f98",
    }
}

/// The last part of a path.
fn file_name(path: &str) -> &str {
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(path)
}

/// The whole page.
pub(crate) fn render(f: &Facts) -> String {
    let mut h = String::with_capacity(16 << 10);
    let title = match &f.extract.path {
        Some(p) => format!("Opt-out check of {}", file_name(p)),
        None => "Opt-out check".to_string(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en-GB\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    let _ = write!(
        h,
        "<header>\n<p class=\"kicker\">National Data Opt-out · record of the check</p>\n\
         <h1>{}</h1>\n<p class=\"meta\">Made {} by ndop {} from the work directory \
         <code>{}</code>.</p>\n</header>\n",
        esc(&title),
        esc(&when(&f.generated)),
        esc(&f.ndop_version),
        esc(&f.work)
    );
    verdict(&mut h, f);
    findings(&mut h, f);
    checked(&mut h, f);
    records(&mut h, f);
    files(&mut h, f);
    rejects(&mut h, f);
    stages(&mut h, f);
    signoff(&mut h);
    let _ = write!(
        h,
        "<footer>This record holds no NHS number: only counts, file names, message ids, \
         SHA-256 hashes and times. The same facts as JSON: <code>ndop report {}{} --json</code> \
         (schema {}).</footer>\n</main>\n</body>\n</html>\n",
        if f.cache.is_some() {
            "--filter-summary "
        } else {
            ""
        },
        esc(&f.work),
        esc(&f.schema)
    );
    h
}

/// The verdict, first and in words.
fn verdict(h: &mut String, f: &Facts) {
    let alerts = f
        .findings
        .iter()
        .filter(|x| x.severity == Severity::Alert)
        .count();
    let ok = f.state == State::Complete && alerts == 0;
    let live = matches!(f.mesh.environment.as_deref(), Some("LIVE") | None);
    let mut detail = String::new();
    if f.state == State::Complete {
        let pos = match f.mesh.environment.as_deref() {
            Some(env @ ("LIVE" | "INT")) => format!("The {env} POS"),
            Some(url) => format!("The POS at {}", esc(url)),
            None => "The POS".into(),
        };
        let _ = match f.files.len() {
            1 => write!(detail, "{pos} answered the one file sent"),
            n => write!(detail, "{pos} answered all {n} files sent"),
        };
        if let Some(t) = &f.dates.answered {
            let _ = write!(detail, ", last on {}", esc(&when(t)));
        }
        detail.push('.');
        if let Some(t) = &f.dates.filtered {
            let _ = write!(
                detail,
                " The cleared extract was written on {}.",
                esc(&when(t))
            );
        }
    }
    if alerts > 0 {
        let _ = write!(
            detail,
            " <span class=\"red\">{alerts} point(s) need attention before this record is \
             relied on: see below.</span>"
        );
    } else if ok {
        detail.push_str(" Every figure below agrees with the others.");
    }
    if ok && !live {
        detail.push_str(
            " <strong>A test run: its answers are not patients' real opt-outs, so this is \
             not a record of a real check.</strong>",
        );
    }
    let _ = write!(
        h,
        "<section class=\"verdict{}\" id=\"verdict\">\n<h2>Verdict</h2>\n\
         <p class=\"verdict-text\">{}</p>\n<p>{}</p>\n</section>\n",
        match (ok, live) {
            (true, true) => "",
            (true, false) => " test",
            (false, _) => " bad",
        },
        esc(&f.verdict),
        detail
    );
}

/// Alerts (red) and notes.
fn findings(h: &mut String, f: &Facts) {
    for (severity, heading, class) in [
        (Severity::Alert, "Needs attention", "alert"),
        (Severity::Note, "Notes", "note"),
    ] {
        let items: Vec<_> = f
            .findings
            .iter()
            .filter(|x| x.severity == severity)
            .collect();
        if items.is_empty() {
            continue;
        }
        let _ = write!(
            h,
            "<section id=\"{class}s\">\n<h2>{heading}</h2>\n<ul class=\"findings\">\n"
        );
        for x in items {
            let _ = writeln!(h, "<li class=\"{class}\">{}</li>", esc(&x.text));
        }
        h.push_str("</ul>\n</section>\n");
    }
}

/// A `<tr>` of a key-value table; `value` is HTML already.
fn kv(h: &mut String, key: &str, value: &str) {
    let _ = writeln!(h, "<tr><th scope=\"row\">{key}</th><td>{value}</td></tr>");
}

/// Escaped text, or a dash when absent.
fn text_or_dash(s: Option<&str>) -> String {
    s.map(esc).unwrap_or_else(|| "—".into())
}

/// What was checked: the extract, how it was read, where it went, when.
fn checked(h: &mut String, f: &Facts) {
    h.push_str("<section id=\"checked\">\n<h2>What was checked</h2>\n<table class=\"kv\">\n");
    let x = &f.extract;
    kv(
        h,
        "Extract",
        &format!("<code>{}</code>", text_or_dash(x.path.as_deref())),
    );
    kv(h, "Size", &x.bytes.map(size).unwrap_or_else(|| "—".into()));
    kv(h, "Last modified", &when_opt(x.modified.as_deref()));
    let sha = match &x.sha256 {
        Some(s) => format!(
            "<code>{}</code><br><span class=\"small\">{}</span>",
            esc(s),
            esc(&x.sha256_note)
        ),
        None => format!("<span class=\"small\">{}</span>", esc(&x.sha256_note)),
    };
    kv(h, "SHA-256", &sha);
    kv(
        h,
        "Records",
        &x.records
            .map(|n| format!("{} data records", thousands(n)))
            .unwrap_or_else(|| "—".into()),
    );
    let mut format = match x.format.as_deref() {
        Some("csv") => "CSV".to_string(),
        Some("lines") => "one NHS number per line".to_string(),
        Some(other) => esc(other),
        None => "—".into(),
    };
    if let Some(d) = &x.delimiter {
        let _ = write!(format, ", {} separated", esc(d));
    }
    if let Some(n) = x.header_rows.filter(|n| *n > 0) {
        let _ = write!(format, ", {n} header row(s)");
    }
    if let Some(n) = x.skipped_lines.filter(|n| *n > 0) {
        let _ = write!(format, ", {n} line(s) skipped before the header");
    }
    kv(h, "Format", &format);
    kv(h, "NHS number column", &text_or_dash(x.column.as_deref()));
    let rules = match (x.strict, x.reject_placeholders) {
        (Some(strict), Some(placeholders)) => format!(
            "Modulus 11; {}; {}",
            if strict {
                "ten bare digits only"
            } else {
                "spaces and dashes allowed"
            },
            if placeholders {
                "repeated-digit placeholders rejected"
            } else {
                "repeated-digit placeholders accepted"
            }
        ),
        _ => "Modulus 11".into(),
    };
    kv(h, "NHS number rules", &rules);
    kv(
        h,
        "MESH environment",
        &text_or_dash(f.mesh.environment.as_deref()),
    );
    kv(h, "Our mailbox", &text_or_dash(f.mesh.mailbox.as_deref()));
    kv(
        h,
        "POS mailbox",
        &text_or_dash(f.mesh.pos_mailbox.as_deref()),
    );
    kv(h, "Workflow", &text_or_dash(f.mesh.workflow_id.as_deref()));
    kv(h, "Prepared", &when_opt(f.dates.prepared.as_deref()));
    kv(h, "Sent", &when_opt(f.dates.sent.as_deref()));
    kv(h, "POS answered", &when_opt(f.dates.answered.as_deref()));
    kv(h, "Filtered", &when_opt(f.dates.filtered.as_deref()));
    if let Some(c) = &f.cache {
        kv(h, "Results cache as of", &esc(&when(&c.as_of)));
        let max = if c.allow_stale_cache {
            format!(
                "<span class=\"red\">{} (over the 21-day ceiling: --allow-stale-cache)</span>",
                esc(&c.max_age)
            )
        } else {
            esc(&c.max_age)
        };
        kv(h, "Maximum age of a result", &max);
        let oldest = match (&c.oldest_checked_at, &c.oldest_age) {
            (Some(at), Some(age)) => format!(
                "checked {}, {} before the as-of date (maximum {})",
                esc(&when(at)),
                esc(age),
                esc(&c.max_age)
            ),
            _ => "<span class=\"red\">none: the cache held no result in the window</span>".into(),
        };
        kv(h, "Oldest result used", &oldest);
        kv(
            h,
            "Not checked",
            &format!("{} records", thousands(c.not_checked)),
        );
    }
    if let Some(p) = &f.patients {
        kv(
            h,
            "Patients",
            &format!(
                "{} distinct NHS numbers sent; {} returned (no opt-out); <strong>{} opted \
                 out</strong>{}",
                thousands(p.checked),
                thousands(p.returned),
                thousands(p.opted_out),
                if p.unexpected > 0 {
                    format!(
                        "; <span class=\"red\">{} returned that were never sent</span>",
                        thousands(p.unexpected)
                    )
                } else {
                    String::new()
                }
            ),
        );
    }
    if let Some(o) = &f.output {
        kv(
            h,
            "Cleared extract",
            &format!("<code>{}</code>", esc(&o.path)),
        );
        kv(
            h,
            "Cleared extract size",
            &format!(
                "{} records; {}",
                thousands(o.records),
                o.bytes.map(size).unwrap_or_else(|| "—".into())
            ),
        );
        kv(
            h,
            "Cleared extract SHA-256",
            &o.sha256
                .as_deref()
                .map(|s| format!("<code>{}</code>", esc(s)))
                .unwrap_or_else(|| "—".into()),
        );
    }
    h.push_str("</table>\n</section>\n");
}

/// Where every record went: a stacked bar and a table.
fn records(h: &mut String, f: &Facts) {
    let Some(r) = &f.records else {
        return;
    };
    h.push_str("<section id=\"records\">\n<h2>Where every record went</h2>\n");
    // the chart: one bar, one segment per outcome in proportion
    let width = 1000.0;
    let _ = write!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 1000 48\" role=\"img\" aria-label=\"Records by \
         outcome\" xmlns=\"http://www.w3.org/2000/svg\">\n<title>Records by outcome</title>\n"
    );
    let mut x = 0.0;
    for b in r.buckets.iter().filter(|b| b.records > 0) {
        let w = if r.total == 0 {
            0.0
        } else {
            b.records as f64 / r.total as f64 * width
        };
        let _ = writeln!(
            h,
            "<rect x=\"{x:.2}\" y=\"4\" width=\"{:.2}\" height=\"40\" fill=\"{}\"><title>{}: {}\
             </title></rect>",
            w.max(2.0),
            colour(b),
            esc(&b.label),
            thousands(b.records)
        );
        x += w;
    }
    h.push_str("</svg>\n");
    h.push_str(
        "<table>\n<thead><tr><th>Outcome</th><th class=\"num\">Records</th>\
         <th class=\"num\">Share</th><th>In the cleared extract</th></tr></thead>\n<tbody>\n",
    );
    for b in &r.buckets {
        let alarming = b.key == "not_checked" && b.records > 0;
        let _ = writeln!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td>\
             <td class=\"num{}\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            colour(b),
            esc(&b.label),
            if alarming { " red" } else { "" },
            thousands(b.records),
            percent(b.records, r.total),
            if b.kept { "yes" } else { "no" }
        );
    }
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td>All records read</td><td class=\"num\">{}</td>\
         <td class=\"num\">100%</td><td></td></tr>\n</tbody>\n</table>",
        thousands(r.total)
    );
    if let Some(d) = r.duplicates.filter(|d| *d > 0) {
        let _ = writeln!(
            h,
            "<p class=\"small\">{} of these records repeat an NHS number that appears earlier \
             in the extract: each number was sent once, and its records are kept or removed \
             together.</p>",
            thousands(d)
        );
    }
    h.push_str("</section>\n");
}

/// Each file sent and the replies to it.
fn files(h: &mut String, f: &Facts) {
    if f.files.is_empty() {
        return;
    }
    h.push_str("<section id=\"files\">\n<h2>Files sent to the POS, and its replies</h2>\n");
    for file in &f.files {
        one_file(h, file);
    }
    h.push_str("</section>\n");
}

/// One file sent.
fn one_file(h: &mut String, file: &FileFacts) {
    let _ = write!(
        h,
        "<div class=\"file\">\n<h3>{} <span class=\"small{}\">— {}</span></h3>\n\
         <table class=\"kv\">\n",
        esc(&file.name),
        if file.answered { "" } else { " red" },
        esc(&file.status)
    );
    kv(
        h,
        "Records, size",
        &format!(
            "{} NHS numbers; {}",
            thousands(file.records),
            size(file.bytes)
        ),
    );
    kv(h, "SHA-256", &format!("<code>{}</code>", esc(&file.sha256)));
    kv(
        h,
        "LocalId",
        &format!("<code>{}</code>", esc(&file.local_id)),
    );
    kv(h, "Subject", &esc(&file.subject));
    kv(
        h,
        "MESH message id",
        &format!("<code>{}</code>", esc(&file.message_id)),
    );
    kv(h, "Sent to", &esc(&file.to));
    kv(h, "Accepted by MESH", &esc(&when(&file.sent)));
    h.push_str("</table>\n");
    if file.replies.is_empty() {
        h.push_str("<p class=\"small red\">No reply collected yet.</p>\n</div>\n");
        return;
    }
    h.push_str(
        "<table>\n<thead><tr><th>Reply</th><th>MESH message id</th><th class=\"num\">Numbers\
         </th><th class=\"num\">Bytes</th><th>SHA-256</th><th>Collected</th></tr></thead>\n\
         <tbody>\n",
    );
    for r in &file.replies {
        let _ = writeln!(
            h,
            "<tr><td>{}{}</td><td><code>{}</code></td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&r.kind),
            if r.is_final { " (final)" } else { "" },
            esc(&r.message_id),
            r.records.map(thousands).unwrap_or_default(),
            thousands(r.bytes),
            esc(&r.sha256),
            esc(&when(&r.stored))
        );
    }
    h.push_str("</tbody>\n</table>\n</div>\n");
}

/// The records left out as invalid or unreadable: where they are, never what they hold.
fn rejects(h: &mut String, f: &Facts) {
    let Some(r) = &f.rejects else {
        return;
    };
    let _ = write!(
        h,
        "<section id=\"rejects\">\n<h2>Records left out as invalid or unreadable</h2>\n\
         <p>{} record(s), listed by record and line number in <code>{}</code>.</p>\n",
        thousands(r.records),
        esc(&r.path)
    );
    if !r.first.is_empty() {
        h.push_str(
            "<table>\n<thead><tr><th class=\"num\">Record</th><th class=\"num\">Line</th>\
             <th>Reason</th></tr></thead>\n<tbody>\n",
        );
        for row in &r.first {
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                thousands(row.record),
                thousands(row.line),
                esc(&row.reason.replace('_', " "))
            );
        }
        h.push_str("</tbody>\n</table>\n");
        if r.records > r.first.len() as u64 {
            let _ = writeln!(
                h,
                "<p class=\"small\">… and {} more in the rejects report.</p>",
                thousands(r.records - r.first.len() as u64)
            );
        }
    }
    h.push_str("</section>\n");
}

/// How long each stage took.
fn stages(h: &mut String, f: &Facts) {
    if f.stages.is_empty() {
        return;
    }
    let longest = f.stages.iter().map(|s| s.seconds).fold(0.0, f64::max);
    h.push_str(
        "<section id=\"stages\">\n<h2>How long each stage took</h2>\n<table>\n<thead><tr>\
         <th>Stage</th><th class=\"num\">Seconds</th><th>Ended</th><th style=\"width:40%\"></th>\
         </tr></thead>\n<tbody>\n",
    );
    for s in &f.stages {
        let share = if longest > 0.0 {
            s.seconds / longest * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{:.2}</td><td>{}</td><td><div class=\"bar\" \
             style=\"width:{share:.1}%\"></div></td></tr>",
            esc(&s.name),
            s.seconds,
            when_opt(s.ended.as_deref())
        );
    }
    let total: f64 = f.stages.iter().map(|s| s.seconds).sum();
    let _ = writeln!(
        h,
        "<tr class=\"total\"><td>Total (last run)</td><td class=\"num\">{total:.2}</td><td>\
         </td><td></td></tr>\n</tbody>\n</table>\n<p class=\"small\">The times of the last \
         <code>ndop run</code>; a resumed run skips the work finished earlier.</p>\n</section>"
    );
}

/// Space for the reviewer's sign-off on the printed record.
fn signoff(h: &mut String) {
    h.push_str(
        "<section id=\"signoff\">\n<h2>Reviewed by</h2>\n<table class=\"kv signoff\">\n\
         <tr><th scope=\"row\">Name and role</th><td></td></tr>\n\
         <tr><th scope=\"row\">Signature</th><td></td></tr>\n\
         <tr><th scope=\"row\">Date</th><td></td></tr>\n</table>\n</section>\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(910), "910 bytes");
        assert_eq!(size(7_742_000), "7,742,000 bytes (7.7 MB)");
        assert_eq!(when("2026-11-28T07:03:12.789Z"), "28 Nov 2026 07:03:12 UTC");
        assert_eq!(when("yesterday"), "yesterday");
        assert_eq!(percent(1, 3), "33.3%");
    }
}
