//! One pass of the lexer over a whole text: split it into statements at
//! `;`, and for each keep its head (the first keywords, after any `EXPLAIN`
//! prefix) and a few flags the keyword decisions need. Memory does not grow
//! with the text's length (except for the rare `TABLE` keywords to rewrite),
//! so this pass also runs on texts too long to parse.

use super::deny;
use super::lex::{Hint, Kind, LexError, Lexer, Token, is_op_char, name_text};
use super::{Effect, MAX_PARSE_LEN};

/// How many tokens of a statement's head are kept.
const HEAD: usize = 8;

/// What the scan found out about one statement.
#[derive(Clone, Debug)]
pub(super) struct Stmt {
    /// The first tokens, after an `EXPLAIN [ANALYZE] [VERBOSE] [(…)]` prefix.
    head: [Option<Token>; HEAD],
    /// The statement starts with `EXPLAIN`.
    pub explain: bool,
    /// Byte span from the first token's start to the last token's end.
    pub start: usize,
    pub end: usize,
    /// The first deny-listed function called (`name (`), as listed.
    pub denied: Option<&'static str>,
    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE`.
    pub locking: bool,
    /// `INTO [LOCAL|GLOBAL] TEMP|TEMPORARY` not after `INSERT`/`MERGE`.
    pub into_temp: bool,
    /// `pg_temp.` anywhere: a temporary object, named by its schema.
    pub pg_temp: bool,
    /// `set_config(` anywhere: a session setting made by a function.
    pub set_config: bool,
    /// A name of the node's statistics (`pg_stat_…`, `pg_statio_…`)
    /// anywhere in the statement.
    pub statistics: bool,
    /// A session-level advisory lock taken (`pg_advisory_lock(`,
    /// `pg_try_advisory_lock(`, and their `_shared` forms): it lives in
    /// the leader's session.
    pub advisory_lock: bool,
    /// `WITH HOLD` (for `DECLARE`).
    pub with_hold: bool,
    /// A `U&"…"` identifier: its escapes could spell a deny-listed name
    /// that neither check would recognise.
    pub unicode_ident: bool,
    /// Deepest nesting of parentheses, brackets, `CASE` and runs of `NOT`.
    pub nesting: usize,
    /// Operators (runs of operator characters, `[`, `AND`, `OR`, `IS`, …):
    /// a bound on the depth of the left-deep chains they build.
    pub operators: usize,
    /// `TABLE` keywords that start a `TABLE name` query (byte spans), for
    /// the rewrite to `SELECT * FROM name` (kept only for texts short
    /// enough to parse).
    pub table_words: Vec<(usize, usize)>,
}

/// The first keywords of PostgreSQL's other statements (DDL, maintenance,
/// `CALL`, `DO`, …): "not a read". Any other first word: "unparseable".
const OTHER_STATEMENTS: &[&str] = &[
    "alter",
    "analyze",
    "analyse",
    "call",
    "checkpoint",
    "cluster",
    "comment",
    "create",
    "do",
    "drop",
    "grant",
    "import",
    "lock",
    "notify",
    "reassign",
    "refresh",
    "reindex",
    "revoke",
    "security",
    "truncate",
    "vacuum",
];

/// The keyword-level kind of a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StmtKind {
    /// `SET`/`RESET`/`SHOW ryw.…`: the proxy's own command.
    Ryw,
    /// `SELECT`, `WITH`, `VALUES`, `TABLE`, `(`, or `EXPLAIN` of one: needs a parse.
    Query,
    /// `SHOW name`.
    Show,
    /// Goes to the leader without a parse, for this reason.
    Leader(&'static str),
}

/// The whole text's scan.
#[derive(Debug)]
pub(super) struct Summary {
    pub hint: Hint,
    /// Non-empty statements.
    pub count: usize,
    /// The first statement (all that matters for routing when `count == 1`).
    pub first: Option<Stmt>,
    /// The statements' effects combined (see [`combine`]).
    pub effect: Effect,
    /// Some statement (of several) is a `ryw.` command.
    pub ryw_among_many: bool,
}

/// Scans a whole text.
pub(super) fn scan(src: &str) -> Result<Summary, LexError> {
    let mut lx = Lexer::new(src);
    let mut cur = Builder::new(src.len() <= MAX_PARSE_LEN);
    let mut count = 0usize;
    let mut first: Option<Stmt> = None;
    let mut effects = Effects::default();
    loop {
        let t = lx.next_token()?;
        let at_end = match t {
            None => true,
            Some(t) if t.kind == Kind::Punct && src.as_bytes()[t.start] == b';' => true,
            Some(t) => {
                cur.push(src, t);
                false
            }
        };
        if at_end && cur.tokens > 0 {
            let stmt =
                std::mem::replace(&mut cur, Builder::new(src.len() <= MAX_PARSE_LEN)).finish();
            count += 1;
            let kind = stmt.kind(src);
            effects.add(kind, stmt.effect(src, kind));
            if first.is_none() {
                first = Some(stmt);
            }
        }
        if t.is_none() {
            break;
        }
    }
    Ok(Summary {
        hint: lx.hint,
        count,
        first,
        effect: effects.combined(count),
        ryw_among_many: count > 1 && effects.ryw,
    })
}

/// Effects of the statements seen so far.
#[derive(Debug, Default)]
struct Effects {
    pins: bool,
    settings: usize,
    ends: bool,
    ryw: bool,
    single: Option<Effect>,
}

impl Effects {
    fn add(&mut self, kind: StmtKind, e: Effect) {
        self.ryw |= kind == StmtKind::Ryw;
        match e {
            Effect::PinsToLeader => self.pins = true,
            Effect::SessionSetting => self.settings += 1,
            Effect::EndsTransaction => self.ends = true,
            Effect::None => {}
        }
        if self.single.is_none() {
            self.single = Some(e);
        }
    }

    /// One statement: its effect. Several: [`combine`]'s rule.
    fn combined(&self, count: usize) -> Effect {
        if count <= 1 {
            return self.single.unwrap_or(Effect::None);
        }
        combine(count, self.settings, self.pins, self.ends)
    }
}

/// The effect of a text of several statements: pins first (state on the
/// leader only), then session settings (each setting statement of the text
/// is replayed on its own on other backends, never the rest of the text:
/// see [`setting_statements`]), then the end of a transaction.
pub(super) fn combine(count: usize, settings: usize, pins: bool, ends: bool) -> Effect {
    let _ = count;
    if pins {
        Effect::PinsToLeader
    } else if settings > 0 {
        Effect::SessionSetting
    } else if ends {
        Effect::EndsTransaction
    } else {
        Effect::None
    }
}

/// Builds a [`Stmt`] token by token.
#[derive(Debug)]
struct Builder {
    stmt: Stmt,
    keep_table_words: bool,
    tokens: usize,
    head_len: usize,
    /// Inside the `EXPLAIN` prefix: the depth of its option parentheses
    /// (which may only follow `EXPLAIN` itself).
    explain_prefix: Option<usize>,
    prev: Option<Token>,
    depth: usize,
    case_depth: usize,
    not_run: usize,
    /// After `INTO` (not after `INSERT`/`MERGE`), past any `LOCAL`/`GLOBAL`.
    after_into: bool,
}

impl Builder {
    fn new(keep_table_words: bool) -> Self {
        Self {
            stmt: Stmt {
                head: [None; HEAD],
                explain: false,
                start: 0,
                end: 0,
                denied: None,
                locking: false,
                into_temp: false,
                pg_temp: false,
                set_config: false,
                statistics: false,
                advisory_lock: false,
                with_hold: false,
                unicode_ident: false,
                nesting: 0,
                operators: 0,
                table_words: Vec::new(),
            },
            keep_table_words,
            tokens: 0,
            head_len: 0,
            explain_prefix: None,
            prev: None,
            depth: 0,
            case_depth: 0,
            not_run: 0,
            after_into: false,
        }
    }

    fn push(&mut self, src: &str, t: Token) {
        let s = &mut self.stmt;
        if self.tokens == 0 {
            s.start = t.start;
        }
        s.end = t.end;
        self.tokens += 1;
        let word = |tok: Option<Token>, kw: &str| is_kw(src, tok, kw);
        let this = Some(t);
        let byte = src.as_bytes()[t.start];
        let punct = |c: u8| t.kind == Kind::Punct && byte == c;

        // The head, past an EXPLAIN prefix.
        if self.tokens == 1 && word(this, "explain") {
            s.explain = true;
            self.explain_prefix = Some(0);
        } else if let Some(d) = self.explain_prefix {
            let option_word = ["analyze", "analyse", "verbose"]
                .iter()
                .any(|kw| word(this, kw));
            if punct(b'(') && (d > 0 || self.tokens == 2) {
                self.explain_prefix = Some(d + 1);
            } else if punct(b')') && d > 0 {
                self.explain_prefix = Some(d - 1);
            } else if d == 0 && !option_word {
                self.explain_prefix = None;
            }
        }
        if self.explain_prefix.is_none() && self.head_len < HEAD {
            s.head[self.head_len] = Some(t);
            self.head_len += 1;
        }

        // `name (`: a function call (or a column list, which costs at most a
        // needless trip to the leader).
        if punct(b'(')
            && let Some(p) = self.prev
            && matches!(p.kind, Kind::Word | Kind::Quoted)
        {
            let name = name_text(src, &p);
            if s.denied.is_none() {
                s.denied = deny::entry(name);
            }
            s.set_config |= name.eq_ignore_ascii_case("set_config");
            s.advisory_lock |= [
                "pg_advisory_lock",
                "pg_advisory_lock_shared",
                "pg_try_advisory_lock",
                "pg_try_advisory_lock_shared",
            ]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f));
        }
        if ["update", "share", "no", "key"]
            .iter()
            .any(|kw| word(this, kw))
            && word(self.prev, "for")
        {
            s.locking = true;
        }
        if punct(b'.')
            && let Some(p) = self.prev
            && matches!(p.kind, Kind::Word | Kind::Quoted)
            && name_text(src, &p).eq_ignore_ascii_case("pg_temp")
        {
            s.pg_temp = true;
        }
        if t.kind == Kind::Quoted && !t.plain {
            s.unicode_ident = true;
        }
        if matches!(t.kind, Kind::Word | Kind::Quoted)
            && super::local::listed(super::local::STATISTICS, name_text(src, &t))
        {
            s.statistics = true;
        }
        if word(this, "hold") && word(self.prev, "with") {
            s.with_hold = true;
        }
        if self.after_into {
            if word(this, "temp") || word(this, "temporary") {
                s.into_temp = true;
            }
            self.after_into = word(this, "local") || word(this, "global");
        }
        if word(this, "into") && !word(self.prev, "insert") && !word(self.prev, "merge") {
            self.after_into = true;
        }
        if self.keep_table_words
            && word(this, "table")
            && (self.prev.is_none()
                || self.prev.is_some_and(|p| {
                    p.kind == Kind::Punct && matches!(src.as_bytes()[p.start], b'(' | b')')
                })
                || [
                    "union",
                    "intersect",
                    "except",
                    "all",
                    "distinct",
                    "explain",
                    "analyze",
                    "analyse",
                    "verbose",
                ]
                .iter()
                .any(|kw| word(self.prev, kw)))
        {
            s.table_words.push((t.start, t.end));
        }

        // Nesting and operators: bounds on how deep the parse recurses.
        if punct(b'(') || punct(b'[') {
            self.depth += 1;
        } else if (punct(b')') || punct(b']')) && self.depth > 0 {
            self.depth -= 1;
        } else if word(this, "case") {
            self.case_depth += 1;
        } else if word(this, "end") && self.case_depth > 0 {
            self.case_depth -= 1;
        }
        self.not_run = if word(this, "not") {
            self.not_run + 1
        } else {
            0
        };
        s.nesting = s.nesting.max(self.depth + self.case_depth + self.not_run);
        let op_start = t.kind == Kind::Punct
            && is_op_char(byte)
            && !self.prev.is_some_and(|p| {
                p.kind == Kind::Punct && p.end == t.start && is_op_char(src.as_bytes()[p.start])
            });
        if op_start
            || punct(b'[')
            || [
                "and",
                "or",
                "not",
                "is",
                "isnull",
                "notnull",
                "collate",
                "at",
                "like",
                "ilike",
                "similar",
                "between",
                "overlaps",
                "in",
                "union",
                "intersect",
                "except",
            ]
            .iter()
            .any(|kw| word(this, kw))
        {
            s.operators += 1;
        }

        self.prev = this;
    }

    fn finish(self) -> Stmt {
        self.stmt
    }
}

/// `tok` is the unquoted keyword `kw` (lowercase).
pub(super) fn is_kw(src: &str, tok: Option<Token>, kw: &str) -> bool {
    tok.is_some_and(|t| t.kind == Kind::Word && src[t.start..t.end].eq_ignore_ascii_case(kw))
}

impl Stmt {
    /// The `i`th head token.
    pub fn head(&self, i: usize) -> Option<Token> {
        self.head.get(i).copied().flatten()
    }

    fn kw(&self, src: &str, i: usize, kw: &str) -> bool {
        is_kw(src, self.head(i), kw)
    }

    fn kw_any(&self, src: &str, i: usize, kws: &[&str]) -> bool {
        kws.iter().any(|kw| self.kw(src, i, kw))
    }

    /// The `ryw` in `SET [SESSION|LOCAL] ryw.…`, `RESET ryw.…`, `SHOW ryw.…`:
    /// the index of the head token `ryw`.
    pub fn ryw_at(&self, src: &str) -> Option<usize> {
        if self.explain {
            return None;
        }
        let at = if self.kw(src, 0, "set") {
            if self.kw_any(src, 1, &["session", "local"]) {
                2
            } else {
                1
            }
        } else if self.kw_any(src, 0, &["reset", "show"]) {
            1
        } else {
            return None;
        };
        let ryw = self.head(at)?;
        let dot = self.head(at + 1)?;
        let is_ryw = matches!(ryw.kind, Kind::Word | Kind::Quoted)
            && name_text(src, &ryw).eq_ignore_ascii_case("ryw");
        let is_dot = dot.kind == Kind::Punct && src.as_bytes()[dot.start] == b'.';
        (is_ryw && is_dot).then_some(at)
    }

    /// What kind of statement this is, from its head.
    pub fn kind(&self, src: &str) -> StmtKind {
        if self.ryw_at(src).is_some() {
            return StmtKind::Ryw;
        }
        let Some(first) = self.head(0) else {
            // `EXPLAIN` and nothing else.
            return StmtKind::Leader("unparseable");
        };
        if first.kind == Kind::Punct && src.as_bytes()[first.start] == b'(' {
            return StmtKind::Query;
        }
        if first.kind != Kind::Word {
            return StmtKind::Leader("unparseable");
        }
        let w = |kws: &[&str]| self.kw_any(src, 0, kws);
        if w(&["select", "with", "values", "table"]) {
            StmtKind::Query
        } else if self.explain {
            // EXPLAIN of anything but a query: the leader, for the reason
            // the statement itself would go there.
            match Stmt::kind(&self.without_explain(), src) {
                StmtKind::Leader(why) => StmtKind::Leader(why),
                _ => StmtKind::Leader("not a read"),
            }
        } else if w(&["show"]) {
            StmtKind::Show
        } else if w(&["insert", "update", "delete", "merge"]) {
            StmtKind::Leader("write")
        } else if w(&[
            "begin",
            "start",
            "commit",
            "end",
            "rollback",
            "abort",
            "savepoint",
            "release",
        ]) || (w(&["prepare"]) && self.kw(src, 1, "transaction"))
            || (w(&["set"]) && self.kw_any(src, 1, &["transaction", "constraints"]))
        {
            StmtKind::Leader("transaction control")
        } else if w(&["set", "reset", "discard"]) {
            StmtKind::Leader("session setting")
        } else if w(&[
            "prepare",
            "execute",
            "deallocate",
            "listen",
            "unlisten",
            "declare",
            "fetch",
            "move",
            "close",
            "load",
        ]) {
            StmtKind::Leader("session state")
        } else if w(&["copy"]) {
            StmtKind::Leader("copy")
        } else if w(OTHER_STATEMENTS) {
            StmtKind::Leader("not a read")
        } else {
            StmtKind::Leader("unparseable")
        }
    }

    fn without_explain(&self) -> Stmt {
        Stmt {
            explain: false,
            ..self.clone()
        }
    }

    /// `CREATE [OR REPLACE] [LOCAL|GLOBAL] TEMP|TEMPORARY …` (also `TEMP
    /// RECURSIVE VIEW`, `TEMP UNLOGGED`): `temp` must come before the
    /// object's name, with only these words before it.
    fn creates_temp(&self, src: &str) -> bool {
        let temp = |i: usize| self.kw_any(src, i, &["temp", "temporary"]);
        let Some(at) = (1..HEAD).find(|&i| temp(i)) else {
            return false;
        };
        (1..at).all(|i| self.kw_any(src, i, &["or", "replace", "local", "global"]))
    }

    /// What this statement does to the session (see [`Effect`]).
    pub fn effect(&self, src: &str, kind: StmtKind) -> Effect {
        if kind == StmtKind::Ryw {
            return Effect::None;
        }
        let w = |i: usize, kws: &[&str]| self.kw_any(src, i, kws);
        let by_head = if w(0, &["commit", "end", "abort"]) {
            Effect::EndsTransaction
        } else if w(0, &["rollback"]) {
            // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] x keeps the transaction.
            let next = if w(1, &["work", "transaction"]) { 2 } else { 1 };
            if w(next, &["to"]) {
                Effect::None
            } else {
                Effect::EndsTransaction
            }
        } else if w(0, &["prepare"]) {
            if w(1, &["transaction"]) {
                Effect::EndsTransaction
            } else {
                Effect::PinsToLeader
            }
        } else if w(0, &["set"]) {
            // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS last until the
            // end of the transaction; everything else, including SET
            // SESSION …, SET ROLE, SET TIME ZONE, SET NAMES, is the session's.
            // A session that turns standard_conforming_strings off splits
            // strings differently from this lexer and sqlparser: it stays on
            // the leader. Setting it to on (what it is by default; Rails
            // does it on every connection) changes nothing.
            let at = if w(1, &["session"]) { 2 } else { 1 };
            let name = self.head(at);
            if w(1, &["local", "transaction", "constraints"]) {
                Effect::None
            } else if name.is_some_and(|t| {
                matches!(t.kind, Kind::Word | Kind::Quoted)
                    && name_text(src, &t).eq_ignore_ascii_case("standard_conforming_strings")
            }) {
                let on = (w(at + 1, &["to"])
                    || self
                        .head(at + 1)
                        .is_some_and(|t| &src[t.start..t.end] == "="))
                    && self.head(at + 3).is_none()
                    && self.head(at + 2).is_some_and(|v| {
                        let text = &src[v.start..v.end];
                        let text = match v.kind {
                            Kind::Str if v.plain && text.len() >= 2 => &text[1..text.len() - 1],
                            Kind::Word => text,
                            _ => return false,
                        };
                        ["on", "true", "yes", "default"]
                            .iter()
                            .any(|x| text.eq_ignore_ascii_case(x))
                    });
                if on {
                    Effect::SessionSetting
                } else {
                    Effect::PinsToLeader
                }
            } else {
                Effect::SessionSetting
            }
        } else if w(0, &["reset", "discard", "load"]) {
            // `LOAD` too: a library loaded changes the session (its
            // settings); it is replayed on other nodes like a setting.
            Effect::SessionSetting
        } else if w(0, &["listen"])
            || (w(0, &["declare"]) && self.with_hold)
            || (w(0, &["create"]) && self.creates_temp(src))
        {
            Effect::PinsToLeader
        } else {
            Effect::None
        };
        let query = kind == StmtKind::Query;
        if by_head != Effect::None {
            return by_head;
        }
        // A plain `set_config(name, value, is_local)` is a setting like
        // `SET` (or `SET LOCAL`); any other use keeps the session on the
        // leader.
        let plain = if self.set_config {
            super::setconfig::parse(&src[self.start..self.end])
        } else {
            None
        };
        if let Some(call) = plain
            && !self.pg_temp
            && !self.advisory_lock
        {
            return match (&call.name, call.local.as_bool()) {
                (super::Arg::Text(_), Some(false)) => Effect::SessionSetting,
                (super::Arg::Text(_), Some(true)) => Effect::None,
                _ => Effect::PinsToLeader,
            };
        }
        if self.pg_temp || self.set_config || self.advisory_lock || (query && self.into_temp) {
            Effect::PinsToLeader
        } else {
            Effect::None
        }
    }
}

/// The statements of a text that are session settings (`SET`, `RESET`,
/// `DISCARD ALL`, a plain `set_config(…, false)`), as byte spans, in order:
/// what is replayed on other backends.
pub(super) fn setting_statements(src: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    each_statement(src, |stmt, kind| {
        if stmt.effect(src, kind) == Effect::SessionSetting {
            out.push((stmt.start, stmt.end));
        }
    });
    out
}

/// Whether a text makes session state the proxy cannot ask the leader
/// about: a `set_config` call other than a plain one, or `SET
/// standard_conforming_strings`.
pub(super) fn pins_lasting(src: &str) -> bool {
    let mut found = false;
    each_statement(src, |stmt, kind| {
        let computed_set_config = stmt.set_config
            && super::setconfig::parse(&src[stmt.start..stmt.end]).is_none_or(|c| {
                !matches!(c.name, super::Arg::Text(_)) || c.local.as_bool().is_none()
            });
        found |= computed_set_config
            || (stmt.effect(src, kind) == Effect::PinsToLeader && stmt.kw(src, 0, "set"));
    });
    found
}

/// Whether a text names the node's statistics anywhere (read, or kept in
/// a table: `CREATE TABLE x AS SELECT … FROM pg_stat_user_tables`).
pub(super) fn reads_statistics(src: &str) -> bool {
    let mut found = false;
    each_statement(src, |stmt, _| found |= stmt.statistics);
    found
}

/// Whether a text holds `DEALLOCATE` or `DISCARD ALL`.
pub(super) fn drops_prepared(src: &str) -> bool {
    let mut found = false;
    each_statement(src, |stmt, _| {
        found |=
            stmt.kw(src, 0, "deallocate") || (stmt.kw(src, 0, "discard") && stmt.kw(src, 1, "all"));
    });
    found
}

/// What a text's `DEALLOCATE` and `DISCARD ALL` statements drop, in order.
pub(super) fn prepared_effects(src: &str) -> Vec<super::PreparedEffect> {
    use super::PreparedEffect;
    let mut out = Vec::new();
    each_statement(src, |stmt, _| {
        if stmt.kw(src, 0, "discard") && stmt.kw(src, 1, "all") {
            out.push(PreparedEffect::DiscardAll);
        } else if stmt.kw(src, 0, "deallocate") {
            let at = if stmt.kw(src, 1, "prepare") { 2 } else { 1 };
            match stmt.head(at) {
                Some(t)
                    if t.kind == Kind::Word && name_text(src, &t).eq_ignore_ascii_case("all") =>
                {
                    out.push(PreparedEffect::DeallocateAll)
                }
                Some(t) if t.kind == Kind::Word => out.push(PreparedEffect::Deallocate(
                    name_text(src, &t).to_ascii_lowercase(),
                )),
                Some(t) if t.kind == Kind::Quoted => out.push(PreparedEffect::Deallocate(
                    name_text(src, &t).replace("\"\"", "\""),
                )),
                _ => {}
            }
        }
    });
    out
}

/// How many statements a text has if every one is a `DEALLOCATE`.
pub(super) fn only_deallocations(src: &str) -> Option<usize> {
    let (mut all, mut n) = (true, 0);
    each_statement(src, |stmt, _| {
        n += 1;
        all &= stmt.kw(src, 0, "deallocate");
    });
    (all && n > 0).then_some(n)
}

/// The prepared statement names a text's SQL `PREPARE name`, `EXECUTE
/// name` and `DEALLOCATE [PREPARE] name` statements use (as PostgreSQL folds
/// them): they share one namespace with the protocol's named statements.
pub(super) fn prepared_names(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    each_statement(src, |stmt, _| {
        let at = if stmt.kw(src, 0, "deallocate") {
            if stmt.kw(src, 1, "prepare") { 2 } else { 1 }
        } else if stmt.kw(src, 0, "execute")
            || (stmt.kw(src, 0, "prepare") && !stmt.kw(src, 1, "transaction"))
        {
            1
        } else {
            return;
        };
        match stmt.head(at) {
            Some(t) if t.kind == Kind::Word && !name_text(src, &t).eq_ignore_ascii_case("all") => {
                out.push(name_text(src, &t).to_ascii_lowercase())
            }
            Some(t) if t.kind == Kind::Quoted => out.push(name_text(src, &t).replace("\"\"", "\"")),
            _ => {}
        }
    });
    out
}

/// Calls `f` for each non-empty statement of a text that lexes.
fn each_statement(src: &str, mut f: impl FnMut(&Stmt, StmtKind)) {
    let mut lx = Lexer::new(src);
    let mut cur = Builder::new(false);
    loop {
        let Ok(t) = lx.next_token() else { return };
        let at_end = match t {
            None => true,
            Some(t) if t.kind == Kind::Punct && src.as_bytes()[t.start] == b';' => true,
            Some(t) => {
                cur.push(src, t);
                false
            }
        };
        if at_end && cur.tokens > 0 {
            let stmt = std::mem::replace(&mut cur, Builder::new(false)).finish();
            let kind = stmt.kind(src);
            f(&stmt, kind);
        }
        if t.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_statements_are_found_among_others() {
        let src = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;";
        let spans = setting_statements(src);
        assert_eq!(
            spans.iter().map(|&(a, b)| &src[a..b]).collect::<Vec<_>>(),
            ["RESET ALL"]
        );
        let src = "SET a.b = 1; SELECT 1; SELECT set_config('x.y', 'z', false)";
        assert_eq!(setting_statements(src).len(), 2);
    }

    #[test]
    fn statements_are_split_at_semicolons_outside_quotes() {
        let s = scan("SELECT ';'; SELECT $$;$$ ;; /* ; */ SELECT 1 -- ;\n").unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(scan(" ; ;").unwrap().count, 0);
        assert_eq!(scan("SELECT 1;").unwrap().count, 1);
    }

    #[test]
    fn explain_prefixes_are_skipped_for_the_head() {
        let src = "EXPLAIN (ANALYZE, FORMAT JSON) VERBOSE CREATE TEMP TABLE t AS SELECT 1";
        let s = scan(src).unwrap();
        let f = s.first.unwrap();
        assert!(f.explain);
        assert!(is_kw(src, f.head(0), "create"));
        assert!(is_kw(src, f.head(1), "temp"));
    }

    #[test]
    fn nesting_counts_parentheses_brackets_case_and_not_runs() {
        let f = |src: &str| scan(src).unwrap().first.unwrap().nesting;
        assert_eq!(f("SELECT ((1))"), 2);
        assert_eq!(f("SELECT ARRAY[[1]]"), 2);
        assert_eq!(
            f("SELECT CASE WHEN CASE WHEN true THEN 1 END THEN 1 END"),
            2
        );
        assert_eq!(f("SELECT NOT NOT NOT true"), 3);
        assert_eq!(f("SELECT (CASE WHEN NOT x THEN 1 END)"), 3);
    }

    #[test]
    fn operators_count_runs_not_characters() {
        let f = |src: &str| scan(src).unwrap().first.unwrap().operators;
        assert_eq!(f("SELECT a->>'b' = 'c' AND x::int <= 3"), 5);
        assert_eq!(f("SELECT 1 WHERE a IN (1, 2, 3)"), 1);
    }
}
