//! Node- and session-local state: what a read must ask the node where the
//! client's session lives (the leader), because a follower would answer
//! about itself. Statistics, locks, backends, the session's prepared
//! statements and cursors, recovery state, server files and settings
//! views: a follower has its own, and none of the client's.
//!
//! `inet_server_addr()`, `inet_server_port()` and `current_setting()` are
//! not on the list: they answer for the server that ran the statement,
//! which is what a client of any load balancer asks them for (and how
//! ryw's bench, and Pgpool-II's beside it, tell where a read ran:
//! `current_setting('transaction_read_only')` is `on` on a standby).
//! `/* ryw:leader */` asks the leader's. `SHOW` of the settings that tell a
//! standby from the primary ([`SETTINGS`]) goes to the leader: drivers ask
//! that to find the writable server, and the proxy stands for it.

/// Relations (views) whose rows are the serving node's own.
pub const RELATIONS: &[&str] = &[
    "pg_locks",
    "pg_stat_*",
    "pg_statio_*",
    "pg_prepared_statements",
    "pg_prepared_xacts",
    "pg_cursors",
    "pg_settings",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_replication_slots",
    "pg_replication_origin_status",
    "pg_backend_memory_contexts",
    "pg_shmem_allocations",
    // A sequence's state on a standby is what was last logged (up to 32
    // values ahead), not the leader's.
    "pg_sequences",
];

/// Functions whose answer is the serving node's own (or the session's).
pub const FUNCTIONS: &[&str] = &[
    "pg_stat_*",
    "pg_backend_pid",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_isolation_test_session_is_blocked",
    "pg_trigger_depth",
    "pg_listening_channels",
    "pg_notification_queue_usage",
    "pg_my_temp_schema",
    "pg_is_other_temp_schema",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_current_logfile",
    "pg_last_wal_*",
    "pg_last_xact_replay_timestamp",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "pg_ls_*",
    "pg_stat_file",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_current_snapshot",
    "txid_current_snapshot",
    "pg_xact_status",
    "txid_status",
    "pg_control_*",
    "pg_show_all_settings",
    "pg_show_all_file_settings",
    "pg_hba_file_rules",
    "pg_get_replication_slots",
    "pg_prepared_statement",
    "pg_prepared_xact",
    "pg_cursor",
    "pg_lock_status",
    "pg_get_shmem_allocations",
    "pg_get_backend_memory_contexts",
    "pg_log_backend_memory_contexts",
    "pg_get_keywords",
    "pg_sequence_last_value",
];

/// The node's statistics (a subset of the above): a session that reads
/// them keeps its reads on the leader from then on, so the statistics it
/// reads count its own reads.
pub const STATISTICS: &[&str] = &["pg_stat_*", "pg_statio_*"];

/// Settings whose value tells a standby from the primary: `SHOW` of these
/// asks the leader.
pub const SETTINGS: &[&str] = &[
    "transaction_read_only",
    "default_transaction_read_only",
    "in_hot_standby",
    "all",
];

/// Whether `name` (a relation's or function's last identifier) matches an
/// entry of `list` (`*` stands for any run of characters at the end).
pub fn listed(list: &[&str], name: &str) -> bool {
    list.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => name
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
        None => name.eq_ignore_ascii_case(pattern),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_names_and_prefixes() {
        assert!(listed(RELATIONS, "pg_locks"));
        assert!(listed(RELATIONS, "PG_STAT_ACTIVITY"));
        assert!(listed(RELATIONS, "pg_statio_user_tables"));
        assert!(!listed(RELATIONS, "pg_class"));
        assert!(listed(FUNCTIONS, "pg_stat_get_numscans"));
        assert!(listed(FUNCTIONS, "pg_backend_pid"));
        assert!(!listed(FUNCTIONS, "pg_backend"));
        assert!(!listed(FUNCTIONS, "inet_server_port"));
        assert!(!listed(FUNCTIONS, "lower"));
    }
}
