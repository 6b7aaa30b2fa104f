//! Finding the `.dat` + `.ctl` pairs to send, every control file read and checked first.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use processor::ctl::{read_control, ControlFile};
use serde::Serialize;

use crate::error::{usage, Error};

/// A `.dat` and the `.ctl` beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// The data file.
    pub dat: PathBuf,
    /// Its control file.
    pub ctl: PathBuf,
    /// What the control file says.
    pub control: ControlFile,
}

/// The `.dat` + `.ctl` pairs named by `inputs`: a directory stands for every pair in it
/// (other files, such as `summary.json`, and hidden temporary files are ignored); a `.dat` or
/// `.ctl` file stands for itself and its partner with the same stem. Every control file is read
/// and checked; a `.dat` without its `.ctl` (or the reverse), a malformed `.ctl`, or two pairs
/// with the same LocalId is an error, so nothing is sent from a half-valid set. Sorted by path.
pub fn find_pairs(inputs: &[PathBuf]) -> Result<Vec<Pair>, Error> {
    let mut stems: Vec<PathBuf> = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| processor::Error::read(input, e))?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|e| processor::Error::read(input, e))?;
            for entry in entries {
                let path = entry.map_err(|e| processor::Error::read(input, e))?.path();
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !hidden && matches!(extension(&path), Some("dat" | "ctl")) {
                    stems.push(path.with_extension(""));
                }
            }
        } else {
            match extension(input) {
                Some("dat" | "ctl") => stems.push(input.with_extension("")),
                _ => {
                    return Err(usage(format!(
                        "{}: expected a directory, a .dat or a .ctl file",
                        input.display()
                    )))
                }
            }
        }
    }
    stems.sort();
    stems.dedup();
    let mut pairs = Vec::with_capacity(stems.len());
    let mut local_ids = HashSet::new();
    for stem in stems {
        let (dat, ctl) = (stem.with_extension("dat"), stem.with_extension("ctl"));
        for (have, missing) in [(&dat, &ctl), (&ctl, &dat)] {
            if !missing.is_file() {
                return Err(usage(format!(
                    "{} has no partner {}",
                    have.display(),
                    missing.display()
                )));
            }
        }
        let control = read_control(&ctl)?;
        if !local_ids.insert(control.local_id.clone()) {
            return Err(usage(format!(
                "{}: LocalId {} is used by another pair; replies could not be told apart",
                ctl.display(),
                control.local_id
            )));
        }
        pairs.push(Pair { dat, ctl, control });
    }
    Ok(pairs)
}

fn extension(path: &Path) -> Option<&str> {
    path.extension().and_then(|e| e.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use processor::ctl::render as control_file;

    #[test]
    fn pairs_are_found_in_directories_and_from_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (stem, local) in [("b", "lid_b"), ("a", "lid_a")] {
            std::fs::write(d.join(format!("{stem}.dat")), b"9694116538,\r\n").unwrap();
            std::fs::write(
                d.join(format!("{stem}.ctl")),
                control_file("X26ABC1", "X26OT154", local, local),
            )
            .unwrap();
        }
        std::fs::write(d.join("summary.json"), b"{}").unwrap();
        std::fs::write(d.join(".c.dat.tmp"), b"").unwrap();
        let pairs = find_pairs(&[d.to_path_buf()]).unwrap();
        let ids: Vec<_> = pairs.iter().map(|p| p.control.local_id.as_str()).collect();
        assert_eq!(ids, ["lid_a", "lid_b"]);
        let same = find_pairs(&[d.join("a.ctl"), d.join("a.dat"), d.join("b.dat")]).unwrap();
        assert_eq!(same, pairs);
        assert!(find_pairs(&[d.join("summary.json")]).is_err());

        std::fs::write(d.join("c.dat"), b"").unwrap();
        let e = find_pairs(&[d.to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("c.dat has no partner"), "{e}");
        std::fs::write(
            d.join("c.ctl"),
            control_file("X26ABC1", "X26OT154", "s", "lid_a"),
        )
        .unwrap();
        let e = find_pairs(&[d.to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("LocalId lid_a is used by another pair"), "{e}");
        std::fs::write(d.join("c.ctl"), "<DTSControl/>").unwrap();
        let e = find_pairs(&[d.to_path_buf()]).unwrap_err().to_string();
        assert!(e.contains("c.ctl") && e.contains("malformed"), "{e}");
    }
}
