//! The servers' configuration files, written by `up`, `failover` and
//! `rejoin`: `ryw.conf` (the same on every node: `pg_basebackup` and
//! `pg_rewind` copy it), `pg_hba.conf`, and the per-node settings a standby
//! keeps in `postgresql.auto.conf` (port, name, whom it follows, its slot,
//! its replay delay).
//!
//! A node's replication slot on the leader is named after the node
//! (`follower1`, `leader`), so whichever node leads, `pg_replication_slots`
//! says whose WAL it keeps.

use crate::ClusterError;
use crate::runas::OsUser;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `pg_hba.conf` of every node.
pub(crate) const HBA: &str = "\
# ryw: trust on loopback only (a local, throwaway cluster)
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
";

/// The folder holding every node's Unix socket: `DIR/pg/sockets`.
///
/// Not the data folder: `pg_rewind` copies every file of the source's data
/// folder and fails on a socket ("could not open file \".s.PGSQL.…\": No
/// such device or address"), and a copied socket lock file would be stale.
pub fn socket_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("pg").join("sockets")
}

/// The replication slot a node uses on whichever node leads: its own name.
pub fn slot_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `primary_conninfo` of a standby that follows the node on `leader_port`;
/// `application_name` is the standby's name, so it shows in
/// `pg_stat_replication` and in `synchronous_standby_names`.
pub fn primary_conninfo(leader_port: u16, standby: &str) -> String {
    format!("host=127.0.0.1 port={leader_port} user=postgres application_name={standby}")
}

/// `synchronous_standby_names` for these standbys: `ANY 1 ("a", "b")`, or
/// empty (asynchronous) when there is none.
pub fn sync_standby_names<S: AsRef<str>>(standbys: &[S]) -> String {
    if standbys.is_empty() {
        return String::new();
    }
    let names: Vec<String> = standbys
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref().replace('"', "\"\"")))
        .collect();
    format!("ANY 1 ({})", names.join(", "))
}

/// `ryw.conf`, included by every node's `postgresql.conf`. The port and
/// name here are the first leader's; every other node overrides them in its
/// `postgresql.auto.conf`.
pub(crate) fn ryw_conf(port: u16, sockets: &Path, shared_buffers: &str) -> String {
    format!(
        "# written by `ryw cluster up`\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         cluster_name = 'leader'\n\
         max_connections = 300\n\
         shared_buffers = '{shared_buffers}'\n\
         wal_level = replica\n\
         max_wal_senders = 16\n\
         max_replication_slots = 16\n\
         # a follower that is down must not fill the disk with retained WAL\n\
         max_slot_wal_keep_size = '1GB'\n\
         # followers are cloned in parallel, and each clone's checkpoint may\n\
         # recycle a segment another clone still needs before its slot holds it\n\
         # (\"requested WAL segment ... has already been removed\"); also what a\n\
         # rewound node streams from before its slot existed\n\
         wal_keep_size = '128MB'\n\
         # pg_rewind (ryw cluster rejoin) needs hint-bit changes in the WAL and\n\
         # full-page images\n\
         wal_log_hints = on\n\
         full_page_writes = on\n\
         # a commit waits for a synchronous standby's flush when\n\
         # synchronous_standby_names is set (ryw cluster up --sync)\n\
         synchronous_commit = on\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         wal_receiver_status_interval = '1s'\n\
         wal_retrieve_retry_interval = '500ms'\n\
         log_line_prefix = '%m [%p] %q%a '\n\
         log_checkpoints = off\n",
        sockets.display()
    )
}

/// What a standby keeps in its `postgresql.auto.conf`.
pub(crate) fn standby_settings(
    name: &str,
    port: u16,
    sockets: &Path,
    leader_port: u16,
    delay: Duration,
) -> Vec<(&'static str, String)> {
    vec![
        ("port", port.to_string()),
        ("unix_socket_directories", sockets.display().to_string()),
        ("cluster_name", name.to_string()),
        ("primary_conninfo", primary_conninfo(leader_port, name)),
        ("primary_slot_name", slot_name(name)),
        (
            "recovery_min_apply_delay",
            format!("{}ms", delay.as_millis()),
        ),
    ]
}

/// Sets these keys in `DATA/postgresql.auto.conf` of a stopped server (or
/// one that reloads next), replacing earlier lines for the same keys, in
/// the format `ALTER SYSTEM` writes. `fresh` starts from an empty file.
pub(crate) fn set_auto_conf(
    user: &OsUser,
    data: &Path,
    settings: &[(&str, String)],
    fresh: bool,
) -> Result<(), ClusterError> {
    let path = data.join("postgresql.auto.conf");
    let old = if fresh {
        String::new()
    } else {
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    std::fs::write(&path, merge_auto_conf(&old, settings))
        .map_err(ClusterError::io("writing", &path))?;
    user.own(&path)
}

fn merge_auto_conf(old: &str, settings: &[(&str, String)]) -> String {
    let mut out = String::new();
    if old.trim().is_empty() {
        out.push_str(
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n",
        );
    }
    for line in old.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if !settings.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (k, v) in settings {
        out.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    out
}

/// Writes a file and hands it to the servers' OS user.
pub(crate) fn write_as(user: &OsUser, path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(ClusterError::io("writing", path))?;
    user.own(path)
}

/// Appends to a file and hands it to the servers' OS user.
pub(crate) fn append_as(user: &OsUser, path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(ClusterError::io("opening", path))?;
    f.write_all(text.as_bytes())
        .map_err(ClusterError::io("appending to", path))?;
    user.own(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_conf_keys_are_replaced_not_repeated() {
        let old = "# Do not edit this file manually!\n\
                   primary_conninfo = 'user=postgres port=1'\n\
                   primary_slot_name = 'slot1'\n\
                   PORT = '25433'\n\
                   recovery_min_apply_delay = '100ms'\n";
        let new = merge_auto_conf(
            old,
            &[
                ("primary_conninfo", primary_conninfo(25434, "follower1")),
                ("primary_slot_name", slot_name("follower1")),
                ("port", "25433".into()),
            ],
        );
        assert_eq!(new.matches("primary_conninfo").count(), 1, "{new}");
        assert_eq!(new.to_lowercase().matches("port =").count(), 1, "{new}");
        assert!(new.contains("port=25434"), "{new}");
        assert!(new.contains("primary_slot_name = 'follower1'"), "{new}");
        assert!(
            new.contains("recovery_min_apply_delay = '100ms'"),
            "kept: {new}"
        );
        assert!(new.starts_with("# Do not edit"), "{new}");
    }

    #[test]
    fn a_fresh_auto_conf_has_the_header_and_quotes_values() {
        let new = merge_auto_conf("", &[("cluster_name", "it's".into())]);
        assert!(new.starts_with("# Do not edit"), "{new}");
        assert!(new.ends_with("cluster_name = 'it''s'\n"), "{new}");
    }

    #[test]
    fn synchronous_standby_names_lists_quoted_names_or_nothing() {
        assert_eq!(
            sync_standby_names(&["follower1", "leader"]),
            r#"ANY 1 ("follower1", "leader")"#
        );
        assert_eq!(sync_standby_names::<&str>(&[]), "");
    }

    #[test]
    fn slots_are_named_after_their_nodes() {
        assert_eq!(slot_name("follower2"), "follower2");
        assert_eq!(slot_name("Leader-1"), "leader_1");
    }
}
