//! Finding the PostgreSQL server binaries.
//!
//! Order: an explicit folder (`--pg-bin`), the `PG_BIN` environment variable,
//! `pg_config --bindir`, the folder of an `initdb` on `PATH`, then the highest
//! `/usr/lib/postgresql/*/bin` (Debian keeps the server binaries there, off
//! `PATH`). A folder counts only if it holds `initdb`, `pg_ctl`,
//! `pg_basebackup` and `postgres`.

use crate::ClusterError;
use std::path::{Path, PathBuf};
use std::process::Command;

const NEEDED: [&str; 4] = ["initdb", "pg_ctl", "pg_basebackup", "postgres"];

/// Returns the folder holding the PostgreSQL server binaries.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    let mut searched = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        // An explicit folder is the only candidate: silently falling back
        // would start a different version than the user asked for.
        return if complete(p) {
            Ok(p.to_path_buf())
        } else {
            Err(ClusterError::PgBinariesMissing {
                searched: format!("--pg-bin {}", p.display()),
            })
        };
    }
    if let Some(p) = std::env::var_os("PG_BIN") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.extend(debian_dirs(Path::new("/usr/lib/postgresql")));
    for c in candidates {
        if complete(&c) {
            return Ok(c);
        }
        searched.push(c.display().to_string());
    }
    searched.dedup();
    Err(ClusterError::PgBinariesMissing {
        searched: summarise(&searched),
    })
}

fn summarise(searched: &[String]) -> String {
    if searched.len() <= 6 {
        searched.join(", ")
    } else {
        format!(
            "{}, … ({} folders)",
            searched[..6].join(", "),
            searched.len()
        )
    }
}

fn complete(dir: &Path) -> bool {
    NEEDED.iter().all(|b| dir.join(b).is_file())
}

/// `/usr/lib/postgresql/<major>/bin`, highest major first.
fn debian_dirs(root: &Path) -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    majors.sort_by_key(|m| std::cmp::Reverse(m.0));
    majors.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_folder_without_binaries_names_the_package_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let err = find(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("apt-get install postgresql"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn debian_folders_are_tried_highest_major_first() {
        let root = tempfile::tempdir().unwrap();
        for m in ["13", "15", "9", "notaversion"] {
            std::fs::create_dir_all(root.path().join(m).join("bin")).unwrap();
        }
        let dirs = debian_dirs(root.path());
        assert_eq!(dirs[0], root.path().join("15/bin"));
        assert_eq!(dirs[1], root.path().join("13/bin"));
        assert_eq!(dirs.len(), 3);
    }
}
