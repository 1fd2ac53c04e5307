//! The client's session settings: what it `SET`s (also `SET ROLE`, `SET
//! SESSION AUTHORIZATION`, a plain `set_config(…, false)`), kept as the
//! statements to replay on every other node the client reaches, one per
//! setting, in the order they took effect. `RESET name`, `RESET ALL` and
//! `DISCARD ALL` drop what they undo, so the list holds each setting once
//! and never grows past the settings a client uses.
//!
//! A node's connection remembers which of these it has applied: while
//! that is a prefix of the list (by text), the rest is sent before the
//! client's next batch there; otherwise the node's session is reset first
//! (`SET SESSION AUTHORIZATION DEFAULT`, `RESET ALL`: back to the startup
//! values, as `RESET` means) and the whole list replayed.
//!
//! Inside a transaction a setting counts once it commits: it waits in
//! `pending` and is dropped by a rollback. (`ROLLBACK TO SAVEPOINT` also
//! undoes a `SET` in PostgreSQL; here such a setting is replayed on other
//! nodes after the transaction commits: the one known difference.)

use std::sync::Arc;

use bytes::BytesMut;

use crate::classify::Arg;

/// The statements that reset a node's session to its startup values before
/// the whole list is replayed.
const RESET: [&str; 2] = ["SET SESSION AUTHORIZATION DEFAULT", "RESET ALL"];

/// What a setting statement is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Key {
    /// A run-time parameter, by its lower-case name.
    Name(String),
    /// `SET ROLE`.
    Role,
    /// `SET SESSION AUTHORIZATION` (it also resets the role).
    Authorization,
    /// `LOAD 'library'` (by its statement): not undone by `RESET ALL` nor
    /// `DISCARD ALL`, as in PostgreSQL.
    Load(Arc<str>),
}

/// Settings whose `SET` may change only part of their value (`SET
/// datestyle TO ymd` keeps the output style `SET datestyle TO iso` chose):
/// every `SET` of them is kept, in order, until a `RESET`.
const PARTIAL: &[&str] = &["datestyle"];

/// One statement of the list.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    key: Key,
    sql: Arc<str>,
}

/// What one setting statement does to the list.
#[derive(Clone, Debug)]
pub(super) enum Op {
    /// Sets `key` (replacing an earlier setting of it) with `sql`.
    Set(Entry),
    /// `RESET key` (kept as the entry for `key`: replayed, it resets the
    /// setting there too, and makes a custom setting known, as on the
    /// leader).
    Reset(Entry),
    /// `RESET ALL`: everything but the role and session authorization.
    ResetAll,
    /// `DISCARD ALL`: everything.
    DiscardAll,
}

/// The client's settings.
#[derive(Debug, Default)]
pub(super) struct Settings {
    list: Vec<Entry>,
    /// Under transaction pooling, the client's startup parameters, as
    /// settings: its session's defaults, which `RESET` returns to (on a
    /// server they are in the startup packet; a pooled connection was
    /// opened without them).
    defaults: Vec<Entry>,
    /// A reset put `defaults` back in the list: the server that ran it has
    /// its own defaults instead (see [`Settings::took_defaults_back`]).
    defaults_back: bool,
    /// The list's statements, in order (what nodes compare with).
    sqls: Vec<Arc<str>>,
    /// Made inside the open transaction.
    pending: Vec<Op>,
    bytes: usize,
}

impl Settings {
    /// What the settings hold, for the client's memory limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The statements in force, in order.
    pub fn current(&self) -> &[Arc<str>] {
        &self.sqls
    }

    /// A startup parameter of the client's, as a setting (transaction
    /// pooling): in force now, and what `RESET` returns to.
    pub fn startup_default(&mut self, op: Op) {
        if let Op::Set(entry) = op {
            self.defaults.push(entry.clone());
            self.apply(Op::Set(entry));
        }
    }

    /// Whether a reset since the last call put startup parameters back:
    /// the server that ran it reset them to its own defaults, so it does
    /// not have the list (it gets all of it again before its next batch).
    pub fn took_defaults_back(&mut self) -> bool {
        std::mem::take(&mut self.defaults_back)
    }

    /// A setting made outside a transaction (`in_transaction` false) takes
    /// effect now; inside one it waits for the commit.
    pub fn record(&mut self, op: Op, in_transaction: bool) {
        if in_transaction {
            self.pending.push(op);
        } else {
            self.apply(op);
        }
    }

    /// The transaction committed: its settings take effect.
    pub fn commit(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            self.apply(op);
        }
    }

    /// The transaction rolled back: its settings are gone.
    pub fn rollback(&mut self) {
        self.pending.clear();
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Set(Entry { key, sql }) => {
                if key == Key::Authorization {
                    self.list.retain(|e| e.key != Key::Role);
                }
                let partial = matches!(&key, Key::Name(n) if PARTIAL.contains(&n.as_str()));
                if !partial {
                    self.list.retain(|e| e.key != key);
                }
                self.list.push(Entry { key, sql });
            }
            Op::Reset(Entry { key, sql }) => {
                if key == Key::Authorization {
                    self.list.retain(|e| e.key != Key::Role);
                }
                self.list.retain(|e| e.key != key);
                if let Some(d) = self.defaults.iter().find(|d| d.key == key) {
                    // Back to the value the client started with.
                    self.list.push(d.clone());
                    self.defaults_back = true;
                } else if matches!(&key, Key::Name(n) if n.contains('.')) {
                    // A custom (dotted) setting stays known after a RESET,
                    // with an empty value: only replaying the RESET does
                    // that.
                    self.list.push(Entry { key, sql });
                }
            }
            // RESET ALL leaves the role and the session authorization.
            Op::ResetAll => {
                self.list
                    .retain(|e| matches!(e.key, Key::Role | Key::Authorization | Key::Load(_)));
                self.list.extend(self.defaults.iter().cloned());
                self.defaults_back |= !self.defaults.is_empty();
            }
            Op::DiscardAll => {
                self.list.retain(|e| matches!(e.key, Key::Load(_)));
                self.list.extend(self.defaults.iter().cloned());
                self.defaults_back |= !self.defaults.is_empty();
            }
        }
        self.sqls = self.list.iter().map(|e| e.sql.clone()).collect();
        self.bytes = self.list.iter().map(|e| e.sql.len() + 64).sum();
    }

    /// Writes what a node that has applied `applied` needs to be where the
    /// client is (simple queries), updates `applied`, and returns how many
    /// queries it wrote (each answers with a `ReadyForQuery`).
    pub fn replay(&self, applied: &mut Vec<Arc<str>>, out: &mut BytesMut) -> usize {
        // By text: a pooled connection set up by another client with the
        // same settings needs nothing.
        let prefix = applied.len() <= self.sqls.len()
            && applied
                .iter()
                .zip(&self.sqls)
                .all(|(a, b)| Arc::ptr_eq(a, b) || **a == **b);
        let mut n = 0;
        let from = if prefix {
            applied.len()
        } else {
            for sql in RESET {
                super::simple_query(out, sql);
                n += 1;
            }
            0
        };
        for sql in &self.sqls[from..] {
            super::simple_query(out, sql);
            n += 1;
        }
        applied.clone_from(&self.sqls);
        n
    }
}

/// The op of one setting statement (as [`crate::classify::setting_statements`]
/// returns them), with `params` for a `set_config` whose value is bound
/// (`$n`). `None` when it changes nothing to replay (`DISCARD PLANS`, a
/// `set_config` whose arguments are not known).
pub(super) fn op_of(sql: &str, params: &[(bool, Option<&[u8]>)]) -> Option<Op> {
    let words = Words::new(sql);
    let w = |i: usize| words.get(i);
    let is = |i: usize, kw: &str| w(i).is_some_and(|x| x.eq_ignore_ascii_case(kw));
    let set = |key: Key| {
        Some(Op::Set(Entry {
            key,
            sql: Arc::from(sql),
        }))
    };
    if is(0, "select") {
        let call = crate::classify::setconfig::parse(sql)?;
        let text = |a: &Arg| match a {
            Arg::Text(t) => Some(t.clone()),
            Arg::Bool(b) => Some(b.to_string()),
            Arg::Param(n) => match params.get(usize::from(*n) - 1)? {
                (true, Some(v)) => std::str::from_utf8(v).ok().map(str::to_owned),
                _ => None,
            },
        };
        let name = text(&call.name)?;
        let value = text(&call.value)?;
        if call.local.as_bool() != Some(false) {
            return None;
        }
        return Some(Op::Set(Entry {
            key: Key::Name(name.to_ascii_lowercase()),
            sql: Arc::from(format!(
                "SELECT pg_catalog.set_config({}, {}, false)",
                quote(&name),
                quote(&value)
            )),
        }));
    }
    if is(0, "discard") {
        return is(1, "all").then_some(Op::DiscardAll);
    }
    if is(0, "load") {
        return set(Key::Load(Arc::from(sql)));
    }
    if is(0, "reset") {
        let reset = |key: Key| {
            Some(Op::Reset(Entry {
                key,
                sql: Arc::from(sql),
            }))
        };
        return if is(1, "all") {
            Some(Op::ResetAll)
        } else if is(1, "role") {
            reset(Key::Role)
        } else if is(1, "session") && is(2, "authorization") {
            reset(Key::Authorization)
        } else if is(1, "time") && is(2, "zone") {
            reset(Key::Name("timezone".into()))
        } else {
            reset(Key::Name(words.name_from(1)?))
        };
    }
    if !is(0, "set") {
        return None;
    }
    let at = if is(1, "session") && !is(2, "authorization") && !is(2, "characteristics") {
        2
    } else {
        1
    };
    if is(at, "role") {
        set(Key::Role)
    } else if is(at, "session") && is(at + 1, "authorization") {
        set(Key::Authorization)
    } else if is(1, "session") && is(2, "characteristics") {
        set(Key::Name("session characteristics".into()))
    } else if is(at, "time") && is(at + 1, "zone") {
        set(Key::Name("timezone".into()))
    } else if is(at, "names") {
        set(Key::Name("client_encoding".into()))
    } else {
        set(Key::Name(words.name_from(at)?))
    }
}

/// A SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The words of a setting statement's head (enough to key it).
struct Words<'a> {
    words: Vec<&'a str>,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Words<'a> {
        // Settings' heads are plain words, dots, quoted names: split on
        // whitespace, `=` and the start of a value.
        let mut words = Vec::new();
        let mut rest = sql.trim_start();
        while words.len() < 8 && !rest.is_empty() {
            let rest_trim = rest.trim_start();
            if rest_trim.is_empty() {
                break;
            }
            let end = if let Some(quoted) = rest_trim.strip_prefix('"') {
                quoted.find('"').map(|i| i + 2).unwrap_or(rest_trim.len())
            } else {
                rest_trim
                    .find(|c: char| c.is_whitespace() || c == '=' || c == '\'' || c == ';')
                    .unwrap_or(rest_trim.len())
                    .max(1)
            };
            words.push(&rest_trim[..end]);
            rest = &rest_trim[end..];
        }
        Words { words }
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        self.words.get(i).copied()
    }

    /// The parameter name at word `i` (`a.b` or `"A".b`), as PostgreSQL
    /// keys it: lower-cased unless quoted.
    fn name_from(&self, i: usize) -> Option<String> {
        let raw = self.get(i)?;
        let name: String = raw
            .split('.')
            .map(
                |part| match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                    Some(quoted) => quoted.to_owned(),
                    None => part.to_ascii_lowercase(),
                },
            )
            .collect::<Vec<_>>()
            .join(".");
        (!name.is_empty()).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sqls: &[&str]) -> Settings {
        let mut s = Settings::default();
        for sql in sqls {
            if let Some(op) = op_of(sql, &[]) {
                s.record(op, false);
            }
        }
        s
    }

    fn list(s: &Settings) -> Vec<&str> {
        s.current().iter().map(|a| &**a).collect()
    }

    #[test]
    fn each_setting_is_kept_once_in_the_order_it_took_effect() {
        let s = settings(&[
            "SET search_path = a",
            "SET statement_timeout TO '5s'",
            "set Search_Path = b",
            "SET TIME ZONE 'UTC'",
            "SET timezone = 'Europe/Paris'",
        ]);
        assert_eq!(
            list(&s),
            [
                "SET statement_timeout TO '5s'",
                "set Search_Path = b",
                "SET timezone = 'Europe/Paris'"
            ]
        );
    }

    #[test]
    fn resets_drop_what_they_undo() {
        let s = settings(&[
            "SET ROLE app",
            "SET search_path = a",
            "SET work_mem = '64MB'",
            "RESET work_mem",
        ]);
        assert_eq!(list(&s), ["SET ROLE app", "SET search_path = a"]);
        let s = settings(&["SET ROLE app", "SET search_path = a", "RESET ALL"]);
        assert_eq!(list(&s), ["SET ROLE app"], "RESET ALL keeps the role");
        let s = settings(&["SET ROLE app", "SET SESSION AUTHORIZATION DEFAULT"]);
        assert_eq!(list(&s), ["SET SESSION AUTHORIZATION DEFAULT"]);
        let s = settings(&["SET ROLE app", "SET a.b = 1", "DISCARD ALL"]);
        assert!(list(&s).is_empty());
        let s = settings(&["SET custom.x = 42", "RESET custom.x"]);
        assert_eq!(list(&s), ["RESET custom.x"], "a custom setting stays known");
        let s = settings(&["LOAD 'plpgsql'", "SET a.b = 1", "DISCARD ALL"]);
        assert_eq!(list(&s), ["LOAD 'plpgsql'"], "a library stays loaded");
        let s = settings(&["SET datestyle TO iso", "SET datestyle TO ymd"]);
        assert_eq!(
            list(&s),
            ["SET datestyle TO iso", "SET datestyle TO ymd"],
            "a partial datestyle keeps the one before"
        );
    }

    #[test]
    fn resets_return_to_the_startup_parameters() {
        let mut s = Settings::default();
        s.startup_default(op_of("SET datestyle = 'Postgres, MDY'", &[]).unwrap());
        s.record(op_of("SET datestyle TO iso", &[]).unwrap(), false);
        s.record(op_of("SET work_mem = '1MB'", &[]).unwrap(), false);
        s.record(op_of("RESET datestyle", &[]).unwrap(), false);
        assert_eq!(
            list(&s),
            ["SET work_mem = '1MB'", "SET datestyle = 'Postgres, MDY'"]
        );
        s.record(op_of("SET datestyle TO iso", &[]).unwrap(), false);
        s.record(op_of("RESET ALL", &[]).unwrap(), false);
        assert_eq!(list(&s), ["SET datestyle = 'Postgres, MDY'"]);
        s.record(op_of("DISCARD ALL", &[]).unwrap(), false);
        assert_eq!(list(&s), ["SET datestyle = 'Postgres, MDY'"]);
    }

    #[test]
    fn set_config_is_replayed_with_its_bound_value() {
        let v: &[u8] = b"it's";
        let op = op_of(
            "SELECT set_config('TimeZone', $1, false)",
            &[(true, Some(v))],
        );
        let mut s = Settings::default();
        s.record(op.unwrap(), false);
        assert_eq!(
            list(&s),
            ["SELECT pg_catalog.set_config('TimeZone', 'it''s', false)"]
        );
        assert!(op_of("SELECT set_config('a.b', 'c', true)", &[]).is_none());
    }

    #[test]
    fn a_transaction_s_settings_count_when_it_commits() {
        let mut s = Settings::default();
        s.record(op_of("SET a.b = 1", &[]).unwrap(), true);
        assert!(list(&s).is_empty());
        s.rollback();
        s.commit();
        assert!(list(&s).is_empty());
        s.record(op_of("SET a.b = 1", &[]).unwrap(), true);
        s.commit();
        assert_eq!(list(&s), ["SET a.b = 1"]);
    }

    #[test]
    fn a_node_gets_what_it_lacks_or_a_reset_and_everything() {
        let mut s = settings(&["SET a.b = 1"]);
        let mut applied = Vec::new();
        let mut out = BytesMut::new();
        assert_eq!(s.replay(&mut applied, &mut out), 1);
        assert_eq!(s.replay(&mut applied, &mut out), 0);
        s.record(op_of("SET a.c = 2", &[]).unwrap(), false);
        assert_eq!(s.replay(&mut applied, &mut out), 1, "only the new one");
        s.record(op_of("SET a.b = 3", &[]).unwrap(), false);
        assert_eq!(
            s.replay(&mut applied, &mut out),
            4,
            "reset (2) and both settings"
        );
    }
}
