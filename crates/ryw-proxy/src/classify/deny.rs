//! Functions a statement must not call on a follower, even inside an
//! otherwise read-only `SELECT`. See the module docs of `classify` for why
//! the 25006 safety net is not enough for them.

/// The deny-list. An entry is a function name, or a pattern with one `*`
/// standing for any run of characters. A call matches on the last
/// identifier of its name (`pg_catalog.nextval` is `nextval`), compared
/// case-insensitively whether quoted or not: PostgreSQL would tell
/// `"NextVal"` from `nextval`, but sending a user function so named to the
/// leader costs nothing, and it is the safe side.
pub const DENY: &[&str] = &[
    // Sequences: nextval writes (25006 on a standby, a wasted round trip);
    // currval and lastval read state of the leader's session (55000 on a
    // standby, which the safety net does not catch).
    "nextval",
    "setval",
    "currval",
    "lastval",
    // Advisory locks succeed on a standby: the lock would be taken on the
    // wrong server.
    "pg_advisory_*",
    "pg_try_advisory_*",
    // Session state and notifications.
    "set_config",
    "pg_notify",
    // Transaction ids and WAL positions of the leader.
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_create_restore_point",
    // Server administration, replication slots and base backups: they act
    // on whichever node runs them, and several succeed on a standby.
    "pg_cancel_backend",
    "pg_terminate_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_stat_reset*",
    "pg_create_*_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_*_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_*",
    "pg_logical_emit_message",
    "pg_replication_origin_*",
    "pg_import_system_collations",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_backup_*",
    "pg_start_backup",
    "pg_stop_backup",
    // Large objects (descriptors live in the leader's session), also the
    // two server-side functions without an underscore.
    "lo_*",
    "loread",
    "lowrite",
    // Connections to other servers, which may write there.
    "dblink*",
    // "Am I the primary?": drivers and tools ask this to find the writable
    // server; the proxy stands for the leader, so the leader answers.
    "pg_is_in_recovery",
];

/// The deny-list entry that `name` (the last identifier of a function's
/// name, unquoted) matches.
pub fn entry(name: &str) -> Option<&'static str> {
    DENY.iter().copied().find(|pattern| matches(pattern, name))
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => name.eq_ignore_ascii_case(pattern),
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name
                    .get(..prefix.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
                && name
                    .get(name.len() - suffix.len()..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_their_prefix_and_suffix() {
        assert_eq!(entry("pg_advisory_xact_lock_shared"), Some("pg_advisory_*"));
        assert_eq!(
            entry("pg_create_logical_replication_slot"),
            Some("pg_create_*_replication_slot")
        );
        assert_eq!(
            entry("PG_CREATE_PHYSICAL_REPLICATION_SLOT"),
            Some("pg_create_*_replication_slot")
        );
        assert_eq!(entry("pg_create_replication_slot"), None);
        assert_eq!(entry("dblink_exec"), Some("dblink*"));
        assert_eq!(entry("NEXTVAL"), Some("nextval"));
        assert_eq!(entry("nextval2"), None);
        assert_eq!(entry("pg_advisory"), None);
        assert_eq!(entry("lower"), None);
        assert_eq!(entry("é"), None);
    }
}
