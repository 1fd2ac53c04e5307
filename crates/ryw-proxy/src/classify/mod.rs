//! Statement classification: what the proxy does with one statement text
//! (a simple `Query`'s, which may hold several statements, or a `Parse`'s).
//! Only a statement that is provably read-only may leave the leader.
//!
//! # What is a read
//!
//! [`Route::Read`] is given to exactly one statement, outside any
//! transaction (the proxy's business: it routes everything inside one to
//! the leader), that sqlparser parses as
//!
//! - `SELECT …`, `WITH … SELECT …`, `VALUES …`, `(SELECT …)`, `TABLE name`
//!   (which sqlparser cannot parse: it is checked as `SELECT * FROM name`),
//! - or `EXPLAIN` of one of those, with or without `ANALYZE` (which runs it),
//!
//! with no locking clause (`FOR UPDATE`/`NO KEY UPDATE`/`SHARE`/`KEY SHARE`)
//! and no data-modifying CTE at any depth, no `SELECT … INTO`, and no call
//! of a function on the deny-list ([`DENY`]) anywhere, in expressions or in
//! `FROM` (`FROM f(…)`, `LATERAL f(…)`). `SHOW name` is a read too, except
//! `SHOW ryw.…` (the proxy's) and the settings that tell a standby from the
//! primary (`transaction_read_only`, `default_transaction_read_only`,
//! `in_hot_standby`, `ALL`: the proxy stands for the leader).
//! Everything else goes to the leader, with a short reason in
//! [`Class::why`].
//!
//! # Why a deny-list
//!
//! A follower refuses a write with SQLSTATE 25006, and the proxy then runs
//! the statement again on the leader, so a write that slipped through would
//! cost a round trip, not a wrong answer. Not everything fails there:
//! `pg_advisory_lock` succeeds on a standby and takes the lock on the wrong
//! server; `currval` and `lastval` read the leader session's sequence state
//! and answer 55000, not 25006, on a standby; `set_config` changes the
//! follower's session only. The safety net alone is not enough, so such
//! calls are refused here, by name. The check runs twice: on sqlparser's
//! tree (every `Expr::Function` and `FROM` item) and on the tokens (every
//! `name (`), so that a place where sqlparser's tokens differ from
//! PostgreSQL's cannot hide a call. Neither sees calls made inside a view
//! or a function the statement calls: see the gaps below.
//!
//! # Effects
//!
//! [`Effect`] is read from the statements' leading keywords by a small
//! lexer that skips comments (sqlparser cannot parse many of them), for
//! every statement of a text, parsed or not. A text of several statements
//! gets one effect: anything that pins → `PinsToLeader`; else any session
//! setting → `SessionSetting` (each setting statement is replayed on its
//! own, [`setting_statements`], never the rest of the text: so a reset
//! sequence such as asyncpg's `SELECT pg_advisory_unlock_all(); CLOSE ALL;
//! UNLISTEN *; RESET ALL;` pins nothing); else `EndsTransaction` if one ends
//! a transaction. An effect other than `None` always goes with
//! [`Route::Leader`]. The effect is what the statement does if it commits.
//!
//! A read's function calls are listed in [`Class::functions`]: the proxy
//! lets it leave the leader only when the database's catalog says none of
//! them can write (IMMUTABLE or STABLE). A read of node- or session-local
//! state ([`local`]: statistics, locks, the session's prepared statements
//! and cursors, recovery state) goes to the leader, where the session is.
//!
//! # The cache
//!
//! [`ClassCache`] keys a connection's classifications by the text with its
//! literals taken out: comments become whitespace (the leading comments'
//! hints are kept), whitespace folds to one space, unquoted words fold to
//! lower case, string and number constants become one placeholder byte of
//! their kind; `$n`, quoted identifiers and punctuation stay. So
//! `… WHERE aid = 12345` and `… WHERE aid = 678` share one entry, and a hit
//! costs one pass of the lexer and a hash lookup instead of a parse. What
//! the lexer cannot key safely is classified every time (dollar quotes,
//! `E''` with backslashes, `B''`/`X''`/`N''`/`U&''`, numbers such as `0x1F`,
//! unterminated quotes, texts over [`MAX_PARSE_LEN`]).
//!
//! # Assumptions and limits
//!
//! - `standard_conforming_strings = on` (PostgreSQL's default): `'\'` is a
//!   whole string. With it off, this lexer, sqlparser and the server would
//!   split strings differently, so a session with it off must have all of
//!   its statements sent to the leader: `SET standard_conforming_strings`
//!   pins (whatever the value); a session that starts with it off (the
//!   backend's `ParameterStatus` says so) is the proxy's to pin.
//! - Texts over [`MAX_PARSE_LEN`] go to the leader unparsed ("too long").
//! - sqlparser recurses as deep as a query nests, and its stack use per
//!   level is large (measured: tens of KiB for a nested subquery in a
//!   release build, about 200 KiB in a debug build); its own recursion
//!   limit is not enough for a debug build on a 2 MiB thread, and a long
//!   chain of operators is dropped (and walked) recursively in any build.
//!   So before parsing, the token pass bounds the nesting (parentheses,
//!   brackets, `CASE`, runs of `NOT`) and the number of operators (which
//!   bounds left-deep chains such as `a OR b OR …`): 16 levels and 4,096
//!   operators in a release build, 6 and 256 in a debug build. Beyond that,
//!   "too deeply nested", to the leader. At these limits a release build
//!   classifies the worst shapes we know of on a 1 MiB stack, a debug build
//!   on 2 MiB (the tests run them on a 2 MiB thread). Call [`classify`] on
//!   a thread with at least 2 MiB of stack (tokio's default).
//! - `RESET ALL` and `DISCARD ALL` are `SessionSetting`s like any other;
//!   whether they also reset the proxy's `ryw.` settings (PostgreSQL's
//!   would reset placeholder settings) is the proxy's choice: they do not.
//!
//! # Known gaps (reads that go to the leader, and other limits)
//!
//! - What sqlparser 0.64 cannot parse goes to the leader ("unparseable"),
//!   reads included: `ROWS FROM (…)`, `a ISNULL`, `BETWEEN SYMMETRIC`,
//!   `IS DOCUMENT`, `FROM t *`, `WITH … SEARCH/CYCLE`, `TABLE name` anywhere
//!   but at the head of a query, after `(`, a set operator or `EXPLAIN`;
//!   also `FOR NO KEY UPDATE`/`FOR KEY SHARE` (found by the tokens, leader
//!   either way), `DO`.
//! - A query with a `U&"…"` identifier (its escapes could spell any name).
//! - Queries nested deeper, or with more operators, than the limits above.
//! - A column list after an alias that starts like a deny-listed name
//!   (`FROM t AS lo_x(a)`, `WITH dblink_rows(a) AS …`) reads as a call.
//! - Calls made inside views, functions or column defaults are not seen: a
//!   function that writes is refused by the follower (25006, the safety
//!   net), but one that takes an advisory lock, or reads `currval`, is not.
//! - Answers about the serving node come from a follower when asked in ways
//!   [`local`] does not list (a view of the user's over `pg_locks`, a
//!   function that reads statistics), and, on purpose, for
//!   `inet_server_addr()`/`inet_server_port()` (see [`local`]).
//! - Extensions' functions with side effects outside the database (as
//!   `dblink` has, which is listed) are not known.
//! - Session state made by other means than the statements listed under
//!   [`Effect`] (`LOAD`, `setseed()`, a function that calls `set_config`)
//!   is not tracked.
//! - `current_setting('ryw.session')` reaches a backend; only `SET`,
//!   `RESET`, `SHOW` and a plain `set_config('ryw.…', …)` are the proxy's
//!   commands.

mod cache;
mod deny;
mod lex;
pub mod local;
mod read;
mod ryw;
mod scan;
pub mod setconfig;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cache::ClassCache;
pub use deny::DENY;
pub use setconfig::{Arg, SetConfig};

use scan::StmtKind;

/// Texts longer than this (in bytes) go to the leader unparsed.
pub const MAX_PARSE_LEN: usize = 64 * 1024;

/// How deep a query may nest, and how many operators it may hold, to be
/// parsed (see the module docs: these bound the parser's stack use).
#[derive(Debug)]
struct Limits {
    nesting: usize,
    operators: usize,
}

const LIMITS: Limits = if cfg!(debug_assertions) {
    Limits {
        nesting: 6,
        operators: 256,
    }
} else {
    Limits {
        nesting: 16,
        operators: 4096,
    }
};

/// Where a statement goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Provably read-only: a fresh read, routed by the session's strategy.
    Read,
    /// `/* ryw:stale-ok */`: any follower in rotation may answer.
    StaleOk,
    /// Everything else: writes, DDL, transaction control, anything not
    /// provably read-only, unparseable text, `/* ryw:leader */`.
    Leader,
}

/// What a statement does to the client's session, beyond its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Nothing the proxy must track.
    None,
    /// Ends a transaction (`COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE
    /// TRANSACTION`, `COMMIT PREPARED`, `ROLLBACK PREPARED`; not `ROLLBACK
    /// TO SAVEPOINT`).
    EndsTransaction,
    /// A session setting that must hold on every backend the client
    /// reaches: `SET` (not `SET LOCAL`, `SET TRANSACTION`, `SET
    /// CONSTRAINTS`), `SET SESSION …`, `SET ROLE`, `SET SESSION
    /// AUTHORIZATION`, `SET TIME ZONE`, `SET NAMES`, `RESET`, `SET SESSION
    /// CHARACTERISTICS`, `DISCARD`, a plain `set_config(…, false)`. Each
    /// setting statement is replayed on its own ([`setting_statements`]).
    SessionSetting,
    /// Creates session state that lives on the leader only (`CREATE TEMP
    /// …`, `SELECT … INTO TEMP`, anything naming `pg_temp.`, SQL `PREPARE`,
    /// `LISTEN`, `DECLARE … WITH HOLD`, a `set_config(…)` call other than a
    /// plain one, `SET standard_conforming_strings`): the connection's reads
    /// stay on the leader until the state is gone (the proxy asks the
    /// leader).
    PinsToLeader,
}

/// A command the proxy answers itself; never forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RywCommand {
    /// `SET ryw.session = '<key>'` (also `TO`, `SET SESSION`, an unquoted
    /// value, which is folded to lower case as PostgreSQL does).
    SetSession(String),
    /// `SET ryw.token = '<signed token>'`.
    SetToken(String),
    /// `SET ryw.strategy = '<name[:duration]>'`.
    SetStrategy(String),
    /// `SET ryw.scope = '<connection|session|global|cluster>'`.
    SetScope(String),
    /// `SET LOCAL ryw.…` (a `Set…` or `Reset`): until the end of the
    /// transaction, as PostgreSQL's `SET LOCAL`.
    SetLocal(Box<RywCommand>),
    /// `SELECT set_config('ryw.<name>', value, is_local)` in its plain form
    /// (see [`setconfig`]): `name` without its `ryw.` prefix, lower case.
    /// Answers one row with the value, as PostgreSQL's `set_config` does.
    SetConfig {
        /// The setting (`session`, `token`, …).
        name: String,
        /// Its new value.
        value: Arg,
        /// `is_local`.
        local: Arg,
    },
    /// `RESET ryw.<name>` (also `SET ryw.<name> TO DEFAULT`): back to the
    /// default.
    Reset(String),
    /// `SHOW ryw.<name>` (`token`, `served_by`, `session`, `strategy`,
    /// `scope`).
    Show(String),
    /// A `ryw.` command the proxy must refuse with SQLSTATE 22023 and this
    /// message: an unknown name (`SHOW ryw.bogus`), setting
    /// `ryw.served_by`, a malformed command or value.
    Invalid(String),
}

/// What a text's `DEALLOCATE` or `DISCARD ALL` drops (see
/// [`prepared_effects`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreparedEffect {
    /// `DEALLOCATE [PREPARE] name`: that statement (a name as PostgreSQL
    /// folds it).
    Deallocate(String),
    /// `DEALLOCATE ALL`: every prepared statement.
    DeallocateAll,
    /// `DISCARD ALL`: every prepared statement, and all other session state.
    DiscardAll,
}

/// What the `DEALLOCATE` and `DISCARD ALL` statements of a text drop, in
/// order (for [`Class::drops_prepared`] texts).
pub fn prepared_effects(sql: &str) -> Vec<PreparedEffect> {
    scan::prepared_effects(sql)
}

/// What a text drops when it is nothing but `DEALLOCATE`s (`None` when
/// it has another statement, or none).
pub fn deallocations(sql: &str) -> Option<Vec<PreparedEffect>> {
    if !sql
        .trim_start()
        .get(..10)?
        .eq_ignore_ascii_case("deallocate")
    {
        return None;
    }
    let n = scan::only_deallocations(sql)?;
    let effects = scan::prepared_effects(sql);
    (effects.len() == n).then_some(effects)
}

/// The prepared statement names a text's SQL `PREPARE`, `EXECUTE` and
/// `DEALLOCATE` use: they share one namespace with the protocol's named
/// statements, which the proxy may have prepared on another node.
///
/// Texts that do not spell one of those keywords anywhere (most: a keyword
/// is a word of the text as written, whatever its case) are not scanned.
pub fn prepared_names(sql: &str) -> Vec<String> {
    if mentions_any(sql, &["prepare", "execute", "deallocate"]) {
        scan::prepared_names(sql)
    } else {
        Vec::new()
    }
}

/// Whether `sql` holds one of `words` (lower-case ASCII), in any case, at
/// the start of a word: a cheap necessary condition for a keyword to be
/// there (a keyword token is its text as written, after a byte that cannot
/// continue an identifier).
fn mentions_any(sql: &str, words: &[&str]) -> bool {
    let b = sql.as_bytes();
    let continues = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    (0..b.len()).any(|i| {
        (i == 0 || !continues(b[i - 1]))
            && words.iter().any(|w| {
                let w = w.as_bytes();
                b.len() - i >= w.len() && b[i..i + w.len()].eq_ignore_ascii_case(w)
            })
    })
}

/// Whether a pinning text made state the proxy cannot ask the leader
/// about (a computed `set_config`, `SET standard_conforming_strings`):
/// such a pin lasts until `RESET ALL` or `DISCARD ALL`.
pub fn pins_lasting(sql: &str) -> bool {
    scan::pins_lasting(sql)
}

/// The session settings of a text, each as a statement of its own to
/// replay on other backends (a text of several statements may mix them
/// with others, which are not run again).
pub fn setting_statements(sql: &str) -> Vec<&str> {
    scan::setting_statements(sql)
        .into_iter()
        .map(|(a, b)| &sql[a..b])
        .collect()
}

/// The classification of one statement text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// Where it goes.
    pub route: Route,
    /// What it does to the session.
    pub effect: Effect,
    /// A command for the proxy itself (then `route` is irrelevant).
    pub ryw: Option<RywCommand>,
    /// Why a statement goes to the leader, for logs and metrics (`"write"`,
    /// `"unparseable"`, `"hint"`, `"deny-listed function"`, …: see
    /// [`classify`]); empty for reads. [`denied_function`] names the
    /// function.
    pub why: &'static str,
    /// A read's function calls (names as PostgreSQL looks them up): it may
    /// leave the leader only if the catalog says none of them writes (see
    /// the proxy's catalog). `None` when it calls none.
    pub functions: Option<Arc<[Box<str>]>>,
    /// The relations a read reads (names as PostgreSQL looks them up): a
    /// sequence's state differs on a standby, and a relation the catalog
    /// does not know yet is read on the leader. `None` when it reads none.
    pub relations: Option<Arc<[Box<str>]>>,
    /// The text drops prepared statements (`DEALLOCATE`, `DISCARD ALL`):
    /// see [`prepared_effects`].
    pub drops_prepared: bool,
    /// The text names the node's statistics (`pg_stat_…`, `pg_statio_…`),
    /// however it uses them: the proxy keeps the session's reads on the
    /// leader from then on, so the statistics it reads count its own reads.
    pub statistics: bool,
}

impl Class {
    fn leader(why: &'static str, effect: Effect) -> Self {
        Self {
            route: Route::Leader,
            effect,
            ryw: None,
            why,
            functions: None,
            relations: None,
            drops_prepared: false,
            statistics: false,
        }
    }

    fn read(stale_ok: bool, uses: read::Uses) -> Self {
        Self {
            route: if stale_ok {
                Route::StaleOk
            } else {
                Route::Read
            },
            effect: Effect::None,
            ryw: None,
            why: "",
            functions: (!uses.functions.is_empty()).then(|| uses.functions.into()),
            relations: (!uses.relations.is_empty()).then(|| uses.relations.into()),
            drops_prepared: false,
            statistics: false,
        }
    }
}

/// Classifies one statement text.
///
/// The reasons (`why`) for the leader: `"write"`, `"transaction control"`,
/// `"session setting"`, `"session state"`, `"copy"`, `"not a read"` (DDL,
/// `CALL`, `DO`, `LOCK`, …), `"locking clause"`, `"data-modifying CTE"`,
/// `"select into"`, `"deny-listed function"`, `"server identity"`,
/// `"hint"`, `"multiple statements"`, `"ryw command among multiple
/// statements"` (a `SET ryw.…` in a text of several statements: not a
/// command for the proxy, which should refuse it rather than let the
/// backend take it as a placeholder setting), `"ryw command"`, `"empty"`,
/// `"unparseable"`, `"too long"`, `"too deeply nested"`.
pub fn classify(sql: &str) -> Class {
    classify_counted(sql).0
}

/// [`classify`], and whether it ran the parser.
fn classify_counted(sql: &str) -> (Class, bool) {
    let (mut class, parsed) = classify_scanned(sql);
    class.drops_prepared = scan::drops_prepared(sql);
    class.statistics = scan::reads_statistics(sql);
    (class, parsed)
}

fn classify_scanned(sql: &str) -> (Class, bool) {
    let Ok(summary) = scan::scan(sql) else {
        // An unterminated quote or comment: PostgreSQL runs none of it.
        return (Class::leader("unparseable", Effect::None), false);
    };
    let effect = summary.effect;
    let Some(stmt) = summary.first.as_ref() else {
        return (Class::leader("empty", effect), false);
    };
    if summary.count > 1 {
        let why = if summary.ryw_among_many {
            "ryw command among multiple statements"
        } else {
            "multiple statements"
        };
        return (Class::leader(why, effect), false);
    }
    let kind = stmt.kind(sql);
    if kind == StmtKind::Ryw {
        let command = ryw::parse(&sql[stmt.start..stmt.end]);
        return (
            Class {
                ryw: Some(command),
                ..Class::leader("ryw command", Effect::None)
            },
            false,
        );
    }
    if stmt.set_config
        && let Some(call) = setconfig::parse(&sql[stmt.start..stmt.end])
    {
        return (set_config_class(call), false);
    }
    if summary.hint.leader {
        return (Class::leader("hint", effect), false);
    }
    let verdict = match kind {
        StmtKind::Ryw => unreachable!("handled above"),
        StmtKind::Leader(why) => return (Class::leader(why, effect), false),
        StmtKind::Show => show(sql, stmt).map(|()| read::Uses::default()),
        StmtKind::Query => {
            if stmt.denied.is_some() {
                Err("deny-listed function")
            } else if stmt.locking {
                Err("locking clause")
            } else if stmt.unicode_ident {
                Err("unparseable")
            } else if sql.len() > MAX_PARSE_LEN {
                Err("too long")
            } else if stmt.nesting > LIMITS.nesting || stmt.operators > LIMITS.operators {
                Err("too deeply nested")
            } else {
                let rewritten = rewrite_table(sql, &stmt.table_words);
                let verdict = read::check(rewritten.as_deref().unwrap_or(sql));
                return (verdict_class(verdict, summary.hint.stale_ok, effect), true);
            }
        }
    };
    (verdict_class(verdict, summary.hint.stale_ok, effect), false)
}

fn verdict_class(
    verdict: Result<read::Uses, &'static str>,
    stale_ok: bool,
    effect: Effect,
) -> Class {
    match verdict {
        Ok(uses) if effect == Effect::None => Class::read(stale_ok, uses),
        // A read that also makes session state (`SELECT … FROM pg_temp.t`):
        // the state is on the leader.
        Ok(_) => Class::leader("session state", effect),
        Err(why) => Class::leader(why, effect),
    }
}

/// A plain `set_config` call: the proxy's command for a `ryw.` name; a
/// session setting (replayed like `SET`) when it is not local; nothing to
/// track when it is. A name or `is_local` given as a parameter cannot be
/// judged here: the connection stays on the leader.
fn set_config_class(call: SetConfig) -> Class {
    let name = match &call.name {
        Arg::Text(n) => n.to_ascii_lowercase(),
        _ => return Class::leader("session state", Effect::PinsToLeader),
    };
    if let Some(ryw) = name.strip_prefix("ryw.") {
        let command = if ryw::SETTABLE.contains(&ryw) {
            RywCommand::SetConfig {
                name: ryw.to_owned(),
                value: call.value,
                local: call.local,
            }
        } else {
            RywCommand::Invalid(format!(
                "unknown ryw setting \"ryw.{}\"",
                ryw.chars().take(64).collect::<String>()
            ))
        };
        return Class {
            ryw: Some(command),
            ..Class::leader("ryw command", Effect::None)
        };
    }
    match call.local.as_bool() {
        Some(false) => Class::leader("session setting", Effect::SessionSetting),
        Some(true) => Class::leader("session setting", Effect::None),
        None => Class::leader("session state", Effect::PinsToLeader),
    }
}

/// `SHOW name`: a read, unless it asks which kind of server this is.
fn show(sql: &str, stmt: &scan::Stmt) -> Result<(), &'static str> {
    const SERVER_IDENTITY: &[&str] = local::SETTINGS;
    let text = &sql[stmt.start..stmt.end];
    let mut lx = lex::Lexer::new(text);
    let mut names = Vec::new();
    let _show = lx.next_token();
    while let Ok(Some(t)) = lx.next_token() {
        let ok = match t.kind {
            lex::Kind::Word | lex::Kind::Quoted => true,
            lex::Kind::Punct => text.as_bytes()[t.start] == b'.',
            _ => false,
        };
        if !ok || names.len() == 8 {
            return Err("unparseable");
        }
        names.push(lex::name_text(text, &t));
    }
    match names.as_slice() {
        [] => Err("unparseable"),
        [name] if SERVER_IDENTITY.iter().any(|s| name.eq_ignore_ascii_case(s)) => {
            Err("server identity")
        }
        _ => Ok(()),
    }
}

/// `TABLE name` → `SELECT * FROM name` at the given spans, for sqlparser,
/// which does not know `TABLE`. The two mean the same in PostgreSQL.
fn rewrite_table(sql: &str, spans: &[(usize, usize)]) -> Option<String> {
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 8 * spans.len());
    let mut at = 0;
    for &(start, end) in spans {
        out.push_str(&sql[at..start]);
        out.push_str("SELECT * FROM");
        at = end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// The deny-listed function a text calls (the first, as listed in
/// [`DENY`], e.g. `"pg_advisory_*"`), for logs: [`Class::why`] says only
/// `"deny-listed function"`.
pub fn denied_function(sql: &str) -> Option<&'static str> {
    let mut lx = lex::Lexer::new(sql);
    let mut prev: Option<lex::Token> = None;
    while let Ok(Some(t)) = lx.next_token() {
        if t.kind == lex::Kind::Punct
            && sql.as_bytes()[t.start] == b'('
            && let Some(p) = prev
            && matches!(p.kind, lex::Kind::Word | lex::Kind::Quoted)
            && let Some(entry) = deny::entry(lex::name_text(sql, &p))
        {
            return Some(entry);
        }
        prev = Some(t);
    }
    None
}
