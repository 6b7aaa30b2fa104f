//! DTSControl (`.ctl`) files both ways: the MESH client's control file that says where its
//! `.dat` goes (`ndop-domain.md` §2.1–2.2), written by [`render`] and read by [`read_control`].
//!
//! `ndop send` reads To_DTS, WorkflowId, Subject and LocalId from the `.ctl` next to each
//! `.dat` and turns them into MESH headers, so a bad control file must stop the send with a
//! reason, not produce a message the POS silently ignores. The format is a flat XML element
//! with leaf children; this reader accepts exactly that (plus an XML declaration, comments,
//! the five predefined entities, self-closing empty elements and nested `StatusRecord`-style
//! blocks, whose content is ignored) and rejects anything else.
//!
//! Subject and LocalId are restricted to `[A-Za-z0-9_-]`: the POS ignores files whose Subject
//! holds characters such as `:` (`ndop-domain.md` §2.1, UK Renal Registry), and both travel in
//! MESH headers (`Mex-Subject` ≤ 500, `Mex-LocalID` ≤ 300 characters, mesh-protocol.md §5.2).

use std::path::Path;

use crate::error::{Error, Result};
use crate::pos::{is_mailbox_id, WORKFLOW_ID};

/// The DTSControl file for one `.dat` (element names are case-sensitive).
pub fn render(from: &str, to: &str, subject: &str, local_id: &str) -> String {
    format!(
        "<DTSControl>\r\n\
         \x20 <Version>1.0</Version>\r\n\
         \x20 <AddressType>DTS</AddressType>\r\n\
         \x20 <MessageType>Data</MessageType>\r\n\
         \x20 <WorkflowId>{WORKFLOW_ID}</WorkflowId>\r\n\
         \x20 <From_DTS>{from}</From_DTS>\r\n\
         \x20 <To_DTS>{to}</To_DTS>\r\n\
         \x20 <Subject>{subject}</Subject>\r\n\
         \x20 <LocalId>{local_id}</LocalId>\r\n\
         \x20 <DTSId></DTSId>\r\n\
         \x20 <PartnerId></PartnerId>\r\n\
         \x20 <Compress>Y</Compress>\r\n\
         \x20 <Encrypted>N</Encrypted>\r\n\
         \x20 <IsCompressed>N</IsCompressed>\r\n\
         \x20 <AllowChunking>Y</AllowChunking>\r\n\
         </DTSControl>\r\n"
    )
}

/// Largest control file read; real ones are well under 1 KiB.
pub const MAX_CTL_BYTES: u64 = 64 * 1024;

/// The fields of a DTSControl file that a send needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControlFile {
    /// Recipient mailbox (`To_DTS`), upper-case.
    pub to_dts: String,
    /// MESH workflow (`WorkflowId`), e.g. `SPINE_NTT_UPHOLDING`.
    pub workflow_id: String,
    /// `Subject`.
    pub subject: String,
    /// `LocalId`: our reference, echoed by every reply of the POS.
    pub local_id: String,
    /// Sending mailbox (`From_DTS`), upper-case, if the file names one.
    pub from_dts: Option<String>,
}

/// Why a control file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DTSControl file: {0}")]
pub struct MalformedControl(pub String);

fn bad<T>(reason: impl Into<String>) -> std::result::Result<T, MalformedControl> {
    Err(MalformedControl(reason.into()))
}

/// Reads and checks the control file at `path`. A malformed file is an
/// [`Error::Read`] whose source says what is wrong.
pub fn read_control(path: &Path) -> Result<ControlFile> {
    let bytes = read_capped(path)?;
    parse_control(&bytes).map_err(|e| invalid(path, e))
}

fn invalid(path: &Path, e: MalformedControl) -> Error {
    Error::read(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    )
}

/// Parses and checks the bytes of a control file.
pub fn parse_control(bytes: &[u8]) -> std::result::Result<ControlFile, MalformedControl> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => return bad(format!("not UTF-8 (byte {})", e.valid_up_to())),
    };
    let fields = parse_elements(text, "DTSControl", true)?;
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &str| match get(name) {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        Some(_) => bad(format!("<{name}> is empty")),
        None => bad(format!("<{name}> is missing")),
    };
    if let Some(v) = get("Version") {
        if v != "1.0" {
            return bad(format!("<Version> must be 1.0, not {:?}", clip(v)));
        }
    }
    if let Some(t) = get("MessageType") {
        if t != "Data" {
            return bad(format!("<MessageType> must be Data, not {:?}", clip(t)));
        }
    }
    let to_dts = mailbox("To_DTS", &required("To_DTS")?)?;
    let from_dts = match get("From_DTS") {
        Some(v) if !v.is_empty() => Some(mailbox("From_DTS", v)?),
        _ => None,
    };
    let workflow_id = required("WorkflowId")?;
    if workflow_id.len() > 300 || !workflow_id.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("<WorkflowId> must be at most 300 printable ASCII characters");
    }
    let subject = required("Subject")?;
    reference("Subject", &subject, 500)?;
    let local_id = required("LocalId")?;
    reference("LocalId", &local_id, 300)?;
    Ok(ControlFile {
        to_dts,
        workflow_id,
        subject,
        local_id,
        from_dts,
    })
}

/// A mailbox id: 1 to 20 ASCII letters and digits, upper-cased.
fn mailbox(element: &str, v: &str) -> std::result::Result<String, MalformedControl> {
    if !is_mailbox_id(v) {
        return bad(format!(
            "<{element}> must be a mailbox id of 1 to 20 letters and digits, not {:?}",
            clip(v)
        ));
    }
    Ok(v.to_ascii_uppercase())
}

/// Subject / LocalId: `[A-Za-z0-9_-]`, at most `max` characters.
fn reference(element: &str, v: &str, max: usize) -> std::result::Result<(), MalformedControl> {
    if v.len() > max
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad(format!(
            "<{element}> must be 1 to {max} of A-Z a-z 0-9 _ - (the POS ignores other characters), not {:?}",
            clip(v)
        ));
    }
    Ok(())
}

/// At most 40 characters of a value for an error message (control files hold no patient data).
fn clip(v: &str) -> String {
    v.chars().take(40).collect()
}

/// The children of the root element `root` as (name, decoded trimmed text), in file order; a
/// grandchild (e.g. `StatusRecord/Event`) as (`Parent/Name`, text) before its parent, which then
/// appears with empty text. With `unique`, a child name appearing twice is an error.
fn parse_elements(
    text: &str,
    root: &str,
    unique: bool,
) -> std::result::Result<Vec<(String, String)>, MalformedControl> {
    let mut fields: Vec<(String, String)> = Vec::new();
    // open elements, outermost first
    let mut stack: Vec<String> = Vec::new();
    let mut root_seen = false;
    let mut rest = text;
    let mut offset = 0;
    // text of the current depth-2 leaf
    let mut leaf_text = String::new();
    // whether the current depth-1 element has child elements
    let mut has_children = false;
    // text of the current depth-3 element (a grandchild of the root)
    let mut nested_text = String::new();
    while let Some(lt) = rest.find('<') {
        let between = &rest[..lt];
        if stack.len() == 2 {
            leaf_text.push_str(between);
        } else if stack.len() == 3 {
            nested_text.push_str(between);
        } else if stack.len() < 3 && !between.trim().is_empty() {
            let where_ = if stack.is_empty() {
                "outside"
            } else {
                "between the elements of"
            };
            return bad(format!("text {where_} <{root}> at byte {offset}"));
        }
        let tag_start = lt;
        let after = &rest[tag_start..];
        let consumed;
        if let Some(body) = after.strip_prefix("<?") {
            let end = body
                .find("?>")
                .ok_or_else(|| MalformedControl("unterminated <?".into()))?;
            if root_seen || !stack.is_empty() {
                return bad("processing instruction after the root element started");
            }
            consumed = 2 + end + 2;
        } else if let Some(body) = after.strip_prefix("<!--") {
            let end = body
                .find("-->")
                .ok_or_else(|| MalformedControl("unterminated comment".into()))?;
            consumed = 4 + end + 3;
        } else if after.starts_with("<!") {
            return bad("DOCTYPE and CDATA are not allowed");
        } else {
            let end = after
                .find('>')
                .ok_or_else(|| MalformedControl("unterminated tag".into()))?;
            let tag = &after[1..end];
            consumed = end + 1;
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim();
                match stack.pop() {
                    Some(open) if open == name => {}
                    Some(open) => {
                        return bad(format!("</{}> closes <{open}>", clip(name)));
                    }
                    None => return bad(format!("</{}> without an opening tag", clip(name))),
                }
                if stack.len() == 1 {
                    let value = if has_children {
                        String::new()
                    } else {
                        decode(leaf_text.trim())?
                    };
                    push_field(&mut fields, name, value, unique)?;
                } else if stack.len() == 2 {
                    let parent = &stack[1];
                    fields.push((format!("{parent}/{name}"), decode(nested_text.trim())?));
                    nested_text.clear();
                }
                leaf_text.clear();
            } else {
                let self_closing = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let name = tag.split_ascii_whitespace().next().unwrap_or("");
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
                {
                    return bad(format!("bad tag <{}>", clip(tag)));
                }
                match stack.len() {
                    0 => {
                        if root_seen {
                            return bad("more than one root element");
                        }
                        if name != root {
                            return bad(format!(
                                "the root element is <{}>, not <{root}>",
                                clip(name)
                            ));
                        }
                        root_seen = true;
                        if self_closing {
                            return bad(format!("<{root}/> is empty"));
                        }
                        stack.push(name.to_owned());
                    }
                    1 => {
                        has_children = false;
                        leaf_text.clear();
                        if self_closing {
                            push_field(&mut fields, name, String::new(), unique)?;
                        } else {
                            stack.push(name.to_owned());
                        }
                    }
                    _ => {
                        // a child of a depth-1 element (e.g. StatusRecord/DateTime)
                        has_children = true;
                        nested_text.clear();
                        if self_closing && stack.len() == 2 {
                            fields.push((format!("{}/{name}", stack[1]), String::new()));
                        }
                        if !self_closing {
                            if stack.len() >= 16 {
                                return bad("elements nested too deeply");
                            }
                            stack.push(name.to_owned());
                        }
                    }
                }
            }
        }
        offset += tag_start + consumed;
        rest = &rest[tag_start + consumed..];
    }
    if !rest.trim().is_empty() {
        return bad(if root_seen {
            "text after the end of the root element".to_owned()
        } else {
            format!("text outside <{root}>")
        });
    }
    if let Some(open) = stack.last() {
        return bad(format!("<{open}> is never closed"));
    }
    if !root_seen {
        return bad(format!("no <{root}> element"));
    }
    Ok(fields)
}

fn push_field(
    fields: &mut Vec<(String, String)>,
    name: &str,
    value: String,
    unique: bool,
) -> std::result::Result<(), MalformedControl> {
    if unique && fields.iter().any(|(n, _)| n == name) {
        return bad(format!("<{name}> appears twice"));
    }
    fields.push((name.to_owned(), value));
    Ok(())
}

/// Decodes the five predefined XML entities; any other `&` is an error.
fn decode(text: &str) -> std::result::Result<String, MalformedControl> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let (ch, len) = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .iter()
        .find(|(e, _)| after.starts_with(e))
        .map(|(e, c)| (*c, e.len()))
        .ok_or_else(|| MalformedControl("unsupported entity or bare '&'".into()))?;
        out.push(ch);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The children (`Name`) and grandchildren (`Parent/Name`) of the root element `root` of a small
/// XML file such as `meshclient.cfg`, as (name, decoded trimmed text) in file order; an element
/// with children of its own appears by its name, with empty text, after them (so each
/// `<Client>` block of a `meshclient.cfg` ends with a `Client` entry). Names may repeat. The same
/// restricted reader as [`parse_control`]: no DOCTYPE, no external entities.
pub fn elements(
    bytes: &[u8],
    root: &str,
) -> std::result::Result<Vec<(String, String)>, MalformedControl> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
        Err(e) => return bad(format!("not UTF-8 (byte {})", e.valid_up_to())),
    };
    parse_elements(text, root, false)
}

/// The first value of element `name` among `fields`: matched exactly, else ignoring case (the
/// MESH client's files vary by era, `mesh-client-folders.md` §7).
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .or_else(|| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v.as_str())
}

/// A `<StatusRecord>` as the MESH client writes it into a `.ctl` (`mesh-client-folders.md` §3,
/// §5), read leniently: `Event` and `Status` upper-cased (`Transfer to DTS Server` is
/// `TRANSFER`), an all-digit `StatusCode` as two digits (`0` is `00`), any other code verbatim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatusRecord {
    /// `DateTime`, `yyyyMMddHHmmss`, as given (its time zone is not documented).
    pub date_time: String,
    /// `Event`: `TRANSFER`, `COLLECT`, `SEND`, `RECEIVE`, …
    pub event: String,
    /// `Status`: `SUCCESS` or `ERROR` (or whatever else the file says, upper-cased).
    pub status: String,
    /// `StatusCode`: `00`, `05`, `12`, `EPL-152`, …
    pub code: String,
    /// `Description`, free text.
    pub description: String,
}

impl StatusRecord {
    /// A record dated now (UTC), with the event, status and code normalised.
    pub fn now(event: &str, status: &str, code: &str, description: &str) -> StatusRecord {
        StatusRecord {
            date_time: chrono::Utc::now().format("%Y%m%d%H%M%S").to_string(),
            event: normalise_event(event),
            status: status.trim().to_ascii_uppercase(),
            code: normalise_code(code),
            description: description.trim().to_owned(),
        }
    }

    /// Whether `Status` says ERROR (an unknown code with ERROR is an error too).
    pub fn is_error(&self) -> bool {
        self.status == "ERROR"
    }

    /// A delay report: TRANSFER SUCCESS 05, the client will try again.
    pub fn is_delay(&self) -> bool {
        self.event == "TRANSFER" && self.code == "05"
    }

    /// What the code means by the MESH client user guide and by the DTS specification (the two
    /// tables disagree on 06 and 17, `mesh-client-folders.md` §5), each reading prefixed with
    /// its source; empty for a code neither table knows.
    pub fn readings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let lookup = |table: &[(&str, &str, &'static str)]| {
            table
                .iter()
                .find(|(e, c, _)| (e.is_empty() || *e == self.event) && *c == self.code)
                .map(|(_, _, d)| *d)
        };
        if let Some(d) = lookup(GUIDE_CODES) {
            out.push(format!("client user guide: {d}"));
        }
        if let Some(d) = lookup(DTS_CODES) {
            out.push(format!("DTS specification: {d}"));
        }
        out
    }

    /// One line for a person: event, status, code, description and both readings.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {} {}", self.event, self.status, self.code);
        if !self.description.is_empty() {
            s += &format!(" \"{}\"", clip_long(&self.description));
        }
        let readings = self.readings();
        if !readings.is_empty() {
            s += &format!(" ({})", readings.join("; "));
        }
        s
    }
}

fn clip_long(v: &str) -> String {
    v.chars().take(200).collect()
}

/// Table A of `mesh-client-folders.md` §5 (the client user guide): (event, code, meaning).
const GUIDE_CODES: &[(&str, &str, &str)] = &[
    ("COLLECT", "00", "data collect success confirmation"),
    ("COLLECT", "01", ".ctl file is missing or inaccessible"),
    ("COLLECT", "02", ".dat file is missing or inaccessible"),
    ("TRANSFER", "00", "data transfer success confirmation"),
    (
        "TRANSFER",
        "03",
        "server authentication error: invalid certificate, unreachable certificate or path problem",
    ),
    (
        "TRANSFER",
        "04",
        "client authentication error: invalid MESH username or authentication string",
    ),
    (
        "TRANSFER",
        "05",
        "delay report: the client failed to transfer the data file and will try again",
    ),
    (
        "TRANSFER",
        "06",
        "transfer fail: the maximum attempts to retry have been reached",
    ),
    ("SEND", "07", "invalid From_DTS"),
    ("SEND", "08", "invalid To_DTS"),
    ("SEND", "12", "unregistered To_DTS"),
    ("SEND", "13", "non delivery: SMTP delivery failure"),
    ("SEND", "14", "non delivery: MESH delivery failure"),
    ("RECEIVE", "00", "poll success"),
    ("RECEIVE", "15", "poll fail: check the MESH client log file"),
    (
        "RECEIVE",
        "16",
        "server authentication error: invalid server certificate",
    ),
    (
        "RECEIVE",
        "17",
        "client authentication error: invalid MESH username or authentication string",
    ),
];

/// Table B of `mesh-client-folders.md` §5 (mesh-sandbox `ErrorCodeMap`, "from the DTS spec",
/// plus the endpoint-lookup codes): (event, code, meaning); an empty event matches any.
const DTS_CODES: &[(&str, &str, &str)] = &[
    ("COLLECT", "02", "data file is missing or inaccessible"),
    ("TRANSFER", "06", "malformed control file"),
    ("SEND", "07", "invalid From address"),
    ("SEND", "08", "To_DTS missing"),
    ("SEND", "09", "invalid control file version"),
    ("SEND", "11", "invalid message type"),
    ("SEND", "12", "unregistered recipient"),
    (
        "SEND",
        "14",
        "message not collected by the recipient, or mailbox deactivated",
    ),
    ("SEND", "17", "workflow id not registered for the mailbox"),
    ("SEND", "18", "ONS workflow not enabled"),
    ("SEND", "19", "invalid expiry period"),
    ("RECEIVE", "20", "message does not exist"),
    ("", "EPL-150", "multiple mailbox matches"),
    ("", "EPL-151", "no mailbox matches"),
    ("", "EPL-152", "invalid NHS number"),
    ("", "EPL-153", "NHS number not found"),
    ("", "EPL-154", "NHS number does not match the demographics"),
];

/// `StatusCode` compared leniently: trimmed; all digits → at least two digits (`0` → `00`,
/// `007` → `07`); anything else upper-cased and kept.
pub fn normalise_code(code: &str) -> String {
    let t = code.trim();
    if !t.is_empty() && t.len() <= 9 && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = t.parse().unwrap_or(0);
        format!("{n:02}")
    } else {
        t.to_ascii_uppercase()
    }
}

/// `Event` compared leniently: trimmed, upper-cased, the older `Transfer to DTS Server` as
/// `TRANSFER`.
pub fn normalise_event(event: &str) -> String {
    let e = event.trim().to_ascii_uppercase();
    if e.starts_with("TRANSFER") {
        "TRANSFER".into()
    } else {
        e
    }
}

/// A DTSControl file as the MESH client leaves it in SENT, FAILED or IN, read leniently
/// (element names ignoring case; any `MessageType`; nothing required): what folder mode needs to
/// correlate it with a submission.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientControl {
    /// `MessageType`, upper-cased (`DATA`, `REPORT`).
    pub message_type: Option<String>,
    /// `From_DTS`.
    pub from_dts: Option<String>,
    /// `To_DTS`.
    pub to_dts: Option<String>,
    /// `WorkflowId`.
    pub workflow_id: Option<String>,
    /// `Subject`.
    pub subject: Option<String>,
    /// `LocalId`.
    pub local_id: Option<String>,
    /// `DTSId`: the MESH message id (of the message itself, or of the one a report is about).
    pub dts_id: Option<String>,
    /// The last `StatusRecord`, if any.
    pub status: Option<StatusRecord>,
}

/// Reads a control file written by the MESH client leniently (see [`ClientControl`]); only
/// XML that is not a `DTSControl` is refused.
pub fn parse_client_control(bytes: &[u8]) -> std::result::Result<ClientControl, MalformedControl> {
    let fields = elements(bytes, "DTSControl")?;
    let get = |name: &str| {
        field(&fields, name)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let last = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let status = last("StatusRecord/Event").map(|event| StatusRecord {
        date_time: last("StatusRecord/DateTime").unwrap_or("").to_owned(),
        event: normalise_event(event),
        status: last("StatusRecord/Status")
            .unwrap_or("")
            .trim()
            .to_ascii_uppercase(),
        code: normalise_code(last("StatusRecord/StatusCode").unwrap_or("")),
        description: last("StatusRecord/Description").unwrap_or("").to_owned(),
    });
    Ok(ClientControl {
        message_type: get("MessageType").map(|t| t.to_ascii_uppercase()),
        from_dts: get("From_DTS"),
        to_dts: get("To_DTS"),
        workflow_id: get("WorkflowId"),
        subject: get("Subject"),
        local_id: get("LocalId"),
        dts_id: get("DTSId"),
        status,
    })
}

/// Reads the file at `path` (at most [`MAX_CTL_BYTES`]) with [`parse_client_control`]; also
/// returns the raw bytes, to keep for audit.
pub fn read_client_control(path: &Path) -> Result<(ClientControl, Vec<u8>)> {
    let bytes = read_capped(path)?;
    let control = parse_client_control(&bytes).map_err(|e| invalid(path, e))?;
    Ok((control, bytes))
}

/// A DTSControl file of the given leaf elements, in order, then `status` as a `StatusRecord`;
/// values are XML-escaped.
pub fn render_fields(fields: &[(&str, &str)], status: Option<&StatusRecord>) -> String {
    let mut out = String::from("<DTSControl>\r\n");
    for (name, value) in fields {
        out += &format!("  <{name}>{}</{name}>\r\n", escape(value));
    }
    if let Some(s) = status {
        out += &format!(
            "  <StatusRecord>\r\n    <DateTime>{}</DateTime>\r\n    <Event>{}</Event>\r\n    \
             <Status>{}</Status>\r\n    <StatusCode>{}</StatusCode>\r\n    \
             <Description>{}</Description>\r\n  </StatusRecord>\r\n",
            escape(&s.date_time),
            escape(&s.event),
            escape(&s.status),
            escape(&s.code),
            escape(&s.description)
        );
    }
    out + "</DTSControl>\r\n"
}

/// A control file as the MESH client rewrites it after a transfer: every leaf element of
/// `original` kept in order, `DTSId` set to `dts_id` (added if missing), any `StatusRecord`
/// replaced by `status`.
pub fn rewrite(
    original: &[u8],
    dts_id: &str,
    status: &StatusRecord,
) -> std::result::Result<String, MalformedControl> {
    let fields = elements(original, "DTSControl")?;
    let mut kept: Vec<(&str, &str)> = Vec::new();
    let mut has_id = false;
    for (name, value) in &fields {
        if name.contains('/') || name.eq_ignore_ascii_case("StatusRecord") {
            continue;
        }
        if name.eq_ignore_ascii_case("DTSId") {
            has_id = true;
            kept.push((name, dts_id));
        } else {
            kept.push((name, value));
        }
    }
    if !has_id {
        kept.push(("DTSId", dts_id));
    }
    Ok(render_fields(&kept, Some(status)))
}

fn escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The bytes of a small file, at most [`MAX_CTL_BYTES`].
fn read_capped(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::read(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_CTL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::read(path, e))?;
    if bytes.len() as u64 > MAX_CTL_BYTES {
        return Err(invalid(
            path,
            MalformedControl(format!("larger than {MAX_CTL_BYTES} bytes")),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ControlFile {
        parse_control(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn err(text: &str) -> String {
        match parse_control(text.as_bytes()) {
            Ok(c) => panic!("accepted {c:?}: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_what_render_writes() {
        let text = render(
            "X26ABC1",
            "X26OT154",
            "X26ABC1-231126-0001",
            "X26ABC1-231126-0001_0a1b2c3d",
        );
        assert_eq!(
            ok(&text),
            ControlFile {
                to_dts: "X26OT154".into(),
                workflow_id: WORKFLOW_ID.into(),
                subject: "X26ABC1-231126-0001".into(),
                local_id: "X26ABC1-231126-0001_0a1b2c3d".into(),
                from_dts: Some("X26ABC1".into()),
            }
        );
    }

    #[test]
    fn accepts_declaration_comments_entities_nested_blocks_and_lf() {
        let c = ok("\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- sent -->\n<DTSControl>\n\
             <Version>1.0</Version><MessageType>Data</MessageType>\n\
             <WorkflowId>SPINE_NTT_UPHOLDING</WorkflowId><From_DTS/>\n\
             <To_DTS> x26hc065 </To_DTS><Subject>s-1</Subject><LocalId>id_2</LocalId>\n\
             <StatusRecord><DateTime>20250227121034</DateTime><Event>TRANSFER</Event></StatusRecord>\n\
             <PartnerId></PartnerId><Note>a &amp; b</Note>\n</DTSControl>\n");
        assert_eq!(c.to_dts, "X26HC065");
        assert_eq!(c.from_dts, None);
        assert_eq!(c.local_id, "id_2");
    }

    #[test]
    fn rejects_malformed_files_with_a_reason() {
        let base = |to: &str, subject: &str, local: &str| {
            format!(
                "<DTSControl><WorkflowId>W</WorkflowId><To_DTS>{to}</To_DTS>\
                 <Subject>{subject}</Subject><LocalId>{local}</LocalId></DTSControl>"
            )
        };
        assert_eq!(ok(&base("X1", "s", "l")).workflow_id, "W");
        for (text, reason) in [
            (String::new(), "no <DTSControl>"),
            ("not xml".into(), "outside"),
            ("<Other></Other>".into(), "root element is <Other>"),
            ("<DTSControl>".into(), "never closed"),
            ("<DTSControl><To_DTS>X</DTSControl>".into(), "closes"),
            (base("", "s", "l"), "<To_DTS> is empty"),
            (base("X:1", "s", "l"), "To_DTS"),
            (base("X1", "a:b", "l"), "<Subject> must be"),
            (base("X1", "s", "l l"), "<LocalId> must be"),
            (base("X1", "s", &"l".repeat(301)), "<LocalId> must be"),
            (base("X1", "s&amp;", "l"), "<Subject> must be"),
            (base("X1", "s&nbsp;", "l"), "entity"),
            (
                "<DTSControl><WorkflowId>W</WorkflowId><To_DTS>X</To_DTS><Subject>s</Subject></DTSControl>".into(),
                "<LocalId> is missing",
            ),
            (
                base("X1", "s", "l").replace("<LocalId>", "<LocalId>a</LocalId><LocalId>"),
                "appears twice",
            ),
            (
                base("X1", "s", "l").replace("<DTSControl>", "<DTSControl><MessageType>Report</MessageType>"),
                "MessageType",
            ),
            (
                base("X1", "s", "l").replace("<DTSControl>", "<DTSControl><Version>2</Version>"),
                "Version",
            ),
            (base("X1", "s", "l") + "<DTSControl/>", "more than one root"),
            (base("X1", "s", "l") + "junk", "after the end"),
            ("<!DOCTYPE x><DTSControl/>".into(), "DOCTYPE"),
        ] {
            let e = err(&text);
            assert!(e.contains(reason), "{e:?} lacks {reason:?} for {text}");
        }
        assert!(parse_control(b"\xff\xfe<").is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let sample = render("X26ABC1", "X26OT154", "s", "l");
        let bytes = sample.as_bytes();
        for cut in 0..bytes.len() {
            let _ = parse_control(&bytes[..cut]);
            let mut flipped = bytes.to_vec();
            flipped[cut] = b"<>/&?!- x\0"[cut % 10];
            let _ = parse_control(&flipped);
        }
    }

    #[test]
    fn read_control_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ctl");
        std::fs::write(&path, "<DTSControl></DTSControl>").unwrap();
        let e = read_control(&path).unwrap_err().to_string();
        assert!(
            e.contains("a.ctl") && e.contains("<To_DTS> is missing"),
            "{e}"
        );
        std::fs::write(&path, vec![b' '; MAX_CTL_BYTES as usize + 1]).unwrap();
        assert!(read_control(&path)
            .unwrap_err()
            .to_string()
            .contains("larger"));
        assert!(read_control(&dir.path().join("none.ctl")).is_err());
    }

    #[test]
    fn client_control_files_are_read_leniently() {
        // the 2010-era example of the client user guide, with a space inside a tag
        let old = "<DTSControl>\n<Version>1.0</Version> <AddressType>DTS</AddressType> \
            <MessageType>Data</MessageType>\n<From_DTS>X26ABC1</From_DTS> <To_DTS>X26OT154</To_DTS> \
            <Subject>s</Subject> <LocalId>l</LocalId>\n<DTSId>DTS-20101216101210-927652</DTSId> \
            <IsCompressed >Y</IsCompressed >\n<StatusRecord> <DateTime>20101216102012</DateTime> \
            <Event>Transfer to DTS Server</Event>\n<Status>Success</Status> <StatusCode>0</StatusCode> \
            <Description></Description> </StatusRecord>\n</DTSControl>";
        let c = parse_client_control(old.as_bytes()).unwrap();
        assert_eq!(c.dts_id.as_deref(), Some("DTS-20101216101210-927652"));
        let s = c.status.unwrap();
        assert_eq!(
            (s.event.as_str(), s.status.as_str(), s.code.as_str()),
            ("TRANSFER", "SUCCESS", "00")
        );
        assert!(!s.is_error() && !s.is_delay());
        // the 2025 collect report: lower-case element names and an unknown code kept verbatim
        let report = "<?xml version=\"1.0\"?><dtscontrol_wrong/>";
        assert!(parse_client_control(report.as_bytes()).is_err());
        let c = parse_client_control(
            b"<DTSControl><messagetype>report</messagetype><localid>L1</localid>\
              <StatusRecord><Event>send</Event><Status>error</Status><StatusCode> epl-152 </StatusCode>\
              <Description>Invalid NHS Number</Description></StatusRecord></DTSControl>",
        )
        .unwrap();
        assert_eq!(c.message_type.as_deref(), Some("REPORT"));
        assert_eq!(c.local_id.as_deref(), Some("L1"));
        let s = c.status.unwrap();
        assert!(s.is_error());
        assert_eq!(s.code, "EPL-152");
        assert_eq!(s.readings(), ["DTS specification: invalid NHS number"]);
        assert!(
            s.describe()
                .contains("SEND ERROR EPL-152 \"Invalid NHS Number\""),
            "{}",
            s.describe()
        );
        let unknown = StatusRecord::now("SEND", "ERROR", "99", "");
        assert!(unknown.is_error() && unknown.readings().is_empty());
        assert!(StatusRecord::now("Transfer", "Success", "5", "").is_delay());
        // 06 reads differently in the two tables: both are shown
        let r = StatusRecord::now("TRANSFER", "ERROR", "06", "").readings();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(normalise_code("007"), "07");
    }

    #[test]
    fn a_rewritten_control_file_keeps_its_fields_and_gains_the_id_and_status() {
        let original = render("X26ABC1", "X26OT154", "s-1", "l_1");
        let status = StatusRecord::now(
            "TRANSFER",
            "SUCCESS",
            "00",
            "Data Transfer success <ok> & done",
        );
        let text = rewrite(original.as_bytes(), "20250227121034456686_DD8A76", &status).unwrap();
        // still a valid send control file, and read back the same
        assert_eq!(ok(&text), ok(&original));
        let c = parse_client_control(text.as_bytes()).unwrap();
        assert_eq!(c.dts_id.as_deref(), Some("20250227121034456686_DD8A76"));
        assert_eq!(c.status.as_ref(), Some(&status));
        // rewriting again replaces, not adds
        let again = rewrite(text.as_bytes(), "X", &status).unwrap();
        assert_eq!(again.matches("<StatusRecord>").count(), 1);
        assert_eq!(again.matches("<DTSId>").count(), 1);
    }

    #[test]
    fn elements_read_repeated_blocks() {
        let cfg = b"<MESHConfig><PollPeriod>1</PollPeriod>\
            <Client><ClientIdentity>A1</ClientIdentity><InterfaceRoot>/x/a</InterfaceRoot></Client>\
            <Client><InterfaceRoot>/x/b</InterfaceRoot><ClientIdentity>B2</ClientIdentity></Client>\
            </MESHConfig>";
        let f = elements(cfg, "MESHConfig").unwrap();
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "PollPeriod",
                "Client/ClientIdentity",
                "Client/InterfaceRoot",
                "Client",
                "Client/InterfaceRoot",
                "Client/ClientIdentity",
                "Client"
            ]
        );
        assert!(elements(cfg, "DTSControl").is_err());
    }
}
