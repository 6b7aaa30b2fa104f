//! `meshclient.cfg`: the MESH client's configuration, one `<Client>` block per mailbox, each
//! with its folder root (`ClientIdentity` → `InterfaceRoot`, `mesh-client-folders.md` §6).

use std::path::{Path, PathBuf};

use processor::ctl::elements;

use crate::error::{usage, Error};

/// Every mailbox in a `meshclient.cfg` and its folder root, in file order. Only the two
/// elements are read; secrets in the file are never kept.
pub fn mailboxes(bytes: &[u8]) -> Result<Vec<(String, PathBuf)>, String> {
    let fields = elements(bytes, "MESHConfig").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let (mut id, mut root): (Option<&str>, Option<&str>) = (None, None);
    for (name, value) in &fields {
        if name.eq_ignore_ascii_case("Client/ClientIdentity") {
            id = Some(value);
        } else if name.eq_ignore_ascii_case("Client/InterfaceRoot") {
            root = Some(value);
        } else if name.eq_ignore_ascii_case("Client") {
            match (id.take(), root.take()) {
                (Some(i), Some(r)) if !i.is_empty() && !r.is_empty() => {
                    out.push((i.to_owned(), PathBuf::from(r)))
                }
                _ => return Err("a <Client> block lacks ClientIdentity or InterfaceRoot".into()),
            }
        }
    }
    Ok(out)
}

/// The folder root of `mailbox` (ignoring case) in the `meshclient.cfg` at `path`.
pub fn interface_root(path: &Path, mailbox: &str) -> Result<PathBuf, Error> {
    let bytes = std::fs::read(path).map_err(|e| processor::Error::read(path, e))?;
    let all = mailboxes(&bytes).map_err(|e| {
        usage(format!(
            "{}: not a usable meshclient.cfg: {e}",
            path.display()
        ))
    })?;
    let mut found = all
        .iter()
        .filter(|(id, _)| id.eq_ignore_ascii_case(mailbox));
    match (found.next(), found.next()) {
        (Some((_, root)), None) => Ok(root.clone()),
        (Some(_), Some(_)) => Err(usage(format!(
            "{}: mailbox {mailbox} has more than one <Client> block",
            path.display()
        ))),
        (None, _) => Err(usage(format!(
            "{}: no <Client> block for mailbox {mailbox} (it has: {}); give --mailbox as one of them",
            path.display(),
            all.iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MESHConfig>
  <PrimaryURL>https://mesh-sync.spineservices.nhs.uk</PrimaryURL>
  <KeyStorePassword>secret</KeyStorePassword>
  <PollPeriod>30</PollPeriod>
  <Client>
    <ClientIdentity>X26ABC1</ClientIdentity>
    <ClientAuthentication>pw1</ClientAuthentication>
    <MailboxType>MESH</MailboxType>
    <InterfaceRoot>/mesh/data/gp2gp</InterfaceRoot>
    <SaveSent>Y</SaveSent>
  </Client>
  <Client>
    <InterfaceRoot>/mesh/data/second-box</InterfaceRoot>
    <ClientIdentity>X26ABC2</ClientIdentity>
  </Client>
</MESHConfig>
"#;

    #[test]
    fn two_mailboxes_each_with_its_root() {
        assert_eq!(
            mailboxes(CFG.as_bytes()).unwrap(),
            [
                ("X26ABC1".to_string(), PathBuf::from("/mesh/data/gp2gp")),
                (
                    "X26ABC2".to_string(),
                    PathBuf::from("/mesh/data/second-box")
                ),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meshclient.cfg");
        std::fs::write(&path, CFG).unwrap();
        assert_eq!(
            interface_root(&path, "x26abc2").unwrap(),
            PathBuf::from("/mesh/data/second-box")
        );
        let e = interface_root(&path, "X26ZZZ9").unwrap_err().to_string();
        assert!(
            e.contains("no <Client> block for mailbox X26ZZZ9") && e.contains("X26ABC1, X26ABC2"),
            "{e}"
        );
        assert!(!e.contains("secret") && !e.contains("pw1"), "{e}");
        let broken = CFG.replace("<ClientIdentity>X26ABC2</ClientIdentity>", "");
        assert!(mailboxes(broken.as_bytes()).is_err());
        assert!(mailboxes(b"<DTSControl/>").is_err());
    }
}
