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
    let fields = parse_elements(text)?;
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

/// The direct children of `<DTSControl>` as (name, decoded trimmed text), in file order.
fn parse_elements(text: &str) -> std::result::Result<Vec<(String, String)>, MalformedControl> {
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
    while let Some(lt) = rest.find('<') {
        let between = &rest[..lt];
        if stack.len() == 2 {
            leaf_text.push_str(between);
        } else if stack.len() < 3 && !between.trim().is_empty() {
            let where_ = if stack.is_empty() {
                "outside <DTSControl>"
            } else {
                "between the elements of <DTSControl>"
            };
            return bad(format!("text {where_} at byte {offset}"));
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
                    push_field(&mut fields, name, value)?;
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
                        if name != "DTSControl" {
                            return bad(format!(
                                "the root element is <{}>, not <DTSControl>",
                                clip(name)
                            ));
                        }
                        root_seen = true;
                        if self_closing {
                            return bad("<DTSControl/> is empty");
                        }
                        stack.push(name.to_owned());
                    }
                    1 => {
                        has_children = false;
                        leaf_text.clear();
                        if self_closing {
                            push_field(&mut fields, name, String::new())?;
                        } else {
                            stack.push(name.to_owned());
                        }
                    }
                    _ => {
                        // a child of a depth-1 element (e.g. StatusRecord/DateTime): ignored
                        has_children = true;
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
            "text after the end of the root element"
        } else {
            "text outside <DTSControl>"
        });
    }
    if let Some(open) = stack.last() {
        return bad(format!("<{open}> is never closed"));
    }
    if !root_seen {
        return bad("no <DTSControl> element");
    }
    Ok(fields)
}

fn push_field(
    fields: &mut Vec<(String, String)>,
    name: &str,
    value: String,
) -> std::result::Result<(), MalformedControl> {
    if fields.iter().any(|(n, _)| n == name) {
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
}
