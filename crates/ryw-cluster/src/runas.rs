//! Which OS user runs the servers.
//!
//! `postgres` refuses to run as root. When ryw runs as root it creates the
//! data folders for, and starts the servers as, the `postgres` OS user (or
//! `--os-user`); as a normal user it runs them as that user.

use crate::ClusterError;
use nix::unistd::{Gid, Uid, User, chown};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The OS user that owns the data folders and runs `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// Login name, saved in `cluster.json` so `down` can act as the same user.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
    /// True when we are root and must switch to `uid`/`gid` for the servers.
    pub switch: bool,
}

impl OsUser {
    /// Resolves the user: `requested` (default `postgres`) when we are root,
    /// the current user otherwise.
    pub fn resolve(requested: Option<&str>) -> Result<OsUser, ClusterError> {
        let me = Uid::effective();
        if me.is_root() {
            let name = requested.unwrap_or("postgres");
            let user = User::from_name(name)
                .map_err(|e| ClusterError::OsUser(format!("looking up OS user {name:?}: {e}")))?
                .ok_or_else(|| {
                    ClusterError::OsUser(format!(
                        "running as root, the servers must run as another user, but OS user {name:?} does not exist; \
                         install PostgreSQL (`apt-get install postgresql` creates `postgres`) or pass --os-user NAME"
                    ))
                })?;
            if user.uid.is_root() {
                return Err(ClusterError::OsUser(format!(
                    "OS user {name:?} is root, and postgres refuses to run as root; pass --os-user with an unprivileged user"
                )));
            }
            Ok(OsUser {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
                switch: true,
            })
        } else {
            let user = User::from_uid(me).ok().flatten().ok_or_else(|| {
                ClusterError::OsUser(format!("cannot look up the current user (uid {me})"))
            })?;
            if let Some(req) = requested
                && req != user.name
            {
                return Err(ClusterError::OsUser(format!(
                    "only root can run the servers as another user ({req:?}); drop --os-user or run as root"
                )));
            }
            Ok(OsUser {
                name: user.name,
                uid: me.as_raw(),
                gid: user.gid.as_raw(),
                switch: false,
            })
        }
    }

    /// A command that runs as this user, in a neutral folder and without the
    /// caller's libpq environment leaking into it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
            // The caller's HOME may be unreadable for this user (e.g. /root).
            cmd.env("HOME", "/tmp");
        }
        for var in [
            "PGDATA",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "PGPASSWORD",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir("/");
        cmd
    }

    /// Hands `path` to this user (no-op when we do not switch).
    pub fn own(&self, path: &Path) -> Result<(), ClusterError> {
        if self.switch {
            chown(
                path,
                Some(Uid::from_raw(self.uid)),
                Some(Gid::from_raw(self.gid)),
            )
            .map_err(|e| ClusterError::Io {
                what: "chown",
                path: path.to_path_buf(),
                source: std::io::Error::from(e),
            })?;
        }
        Ok(())
    }

    /// Checks that this user can reach `dir` (every parent searchable), so a
    /// root-owned `0700` home folder gives a clear error, not a cryptic one
    /// from `initdb`.
    pub fn check_reachable(&self, dir: &Path) -> Result<(), ClusterError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if !self.switch {
            return Ok(());
        }
        for anc in dir.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(anc) else {
                continue;
            };
            let mode = meta.permissions().mode();
            let ok = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return Err(ClusterError::OsUser(format!(
                    "OS user {:?} cannot enter {} (mode {:o}), so it cannot use {}; choose a --dir outside it \
                     or `chmod o+x {}`",
                    self.name,
                    anc.display(),
                    mode & 0o777,
                    dir.display(),
                    anc.display()
                )));
            }
        }
        Ok(())
    }
}
