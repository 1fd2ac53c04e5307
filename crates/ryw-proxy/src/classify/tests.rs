//! Table-driven tests of [`classify`], and property tests of the cache and of
//! hostile input.

use super::*;

fn why(sql: &str) -> &'static str {
    classify(sql).why
}

#[test]
fn provable_reads_go_to_a_follower() {
    let twenty = "SELECT a.aid, a.abalance, b.bbalance, t.tbalance,\n  coalesce(h.delta, 0) AS last_delta,\n  CASE WHEN a.abalance > 0 THEN 'credit' ELSE 'debit' END AS kind\nFROM pgbench_accounts a\nJOIN pgbench_branches b ON b.bid = a.bid\nJOIN pgbench_tellers t ON t.bid = a.bid\nLEFT JOIN LATERAL (\n  SELECT delta FROM pgbench_history h\n  WHERE h.aid = a.aid\n  ORDER BY h.mtime DESC\n  LIMIT 1\n) h ON true\nWHERE a.aid = ANY($1::int[])\n  AND a.bid = $2\n  AND t.tid IN (SELECT tid FROM pgbench_tellers WHERE bid = $2)\n  AND a.filler IS NOT NULL\nGROUP BY a.aid, a.abalance, b.bbalance, t.tbalance, h.delta\nHAVING count(*) > 0\nORDER BY a.aid\nLIMIT 100 OFFSET $3";
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "select 1",
        "SELECT 1;;",
        "  -- a leading comment\n SELECT 1",
        "/* outer /* nested */ still outer */ SELECT 1",
        "SELECT 1 -- ryw:leader (not leading: no hint)",
        "SELECT 1 /* ; DELETE FROM t */",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
        "VALUES (1)",
        "VALUES (1), (2)",
        "(SELECT 1)",
        "TABLE t",
        "table public.t",
        "TABLE ONLY t",
        "SELECT 1 UNION ALL TABLE t",
        "SELECT * FROM (TABLE t) s",
        "EXPLAIN TABLE t",
        "WITH x AS (SELECT 1) TABLE x",
        "SHOW search_path",
        "SHOW TRANSACTION ISOLATION LEVEL",
        "SHOW TIME ZONE",
        "show \"TimeZone\"",
        "SHOW search_path;",
        "EXPLAIN SELECT 1",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN VERBOSE SELECT * FROM t",
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t",
        "SELECT * FROM (VALUES (1)) v(a)",
        "SELECT $1::text || 'a''b' AS x",
        "SELECT * FROM t WHERE ts > now() - interval '1 day'",
        "SELECT * FROM unnest($1::int[]) WITH ORDINALITY",
        "SELECT * FROM t, LATERAL (SELECT 1) x",
        "SELECT * FROM t, LATERAL generate_series(1, t.n) g",
        "SELECT * FROM t1 UNION SELECT * FROM t2",
        "SELECT count(*) FROM t GROUP BY ROLLUP (a, b)",
        "SELECT j->>'a' FROM t WHERE j @? '$.a'",
        "SELECT x FROM t WHERE y = E'it\\'s'",
        "SELECT $tag$ ; DELETE FROM t $tag$",
        "SELECT nextval FROM t",
        "SELECT pg_sleep(0.1)",
        "SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b",
        "SELECT * FROM t FETCH FIRST 3 ROWS WITH TIES",
        "SELECT 'FOR UPDATE', 'nextval(1)', \"for\" FROM t",
        "SELECT * FROM t WHERE a = 1 OR NOT b",
        "SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t",
        twenty,
    ] {
        let c = classify(sql);
        assert_eq!(
            (c.route, c.effect, &c.ryw, c.why, c.drops_prepared),
            (Route::Read, Effect::None, &None, "", false),
            "{sql}"
        );
    }
}

#[test]
fn everything_else_goes_to_the_leader_with_its_reason() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        // pgbench's TPC-B-like script and other writes
        ("UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 12345;", "write"),
        ("UPDATE pgbench_tellers SET tbalance = tbalance + 10 WHERE tid = 3;", "write"),
        ("UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2", "write"),
        ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 12345, 5, CURRENT_TIMESTAMP);", "write"),
        ("DELETE FROM t", "write"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "write"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "write"),
        ("EXPLAIN ANALYZE DELETE FROM t", "write"),
        ("EXPLAIN DELETE FROM t", "write"),
        // data-modifying CTEs, at any depth
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "data-modifying CTE"),
        ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", "data-modifying CTE"),
        ("WITH a AS (SELECT 1), x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", "data-modifying CTE"),
        ("SELECT * FROM (WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x) s", "data-modifying CTE"),
        // locking clauses, at any depth
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", "locking clause"),
        ("SELECT * FROM t FOR SHARE SKIP LOCKED", "locking clause"),
        ("SELECT * FROM t FOR NO KEY UPDATE", "locking clause"),
        ("SELECT * FROM t FOR KEY SHARE", "locking clause"),
        ("SELECT * FROM t FOR UPDATE OF t NOWAIT", "locking clause"),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", "locking clause"),
        ("SELECT * FROM t1 UNION SELECT * FROM t2 FOR UPDATE", "locking clause"),
        ("SELECT * FROM t WHERE a IN (SELECT a FROM u FOR SHARE)", "locking clause"),
        ("TABLE t FOR UPDATE", "locking clause"),
        // SELECT … INTO
        ("SELECT * INTO newtable FROM t", "select into"),
        ("SELECT 1 INTO TEMP t", "select into"),
        // deny-listed functions (one test per entry below)
        ("SELECT nextval('s')", "deny-listed function"),
        ("SELECT pg_catalog.nextval('s')", "deny-listed function"),
        ("SELECT \"NextVal\"('s')", "deny-listed function"),
        ("SELECT x FROM t WHERE y IN (SELECT currval('s'))", "deny-listed function"),
        ("SELECT (SELECT max(pg_catalog.nextval('s')))", "deny-listed function"),
        ("SELECT pg_advisory_lock(1)", "deny-listed function"),
        ("SELECT * FROM pg_advisory_lock(1)", "deny-listed function"),
        ("SELECT * FROM t, LATERAL pg_advisory_lock(t.id) x", "deny-listed function"),
        ("EXPLAIN ANALYZE SELECT nextval('s')", "deny-listed function"),
        ("VALUES (nextval('s'))", "deny-listed function"),
        // several statements
        ("SELECT 1; SELECT 2", "multiple statements"),
        ("SELECT 1; DELETE FROM t", "multiple statements"),
        ("SELECT 1 FROM t WHERE x = '\\'; DELETE FROM t; --'", "multiple statements"),
        // transaction control
        ("BEGIN", "transaction control"),
        ("BEGIN READ ONLY", "transaction control"),
        ("START TRANSACTION READ ONLY", "transaction control"),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", "transaction control"),
        ("COMMIT", "transaction control"),
        ("END", "transaction control"),
        ("ROLLBACK", "transaction control"),
        ("ABORT", "transaction control"),
        ("SAVEPOINT a", "transaction control"),
        ("RELEASE SAVEPOINT a", "transaction control"),
        ("ROLLBACK TO SAVEPOINT a", "transaction control"),
        ("PREPARE TRANSACTION 'x'", "transaction control"),
        ("COMMIT PREPARED 'x'", "transaction control"),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "transaction control"),
        ("SET CONSTRAINTS ALL DEFERRED", "transaction control"),
        // session settings and state
        ("SET search_path TO app, public", "session setting"),
        ("SET LOCAL statement_timeout = 5", "session setting"),
        ("RESET ALL", "session setting"),
        ("DISCARD ALL", "session setting"),
        ("PREPARE q AS SELECT 1", "session state"),
        ("EXECUTE q", "session state"),
        ("DEALLOCATE ALL", "session state"),
        ("LISTEN ch", "session state"),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "session state"),
        ("FETCH 10 FROM c", "session state"),
        ("SELECT * FROM pg_temp.t", "session state"),
        // COPY, DDL and the rest
        ("COPY t TO STDOUT", "copy"),
        ("COPY (SELECT 1) TO STDOUT", "copy"),
        ("COPY t FROM STDIN WITH (FORMAT csv)", "copy"),
        ("CREATE TABLE t (a int)", "not a read"),
        ("CREATE TEMP TABLE tt (a int)", "not a read"),
        ("EXPLAIN (ANALYZE) CREATE TEMP TABLE t AS SELECT 1", "not a read"),
        ("DO $$ BEGIN END $$", "not a read"),
        ("CALL p()", "not a read"),
        ("LOCK TABLE t", "not a read"),
        ("NOTIFY ch", "not a read"),
        ("VACUUM", "not a read"),
        ("TRUNCATE t", "not a read"),
        // which server is this?
        ("SHOW transaction_read_only", "server identity"),
        ("SHOW default_transaction_read_only", "server identity"),
        ("show IN_HOT_STANDBY", "server identity"),
        ("SHOW ALL", "server identity"),
        ("SELECT pg_is_in_recovery()", "deny-listed function"),
        // hints
        ("/* ryw:leader */ SELECT 1", "hint"),
        ("-- ryw:leader\nSELECT 1", "hint"),
        ("/* app=x */ /* ryw:leader ryw:stale-ok */ SELECT 1", "hint"),
        ("/* ryw:stale-ok */ UPDATE t SET a = 1", "write"),
        // garbage
        ("", "empty"),
        ("   ", "empty"),
        (";", "empty"),
        ("-- only a comment", "empty"),
        ("SELEC 1", "unparseable"),
        ("SELECT 'abc", "unparseable"),
        ("SELECT 1 /* unterminated", "unparseable"),
        ("SELECT $", "unparseable"),
        ("SELECT (", "unparseable"),
        ("EXPLAIN", "unparseable"),
        ("SHOW", "unparseable"),
        ("SHOW 'x'", "unparseable"),
        ("12", "unparseable"),
        // U&"…" could spell any name: `U&"pg_adv\0069sory_lock"(1)`
        ("SELECT U&\"pg_adv\\0069sory_lock\"(1)", "unparseable"),
    ];
    for &(sql, want) in cases {
        let c = classify(sql);
        assert_eq!(
            (c.route, c.why, &c.ryw),
            (Route::Leader, want, &None),
            "{sql}"
        );
    }
}

#[test]
fn texts_too_long_to_parse_go_to_the_leader() {
    let sql = format!("SELECT 1{}", " ".repeat(MAX_PARSE_LEN));
    assert_eq!(why(&sql), "too long");
    // The effects are still read.
    let sql = format!(
        "SET search_path = x; SELECT '{}'",
        "x".repeat(MAX_PARSE_LEN)
    );
    assert_eq!(classify(&sql).effect, Effect::SessionSetting);
    let sql = format!("LISTEN x; SELECT '{}'", "x".repeat(MAX_PARSE_LEN));
    assert_eq!(classify(&sql).effect, Effect::PinsToLeader);
}

#[test]
fn nesting_and_operators_are_bounded_before_the_parse() {
    let nested = |n: usize| format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(classify(&nested(LIMITS.nesting)).route, Route::Read);
    assert_eq!(why(&nested(LIMITS.nesting + 1)), "too deeply nested");
    let chain = |n: usize| format!("SELECT 1{}", " + 1".repeat(n));
    assert_eq!(classify(&chain(LIMITS.operators)).route, Route::Read);
    assert_eq!(why(&chain(LIMITS.operators + 1)), "too deeply nested");
    // A long flat list is not a chain.
    let list = format!("SELECT 1 WHERE a IN (1{})", ", 1".repeat(5000));
    assert_eq!(classify(&list).route, Route::Read);
}

#[test]
fn stale_ok_hints_apply_to_reads_only() {
    for sql in [
        "/* ryw:stale-ok */ SELECT * FROM products",
        "-- catalogue\n/* RYW:STALE-OK */ SELECT 1",
        "-- ryw:stale-ok\nSHOW search_path",
        "/* ryw:stale-ok */ TABLE t",
    ] {
        assert_eq!(classify(sql).route, Route::StaleOk, "{sql}");
    }
    for sql in [
        "/* ryw:stale-ok */ UPDATE t SET a = 1",
        "/* ryw:stale-ok */ SELECT nextval('s')",
        "/* ryw:stale-ok */ SELECT * FROM t FOR UPDATE",
        "/* ryw:stale-ok */ SELECT 1; SELECT 2",
        "SELECT 1 /* ryw:stale-ok */",
    ] {
        let c = classify(sql);
        assert_ne!(c.route, Route::StaleOk, "{sql}");
    }
    assert_eq!(classify("SELECT 1 /* ryw:stale-ok */").route, Route::Read);
}

#[test]
fn effects_are_read_from_the_leading_keywords() {
    use Effect::*;
    #[rustfmt::skip]
    let cases: &[(&str, Effect)] = &[
        ("COMMIT", EndsTransaction),
        ("commit work", EndsTransaction),
        ("COMMIT AND CHAIN", EndsTransaction),
        ("END", EndsTransaction),
        ("END TRANSACTION", EndsTransaction),
        ("ROLLBACK", EndsTransaction),
        ("ROLLBACK WORK", EndsTransaction),
        ("ABORT", EndsTransaction),
        ("PREPARE TRANSACTION 'x'", EndsTransaction),
        ("COMMIT PREPARED 'x'", EndsTransaction),
        ("ROLLBACK PREPARED 'x'", EndsTransaction),
        ("/* c */ COMMIT;", EndsTransaction),
        ("ROLLBACK TO SAVEPOINT a", None),
        ("ROLLBACK TO a", None),
        ("ROLLBACK WORK TO SAVEPOINT a", None),
        ("ROLLBACK TRANSACTION TO a", None),
        ("BEGIN", None),
        ("SAVEPOINT a", None),
        ("SET search_path TO app, public", SessionSetting),
        ("set statement_timeout = 5", SessionSetting),
        ("SET \"my.var\" = 1", SessionSetting),
        ("SET SESSION statement_timeout = 5", SessionSetting),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", SessionSetting),
        ("SET SESSION AUTHORIZATION 'u'", SessionSetting),
        ("SET ROLE app", SessionSetting),
        ("SET TIME ZONE 'UTC'", SessionSetting),
        ("SET NAMES 'UTF8'", SessionSetting),
        ("SET application_name = 'x'", SessionSetting),
        ("RESET search_path", SessionSetting),
        ("RESET ALL", SessionSetting),
        ("RESET ROLE", SessionSetting),
        ("DISCARD ALL", SessionSetting),
        ("DISCARD PLANS", SessionSetting),
        ("SET standard_conforming_strings = off", PinsToLeader),
        ("SET SESSION \"standard_conforming_strings\" TO on", SessionSetting),
        ("SET standard_conforming_strings = 'on'", SessionSetting),
        ("SET standard_conforming_strings TO 'off'", PinsToLeader),
        ("SET standard_conforming_strings = $1", PinsToLeader),
        ("SET LOCAL statement_timeout = 5", None),
        ("SET TRANSACTION READ ONLY", None),
        ("SET CONSTRAINTS ALL IMMEDIATE", None),
        ("CREATE TEMP TABLE tt (a int)", PinsToLeader),
        ("CREATE TEMPORARY TABLE tt (a int)", PinsToLeader),
        ("CREATE LOCAL TEMP TABLE tt (a int)", PinsToLeader),
        ("CREATE GLOBAL TEMPORARY TABLE tt (a int)", PinsToLeader),
        ("CREATE TEMP VIEW v AS SELECT 1", PinsToLeader),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", PinsToLeader),
        ("CREATE TEMP SEQUENCE s", PinsToLeader),
        ("CREATE TEMP TABLE x AS SELECT 1", PinsToLeader),
        ("CREATE TABLE pg_temp.x (a int)", PinsToLeader),
        ("CREATE VIEW v AS SELECT * FROM \"pg_temp\".t", PinsToLeader),
        ("EXPLAIN (ANALYZE) CREATE TEMP TABLE t AS SELECT 1", PinsToLeader),
        ("CREATE TABLE temp (a int)", None),
        ("CREATE TABLE t (a int)", None),
        ("INSERT INTO temp VALUES (1)", None),
        ("SELECT 1 INTO TEMP t", PinsToLeader),
        ("SELECT * INTO TEMPORARY TABLE t FROM u", PinsToLeader),
        ("SELECT * INTO LOCAL TEMP t FROM u", PinsToLeader),
        ("SELECT * INTO t FROM u", None),
        ("EXPLAIN ANALYZE SELECT 1 INTO TEMP t", PinsToLeader),
        ("PREPARE q AS SELECT 1", PinsToLeader),
        ("PREPARE q (int) AS SELECT $1", PinsToLeader),
        ("LISTEN ch", PinsToLeader),
        ("UNLISTEN ch", None),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", PinsToLeader),
        ("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1", PinsToLeader),
        ("DECLARE c CURSOR FOR SELECT 1", None),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", None),
        ("SELECT set_config('search_path', 'x', false)", SessionSetting),
        ("SELECT pg_catalog.set_config('TimeZone', $1, false)", SessionSetting),
        ("SELECT set_config('search_path', 'x', true)", None),
        ("SELECT set_config('search_path', lower('X'), false)", PinsToLeader),
        ("SELECT set_config($1, 'x', false)", PinsToLeader),
        ("SELECT set_config('a.b', 'x', false), 1", PinsToLeader),
        ("SELECT pg_advisory_lock(1)", PinsToLeader),
        ("SELECT pg_try_advisory_lock_shared(1, 2)", PinsToLeader),
        ("SELECT pg_advisory_xact_lock(1)", None),
        ("SELECT pg_advisory_unlock_all()", None),
        ("SELECT * FROM pg_temp.t", PinsToLeader),
        ("SELECT 1", None),
        ("UPDATE t SET a = 1", None),
        // several statements
        ("SET a.b = 1; SET c.d = 2", SessionSetting),
        // the setting statements are replayed on their own, so a text that
        // mixes them with others pins nothing (asyncpg's pool reset)
        ("SET a.b = 1; SELECT 1", SessionSetting),
        ("SELECT 1; RESET ALL", SessionSetting),
        ("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;", SessionSetting),
        ("SET a.b = 1; LISTEN ch", PinsToLeader),
        ("BEGIN; UPDATE t SET a = 1; COMMIT", EndsTransaction),
        ("BEGIN; CREATE TEMP TABLE x (a int); COMMIT", PinsToLeader),
        ("SELECT 1; SELECT 2", None),
        // PostgreSQL runs none of an unterminated text
        ("SET a.b = 'x", None),
    ];
    for &(sql, want) in cases {
        let c = classify(sql);
        assert_eq!(c.effect, want, "{sql}");
        if want != None {
            assert_eq!(c.route, Route::Leader, "{sql}");
        }
    }
}

#[test]
fn ryw_commands_are_the_proxys_own() {
    use RywCommand::*;
    let s = |v: &str| v.to_owned();
    #[rustfmt::skip]
    let cases: Vec<(&str, RywCommand)> = vec![
        ("SET ryw.session = 'k'", SetSession(s("k"))),
        ("SET ryw.session TO k", SetSession(s("k"))),
        ("SET ryw.session TO MyKey", SetSession(s("mykey"))),
        ("SET ryw.session = \"MyKey\"", SetSession(s("MyKey"))),
        ("set RYW.Session = 'It''s'", SetSession(s("It's"))),
        ("SET SESSION ryw.session = 'k'", SetSession(s("k"))),
        ("SET ryw.session = 'k';", SetSession(s("k"))),
        ("  /* c */ SET ryw . session = 'k' ; -- done", SetSession(s("k"))),
        ("SET ryw.session = 42", SetSession(s("42"))),
        ("SET ryw.session = E'k'", SetSession(s("k"))),
        ("SET \"ryw\".\"session\" = 'k'", SetSession(s("k"))),
        ("SET ryw.token = 'v1.abc.def'", SetToken(s("v1.abc.def"))),
        ("SET ryw.strategy = 'causal:50ms'", SetStrategy(s("causal:50ms"))),
        ("SET ryw.strategy TO DEFAULT", Reset(s("strategy"))),
        ("SET ryw.scope = 'global'", SetScope(s("global"))),
        ("set ryw.scope to Cluster", SetScope(s("cluster"))),
        ("RESET ryw.scope", Reset(s("scope"))),
        ("SHOW ryw.scope", Show(s("scope"))),
        ("SET LOCAL ryw.scope = 'connection'", SetLocal(Box::new(SetScope(s("connection"))))),
        ("RESET ryw.session", Reset(s("session"))),
        ("reset RYW.TOKEN;", Reset(s("token"))),
        ("RESET ryw.strategy", Reset(s("strategy"))),
        ("SHOW ryw.token", Show(s("token"))),
        ("SHOW ryw.served_by", Show(s("served_by"))),
        ("SHOW ryw.session", Show(s("session"))),
        ("show RYW.STRATEGY;", Show(s("strategy"))),
        ("/* ryw:leader */ SHOW ryw.token", Show(s("token"))),
        ("SHOW ryw.bogus", Invalid(s("unknown ryw setting \"ryw.bogus\""))),
        ("SET ryw.bogus = 1", Invalid(s("unknown ryw setting \"ryw.bogus\""))),
        ("RESET ryw.bogus", Invalid(s("unknown ryw setting \"ryw.bogus\""))),
        ("SET ryw.session.x = 'k'", Invalid(s("unknown ryw setting \"ryw.session.x\""))),
        ("SET ryw.served_by = 'x'", Invalid(s("parameter \"ryw.served_by\" cannot be changed"))),
        ("RESET ryw.served_by", Invalid(s("parameter \"ryw.served_by\" cannot be changed"))),
        ("SET LOCAL ryw.session = 'k'", SetLocal(Box::new(SetSession(s("k"))))),
        ("SET LOCAL ryw.strategy TO DEFAULT", SetLocal(Box::new(Reset(s("strategy"))))),
        ("SET ryw.session", Invalid(s("invalid ryw command: expected SET ryw.<name> = '<value>'"))),
        ("SET ryw.session = 'a', 'b'", Invalid(s("invalid ryw command: expected SET ryw.<name> = '<value>'"))),
        ("SET ryw.", Invalid(s("invalid ryw command: expected SET ryw.<name> = '<value>'"))),
        ("SHOW ryw.token x", Invalid(s("invalid ryw command: expected SHOW ryw.<name>"))),
        ("SET ryw.session = $1", Invalid(s("a ryw setting's value must be a plain string"))),
        ("SET ryw.session = E'a\\'b'", Invalid(s("a ryw setting's value must be a plain string"))),
        ("SET ryw.session = $$k$$", Invalid(s("a ryw setting's value must be a plain string"))),
    ];
    for (sql, want) in cases {
        let c = classify(sql);
        assert_eq!(c.ryw, Some(want), "{sql}");
        assert_eq!((c.effect, c.why), (Effect::None, "ryw command"), "{sql}");
    }
    // Not the proxy's: no `ryw.` prefix, several statements, a function.
    for (sql, why) in [
        ("SET ryw = 1", "session setting"),
        (
            "SET ryw.session = 'k'; SELECT 1",
            "ryw command among multiple statements",
        ),
        (
            "SELECT 1; SHOW ryw.token",
            "ryw command among multiple statements",
        ),
        ("SELECT current_setting('ryw.session')", ""),
    ] {
        let c = classify(sql);
        assert_eq!((c.ryw, c.why), (None, why), "{sql}");
    }
}

/// One call for each deny-list entry; the test checks that every entry has
/// one.
const DENIED_CALLS: &[(&str, &str)] = &[
    ("nextval('s')", "nextval"),
    ("setval('s', 1)", "setval"),
    ("currval('s')", "currval"),
    ("lastval()", "lastval"),
    ("pg_advisory_lock(1)", "pg_advisory_*"),
    ("pg_advisory_xact_lock_shared(1, 2)", "pg_advisory_*"),
    ("pg_advisory_unlock_all()", "pg_advisory_*"),
    ("pg_try_advisory_lock(1)", "pg_try_advisory_*"),
    ("pg_try_advisory_xact_lock(1)", "pg_try_advisory_*"),
    ("set_config('a.b', lower('c'), false)", "set_config"),
    ("pg_notify('ch', 'payload')", "pg_notify"),
    ("txid_current()", "txid_current"),
    ("txid_current_if_assigned()", "txid_current_if_assigned"),
    ("pg_current_xact_id()", "pg_current_xact_id"),
    (
        "pg_current_xact_id_if_assigned()",
        "pg_current_xact_id_if_assigned",
    ),
    ("pg_current_wal_lsn()", "pg_current_wal_lsn"),
    ("pg_current_wal_insert_lsn()", "pg_current_wal_insert_lsn"),
    ("pg_current_wal_flush_lsn()", "pg_current_wal_flush_lsn"),
    ("pg_switch_wal()", "pg_switch_wal"),
    ("pg_create_restore_point('x')", "pg_create_restore_point"),
    ("pg_cancel_backend(1)", "pg_cancel_backend"),
    ("pg_terminate_backend(1, 100)", "pg_terminate_backend"),
    ("pg_reload_conf()", "pg_reload_conf"),
    ("pg_rotate_logfile()", "pg_rotate_logfile"),
    ("pg_stat_reset()", "pg_stat_reset*"),
    ("pg_stat_reset_shared('bgwriter')", "pg_stat_reset*"),
    ("pg_stat_reset_single_table_counters(1)", "pg_stat_reset*"),
    (
        "pg_create_physical_replication_slot('s')",
        "pg_create_*_replication_slot",
    ),
    (
        "pg_create_logical_replication_slot('s', 'pgoutput')",
        "pg_create_*_replication_slot",
    ),
    ("pg_drop_replication_slot('s')", "pg_drop_replication_slot"),
    (
        "pg_copy_logical_replication_slot('a', 'b')",
        "pg_copy_*_replication_slot",
    ),
    (
        "pg_replication_slot_advance('s', '0/1')",
        "pg_replication_slot_advance",
    ),
    (
        "pg_logical_slot_get_changes('s', NULL, NULL)",
        "pg_logical_slot_*",
    ),
    (
        "pg_logical_slot_peek_binary_changes('s', NULL, NULL)",
        "pg_logical_slot_*",
    ),
    (
        "pg_logical_emit_message(true, 'p', 'c')",
        "pg_logical_emit_message",
    ),
    (
        "pg_replication_origin_create('o')",
        "pg_replication_origin_*",
    ),
    (
        "pg_replication_origin_advance('o', '0/1')",
        "pg_replication_origin_*",
    ),
    (
        "pg_import_system_collations('pg_catalog')",
        "pg_import_system_collations",
    ),
    ("pg_promote()", "pg_promote"),
    ("pg_wal_replay_pause()", "pg_wal_replay_pause"),
    ("pg_wal_replay_resume()", "pg_wal_replay_resume"),
    ("pg_backup_start('label')", "pg_backup_*"),
    ("pg_backup_stop()", "pg_backup_*"),
    ("pg_start_backup('label')", "pg_start_backup"),
    ("pg_stop_backup()", "pg_stop_backup"),
    ("lo_create(0)", "lo_*"),
    ("lo_import('/tmp/x')", "lo_*"),
    ("lo_unlink(1)", "lo_*"),
    ("lo_get(1)", "lo_*"),
    ("loread(0, 10)", "loread"),
    ("lowrite(0, 'x')", "lowrite"),
    ("dblink('c', 'SELECT 1')", "dblink*"),
    ("dblink_exec('c', 'DELETE FROM t')", "dblink*"),
    ("dblink_connect('c', 'dbname=x')", "dblink*"),
    ("pg_is_in_recovery()", "pg_is_in_recovery"),
];

#[test]
fn every_deny_listed_function_goes_to_the_leader_wherever_it_is_called() {
    for entry in DENY {
        assert!(
            DENIED_CALLS.iter().any(|(_, e)| e == entry),
            "no test call for deny-list entry {entry}"
        );
    }
    for &(call, entry) in DENIED_CALLS {
        let name = &call[..call.find('(').unwrap()];
        let args = &call[name.len()..];
        let quoted_upper = format!("\"{}\"{args}", name.to_uppercase());
        for sql in [
            format!("SELECT {call}"),
            format!("select {}", call.to_uppercase()),
            format!("SELECT pg_catalog.{call}"),
            format!("SELECT {quoted_upper}"),
            format!("SELECT * FROM {call}"),
            format!("SELECT * FROM {call} AS f"),
            format!("SELECT * FROM t, LATERAL {call} x"),
            format!("SELECT * FROM t JOIN LATERAL {call} x ON true"),
            format!("SELECT a FROM t WHERE b IN (SELECT {call})"),
            format!("WITH c AS (SELECT {call}) SELECT * FROM c"),
            format!("SELECT CASE WHEN a THEN {call} END FROM t"),
            format!("EXPLAIN ANALYZE SELECT {call}"),
            format!("/* ryw:stale-ok */ SELECT {call}"),
        ] {
            let c = classify(&sql);
            assert_eq!(
                (c.route, c.why),
                (Route::Leader, "deny-listed function"),
                "{sql}"
            );
            assert_eq!(denied_function(&sql), Some(entry), "{sql}");
        }
        // The tree walk finds them on its own too, not only the tokens.
        for sql in [
            format!("SELECT {call}"),
            format!("SELECT * FROM {call}"),
            format!("SELECT * FROM t, LATERAL {call} x"),
            format!("SELECT (SELECT max(pg_catalog.{call}))"),
        ] {
            assert_eq!(read::check(&sql), Err("deny-listed function"), "{sql}");
        }
    }
    assert_eq!(denied_function("SELECT lower('x')"), None);
}

#[test]
fn a_cache_hit_does_not_parse() {
    let mut cache = ClassCache::new();
    for aid in 1..=1000 {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert_eq!(cache.classify(&sql), classify(&sql));
    }
    assert_eq!((cache.parses(), cache.hits(), cache.len()), (1, 999, 1));
    // Case, the amount of whitespace and comments do not matter either
    // (whether there is whitespace does: `7;` is not `7 ;`).
    cache.classify("select  abalance\nFROM pgbench_accounts /* x */ WHERE aid = 7;");
    assert_eq!(cache.parses(), 1);
    // Writes are decided without a parse, and cached too.
    for aid in 1..=10 {
        cache.classify(&format!(
            "UPDATE pgbench_accounts SET abalance = abalance + {aid} WHERE aid = {aid};"
        ));
    }
    assert_eq!((cache.parses(), cache.hits()), (1, 1009));
}

#[test]
fn hints_are_part_of_the_key() {
    let mut cache = ClassCache::new();
    assert_eq!(cache.classify("SELECT 1").route, Route::Read);
    assert_eq!(
        cache.classify("/* ryw:leader */ SELECT 2").route,
        Route::Leader
    );
    assert_eq!(
        cache.classify("/* ryw:stale-ok */ SELECT 3").route,
        Route::StaleOk
    );
    assert_eq!(cache.classify("/* other */ SELECT 4").route, Route::Read);
    assert_eq!(cache.hits(), 1);
}

#[test]
fn ryw_commands_and_unkeyable_texts_are_never_cached() {
    let mut cache = ClassCache::new();
    for key in ["a", "b", "c"] {
        let c = cache.classify(&format!("SET ryw.session = '{key}'"));
        assert_eq!(c.ryw, Some(RywCommand::SetSession(key.to_owned())));
    }
    for sql in [
        "SELECT $$x$$",
        "SELECT E'\\n'",
        "SELECT X'1F'",
        "SELECT 0x1F",
        "SELECT 'unterminated",
        "SELECT 1 +/* glued */ 2",
        &format!("SELECT '{}'", "x".repeat(MAX_PARSE_LEN)),
    ] {
        cache.classify(sql);
        cache.classify(sql);
    }
    assert_eq!((cache.len(), cache.hits()), (0, 0));
}

#[test]
fn the_cache_is_bounded() {
    let mut cache = ClassCache::with_entries(3);
    for i in 0..10 {
        cache.classify(&format!("SELECT c{i} FROM t"));
        assert!(cache.len() <= 3);
    }
    // Long keys: 512 KiB of them at most.
    let mut cache = ClassCache::new();
    let columns = "a, ".repeat(3000); // a 9 KB key
    for i in 0..100 {
        cache.classify(&format!("SELECT c{i}, {columns} z FROM t"));
        assert!(cache.len() <= 512 * 1024 / 9000, "{}", cache.len());
    }
}

/// Runs `f` on a thread with 2 MiB of stack, the size of tokio's and the
/// test harness's worker threads, so that a stack overflow shows here.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn hostile_nesting_and_chains_do_not_blow_the_stack() {
    on_small_stack(|| {
        let big = MAX_PARSE_LEN / 8;
        let shapes: Vec<(&str, &str, &str)> = vec![
            ("(", "1", ")"),
            ("(SELECT ", "1", ")"),
            ("EXISTS(SELECT ", "1", ")"),
            ("NOT ", "true", ""),
            ("CASE WHEN true THEN ", "1", " END"),
            ("ARRAY[", "1", "]"),
            ("ROW(", "1", ")"),
            ("f(", "1", ")"),
            ("- ", "1", ""),
            ("~ ", "1", ""),
        ];
        for (open, mid, close) in &shapes {
            for n in [LIMITS.nesting, LIMITS.nesting + 1, 40, 60, big] {
                let sql = format!("SELECT {}{mid}{}", open.repeat(n), close.repeat(n));
                let _ = classify(&sql);
            }
        }
        let from = |n: usize| format!("SELECT * FROM {}t{}", "(".repeat(n), ")".repeat(n));
        let _ = classify(&from(big));
        let _ = classify(&from(LIMITS.nesting));
        for (op, n) in [
            ("+1", LIMITS.operators),
            (" OR a", LIMITS.operators),
            ("::int", LIMITS.operators),
            ("[1]", LIMITS.operators),
            (" COLLATE \"C\"", LIMITS.operators),
            (" IS NULL", LIMITS.operators),
            (" AT TIME ZONE 'x'", LIMITS.operators / 2),
            (" UNION SELECT 1", LIMITS.operators),
            ("+1", MAX_PARSE_LEN / 2 - 8),
            ("!", MAX_PARSE_LEN - 9),
            ("[1]", MAX_PARSE_LEN / 3 - 8),
        ] {
            let sql = format!("SELECT 1{}", op.repeat(n));
            let _ = classify(&sql);
        }
    });
}

mod properties {
    use super::super::cache::normalize;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalize_and_classify_never_panic(sql in any::<String>()) {
            let mut key = Vec::new();
            let _ = normalize(&sql, &mut key);
            let _ = classify(&sql);
        }

        #[test]
        fn nor_on_sql_like_text_where_the_cache_agrees(sql in r#"[a-zA-Z0-9_ '"$;()\[\]*/+=.,:@#%^&|?~!<>\\\n\r\t-]{0,80}"#) {
            let mut key = Vec::new();
            let _ = normalize(&sql, &mut key);
            let mut cache = ClassCache::new();
            prop_assert_eq!(cache.classify(&sql), classify(&sql));
            prop_assert_eq!(cache.classify(&sql), classify(&sql));
        }

        #[test]
        fn mixed_nesting_fits_the_stack(
            shape in prop::collection::vec(0usize..10, 1..(LIMITS.nesting + 4)),
            chain in 0usize..(LIMITS.operators + 8),
        ) {
            const OPEN: [(&str, &str); 10] = [
                ("(", ")"), ("(SELECT ", ")"), ("EXISTS(SELECT ", ")"), ("NOT ", ""),
                ("CASE WHEN true THEN ", " END"), ("ARRAY[", "]"), ("ROW(", ")"),
                ("f(", ")"), ("(SELECT * FROM (SELECT ", ") s)"), ("ANY(ARRAY[", "])"),
            ];
            let mut sql = String::from("SELECT ");
            for &i in &shape { sql.push_str(OPEN[i].0); }
            sql.push('1');
            sql.push_str(&" + 1".repeat(chain));
            for &i in shape.iter().rev() { sql.push_str(OPEN[i].1); }
            let (tx, rx) = std::sync::mpsc::channel();
            on_small_stack(move || { let _ = tx.send(classify(&sql)); });
            prop_assert!(rx.recv().is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn nested_parentheses_fit_the_stack(n in 0usize..40_000, brackets in any::<bool>()) {
            let (open, close) = if brackets { ("ARRAY[", "]") } else { ("(", ")") };
            let sql = format!("SELECT {}1{}", open.repeat(n), close.repeat(n));
            let (tx, rx) = std::sync::mpsc::channel();
            on_small_stack(move || { let _ = tx.send(classify(&sql)); });
            let c = rx.recv().unwrap();
            prop_assert_eq!(c.route == Route::Read, n <= LIMITS.nesting, "{:?}", c);
        }
    }

    /// A literal of a template: the same kind, a different value.
    #[derive(Clone, Debug)]
    enum Piece {
        Text(&'static str),
        Str,
        EStr,
        Num,
    }

    fn template(t: &'static str) -> Vec<Piece> {
        // `'s'` a string, `e's'` an escape string, `9` a number.
        let mut out = Vec::new();
        for (i, part) in t.split('§').enumerate() {
            if i % 2 == 0 {
                out.push(Piece::Text(part));
            } else {
                out.push(match part {
                    "s" => Piece::Str,
                    "e" => Piece::EStr,
                    _ => Piece::Num,
                });
            }
        }
        out
    }

    const TEMPLATES: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = §n§;",
        "UPDATE pgbench_accounts SET abalance = abalance + §n§ WHERE aid = §n§;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (§n§, §n§, §n§, §n§, CURRENT_TIMESTAMP);",
        "SELECT * FROM t WHERE a = §s§ AND b = §e§ LIMIT §n§",
        "/* ryw:stale-ok */ SELECT §s§, §n§",
        "/* ryw:leader */ SELECT §s§",
        "SELECT nextval(§s§)",
        "SELECT * FROM t WHERE id = §n§ FOR UPDATE",
        "WITH x AS (DELETE FROM t WHERE a = §s§ RETURNING *) SELECT * FROM x",
        "SELECT §s§; SELECT §n§",
        "SET search_path = §s§",
        "SET ryw.session = §s§",
        "SHOW ryw.token",
        "SELECT 1 INTO TEMP t WHERE §n§ > §n§",
        "EXPLAIN ANALYZE SELECT §n§::int + §n§.§n§",
        "SELECT * FROM t WHERE ts > now() - interval §s§ OFFSET §n§ ROWS FETCH FIRST §n§ ROWS ONLY",
        "SELECT §s§::jsonb #>> §s§, §e§ || §s§",
        "SELECT CASE WHEN a = §n§ THEN §s§ ELSE §e§ END FROM t",
        "SELECT * FROM t WHERE a IN (§n§, §n§, §n§) AND b LIKE §s§ ESCAPE §s§",
        "VALUES (§n§, §s§), (§n§e§n§, §e§)",
        "TABLE t LIMIT §n§",
        "SELECT date §s§, timestamp §s§, §s§::date",
        "SELECT x FROM t WHERE y = §n§ -- trailing §s§\n",
        "DECLARE c CURSOR WITH HOLD FOR SELECT §n§",
        "SELECT * FROM t §s§",
        "SELECT §n§§s§",
        "SELECT a.b§n§ FROM t",
    ];

    fn literal(p: &Piece) -> BoxedStrategy<String> {
        match p {
            Piece::Text(t) => Just((*t).to_owned()).boxed(),
            Piece::Str => "[a-z' ;\\\\/*$\"é-]{0,8}"
                .prop_map(|s| format!("'{}'", s.replace('\'', "''")))
                .boxed(),
            Piece::EStr => "[a-z' ;/*$\"é-]{0,8}"
                .prop_map(|s| format!("E'{}'", s.replace('\'', "''")))
                .boxed(),
            Piece::Num => r"[0-9]{1,6}(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?".boxed(),
        }
    }

    /// Whitespace or a comment between tokens (not glued to an operator:
    /// the separators replace existing whitespace).
    fn separator() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![" ", "  ", "\n", "\t", " /* c */ ", " -- c\n", "\r\n"])
    }

    fn filled(t: &'static str) -> impl Strategy<Value = String> {
        let pieces: Vec<BoxedStrategy<String>> = template(t).iter().map(literal).collect();
        (pieces, prop::collection::vec(separator(), 64)).prop_map(|(parts, seps)| {
            let text: String = parts.concat();
            let mut seps = seps.into_iter().cycle();
            text.split(' ')
                .collect::<Vec<_>>()
                .join(seps.next().unwrap_or(" "))
        })
    }

    fn two_fillings() -> impl Strategy<Value = (String, String)> {
        prop::sample::select(TEMPLATES.to_vec()).prop_flat_map(|t| (filled(t), filled(t)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Texts that differ only in literal values, whitespace and
        /// comments share a key, and the cached class is the uncached one.
        #[test]
        fn a_cached_class_equals_the_uncached_one((a, b) in two_fillings()) {
            let mut cache = ClassCache::new();
            let _ = cache.classify(&a);
            prop_assert_eq!(cache.classify(&b), classify(&b), "a = {:?}", a);
        }
    }

    /// Random token streams: more shapes than the templates, mostly not SQL.
    fn token() -> impl Strategy<Value = Piece> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "SELECT", "select", "FROM", "WHERE", "WITH", "AS", "TABLE", "VALUES", "UNION",
                "FOR", "UPDATE", "SHARE", "INTO", "TEMP", "EXPLAIN", "ANALYZE", "SHOW", "SET",
                "LOCAL", "RESET", "ryw", "session", "DELETE", "INSERT", "RETURNING", "CASE",
                "WHEN", "THEN", "END", "NOT", "AND", "OR", "t", "a", "e", "x", "b", "u", "n",
                "nextval", "pg_advisory_lock", "\"q\"", "\"NextVal\"", "$1", "(", ")", "[", "]",
                ",", ";", ".", "::", "+", "-", "*", "/", "=", "<", ">", "@", "&", "|", "?",
                "->>", "#", "%", "!", "~", ":",
            ]).prop_map(Piece::Text),
            1 => Just(Piece::Str),
            1 => Just(Piece::EStr),
            1 => Just(Piece::Num),
        ]
    }

    fn glue() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", " ", " ", " /* c */ ", "\n", " -- c\n"])
    }

    fn stream_fillings() -> impl Strategy<Value = (String, String)> {
        prop::collection::vec((token(), glue()), 1..14).prop_flat_map(|toks| {
            let fill = |toks: &Vec<(Piece, &'static str)>| {
                let parts: Vec<BoxedStrategy<String>> = toks
                    .iter()
                    .map(|(p, g)| {
                        let g = *g;
                        literal(p).prop_map(move |s| format!("{s}{g}")).boxed()
                    })
                    .collect();
                parts.prop_map(|v| v.concat())
            };
            (fill(&toks), fill(&toks))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn a_cached_class_equals_the_uncached_one_for_token_soup((a, b) in stream_fillings()) {
            let mut cache = ClassCache::new();
            let _ = cache.classify(&a);
            prop_assert_eq!(cache.classify(&b), classify(&b), "a = {:?}", a);
        }

        /// The same after `SELECT `, where more of the soup reaches the parser.
        #[test]
        fn a_cached_class_equals_the_uncached_one_for_select_soup((a, b) in stream_fillings()) {
            let (a, b) = (format!("SELECT {a}"), format!("SELECT {b}"));
            let mut cache = ClassCache::new();
            let _ = cache.classify(&a);
            prop_assert_eq!(cache.classify(&b), classify(&b), "a = {:?}", a);
        }
    }
}

#[test]
fn reads_of_node_and_session_local_state_go_to_the_leader() {
    for sql in [
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
        "SELECT * FROM pg_catalog.pg_stat_activity",
        "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 't'",
        "SELECT * FROM pg_statio_user_tables",
        "SELECT name FROM pg_prepared_statements",
        "SELECT * FROM pg_cursors",
        "SELECT setting FROM pg_settings WHERE name = 'work_mem'",
        "SELECT pg_backend_pid()",
        "SELECT pg_stat_get_numscans('t'::regclass)",
        "SELECT pg_last_wal_replay_lsn()",
        "SELECT * FROM pg_ls_waldir()",
        "SHOW transaction_read_only",
    ] {
        let c = classify(sql);
        assert_eq!(c.route, Route::Leader, "{sql}");
        assert!(
            matches!(
                c.why,
                "node-local state" | "statistics" | "server identity" | "deny-listed function"
            ),
            "{sql}: {}",
            c.why
        );
    }
    assert_eq!(classify("SELECT * FROM pg_stat_activity").why, "statistics");
    assert_eq!(
        classify("SELECT last_value FROM pg_sequences").why,
        "node-local state"
    );
    // Replicated state, and the server that runs the statement.
    for sql in [
        "SELECT * FROM pg_class",
        "SELECT current_setting('search_path')",
        "SELECT inet_server_port(), current_setting('transaction_read_only')",
    ] {
        assert_eq!(classify(sql).route, Route::Read, "{sql}");
    }
}

#[test]
fn a_read_lists_the_functions_it_calls_for_the_catalog() {
    let c = classify("SELECT lower(a), \"MyFn\"(b), s.f(1) FROM t, generate_series(1, 3) g");
    let mut names: Vec<&str> = c
        .functions
        .as_deref()
        .unwrap()
        .iter()
        .map(|f| &**f)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["MyFn", "f", "generate_series", "lower"]);
    assert_eq!(classify("SELECT a FROM t").functions, None);
}

#[test]
fn a_read_lists_the_relations_it_reads_but_not_its_ctes() {
    let c = classify(
        "WITH w AS (SELECT 1) SELECT * FROM w, s.Tab, \"Quoted\", generate_series(1, 2) g \
         WHERE EXISTS (SELECT 1 FROM other)",
    );
    let mut names: Vec<&str> = c
        .relations
        .as_deref()
        .unwrap()
        .iter()
        .map(|r| &**r)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Quoted", "other", "tab"]);
    assert_eq!(classify("SELECT 1").relations, None);
    assert_eq!(classify("SELECT * FROM 'x'").why, "unparseable");
}

#[test]
fn drops_of_prepared_statements_are_found() {
    use super::PreparedEffect::*;
    assert!(classify("DEALLOCATE ALL").drops_prepared);
    assert!(classify("DISCARD ALL").drops_prepared);
    assert!(!classify("DISCARD PLANS").drops_prepared);
    assert_eq!(
        super::prepared_effects(
            "DEALLOCATE PREPARE \"Q\"; deallocate q2; DEALLOCATE ALL; DISCARD ALL"
        ),
        vec![
            Deallocate("Q".into()),
            Deallocate("q2".into()),
            DeallocateAll,
            DiscardAll
        ]
    );
}

#[test]
fn only_whole_deallocate_texts_are_deallocations() {
    use super::{PreparedEffect as P, deallocations};
    assert_eq!(
        deallocations("DEALLOCATE _pg3_1"),
        Some(vec![P::Deallocate("_pg3_1".into())])
    );
    assert_eq!(
        deallocations("deallocate prepare \"A\"; DEALLOCATE ALL"),
        Some(vec![P::Deallocate("A".into()), P::DeallocateAll])
    );
    assert_eq!(deallocations("DEALLOCATE x; SELECT 1"), None);
    assert_eq!(deallocations("DEALLOCATE"), None);
    assert_eq!(deallocations("SELECT 1"), None);
    assert_eq!(deallocations("DISCARD ALL"), None);
}

#[test]
fn the_cache_never_mixes_up_set_config_of_different_settings() {
    // Found by a Django app: its TimeZone set_config was cached, and a
    // later set_config of ryw.session took that class (forwarded, not
    // bound).
    let mut cache = ClassCache::new();
    let tz = cache.classify("SELECT set_config('TimeZone', 'UTC', false)");
    assert!(tz.ryw.is_none());
    let bind = cache.classify("SELECT set_config('ryw.session', 'bob', false)");
    assert!(bind.ryw.is_some(), "{bind:?}");
    let on = cache.classify("SET standard_conforming_strings = 'on'");
    let off = cache.classify("SET standard_conforming_strings = 'off'");
    assert_eq!(on.effect, Effect::SessionSetting);
    assert_eq!(off.effect, Effect::PinsToLeader);
}

#[test]
fn sql_prepared_names_are_found_wherever_they_are_spelled() {
    assert_eq!(
        super::prepared_names("select 1; PrePare Q1 as select 2; execute q1"),
        vec!["q1".to_owned(), "q1".to_owned()]
    );
    assert_eq!(
        super::prepared_names(r#"DEALLOCATE PREPARE "Q2""#),
        vec!["Q2".to_owned()]
    );
    assert_eq!(
        super::prepared_names("select 1;\n\tEXECUTE x"),
        vec!["x".to_owned()]
    );
    // Named nowhere, or only inside a string or an identifier: nothing.
    assert!(
        super::prepared_names("SELECT abalance FROM pgbench_accounts WHERE aid = 1;").is_empty()
    );
    assert!(super::prepared_names("select 'execute x'; select \"prepare\" from t").is_empty());
    assert!(super::prepared_names("deallocate all").is_empty());
}

#[test]
fn sql_prepared_names_follow_any_punctuation() {
    assert_eq!(
        super::prepared_names("select 1;execute a"),
        vec!["a".to_owned()]
    );
    assert_eq!(
        super::prepared_names("/* x */prepare b as select 1"),
        vec!["b".to_owned()]
    );
    assert!(super::prepared_names("select xexecute, prepare_x from t").is_empty());
}
