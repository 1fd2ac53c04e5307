//! `SELECT set_config(name, value, is_local)`: how drivers set a session
//! value they cannot put in a `SET` (PostgreSQL has no parameters there),
//! and how Django sets the time zone. The plain form (`SELECT
//! [pg_catalog.]set_config(a, b, c) [[AS] alias]`, each argument a
//! constant or a parameter, optionally cast) is a session setting like
//! `SET`, or, for a `ryw.` name, the proxy's own command. Any other use of
//! `set_config` (among other expressions, with a computed argument) keeps
//! the connection on the leader.

use super::lex::{Kind, Lexer, Token, name_text};

/// An argument of the call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Arg {
    /// A string or numeric constant, unquoted.
    Text(String),
    /// `$n` (1-based), bound by the client's `Bind`.
    Param(u16),
    /// `true` / `false`.
    Bool(bool),
}

impl Arg {
    /// The argument as a boolean (`is_local`), when it is a constant.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Arg::Bool(b) => Some(*b),
            Arg::Text(t) => parse_bool(t),
            Arg::Param(_) => None,
        }
    }
}

/// PostgreSQL's spellings of a boolean (`boolin`).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A plain `set_config` call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SetConfig {
    /// The setting's name.
    pub name: Arg,
    /// Its new value.
    pub value: Arg,
    /// `is_local`.
    pub local: Arg,
}

/// Parses one statement (the text between its first and last token).
pub fn parse(stmt: &str) -> Option<SetConfig> {
    let mut lx = Lexer::new(stmt);
    let mut toks: Vec<Token> = Vec::with_capacity(16);
    while let Ok(Some(t)) = lx.next_token() {
        if toks.len() == 32 {
            return None;
        }
        toks.push(t);
    }
    let mut p = Parser {
        src: stmt,
        toks: &toks,
        at: 0,
    };
    p.word("select")?;
    if p.peek_name("pg_catalog") && p.peek_punct_at(1, b'.') {
        p.at += 2;
    }
    p.word("set_config")?;
    p.punct(b'(')?;
    let name = p.arg()?;
    p.punct(b',')?;
    let value = p.arg()?;
    p.punct(b',')?;
    let local = p.arg()?;
    p.punct(b')')?;
    // An optional alias.
    if p.peek_name("as") {
        p.at += 1;
    }
    if p.at < toks.len() && matches!(toks[p.at].kind, Kind::Word | Kind::Quoted) {
        p.at += 1;
    }
    if p.at < toks.len() && p.peek_punct_at(0, b';') {
        p.at += 1;
    }
    (p.at == toks.len()).then_some(SetConfig { name, value, local })
}

struct Parser<'a> {
    src: &'a str,
    toks: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn tok(&self, i: usize) -> Option<Token> {
        self.toks.get(self.at + i).copied()
    }

    fn peek_name(&self, name: &str) -> bool {
        self.tok(0).is_some_and(|t| {
            matches!(t.kind, Kind::Word | Kind::Quoted)
                && name_text(self.src, &t).eq_ignore_ascii_case(name)
        })
    }

    fn peek_punct_at(&self, i: usize, c: u8) -> bool {
        self.tok(i)
            .is_some_and(|t| t.kind == Kind::Punct && self.src.as_bytes()[t.start] == c)
    }

    fn word(&mut self, w: &str) -> Option<()> {
        let t = self.tok(0)?;
        (t.kind == Kind::Word && self.src[t.start..t.end].eq_ignore_ascii_case(w)).then(|| {
            self.at += 1;
        })
    }

    fn punct(&mut self, c: u8) -> Option<()> {
        self.peek_punct_at(0, c).then(|| {
            self.at += 1;
        })
    }

    /// A constant or `$n`, then any number of `::type` casts.
    fn arg(&mut self) -> Option<Arg> {
        let t = self.tok(0)?;
        let raw = &self.src[t.start..t.end];
        let arg = match t.kind {
            Kind::Str if t.plain => Arg::Text(raw[1..raw.len() - 1].replace("''", "'")),
            Kind::EStr if t.plain => Arg::Text(raw[2..raw.len() - 1].replace("''", "'")),
            Kind::Num => Arg::Text(raw.to_owned()),
            Kind::Param => Arg::Param(raw[1..].parse().ok().filter(|&n| n > 0)?),
            Kind::Word if raw.eq_ignore_ascii_case("true") => Arg::Bool(true),
            Kind::Word if raw.eq_ignore_ascii_case("false") => Arg::Bool(false),
            _ => return None,
        };
        self.at += 1;
        while self.peek_punct_at(0, b':') && self.peek_punct_at(1, b':') {
            self.at += 2;
            let ty = self.tok(0)?;
            if !matches!(ty.kind, Kind::Word | Kind::Quoted) {
                return None;
            }
            self.at += 1;
            if self.peek_punct_at(0, b'.') {
                self.at += 1;
                let ty = self.tok(0)?;
                if !matches!(ty.kind, Kind::Word | Kind::Quoted) {
                    return None;
                }
                self.at += 1;
            }
        }
        Some(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_calls_parse_and_others_do_not() {
        let t = |s: &str| Arg::Text(s.to_owned());
        assert_eq!(
            parse("SELECT set_config('TimeZone', 'UTC', false)"),
            Some(SetConfig {
                name: t("TimeZone"),
                value: t("UTC"),
                local: Arg::Bool(false)
            })
        );
        assert_eq!(
            parse("select pg_catalog.set_config('ryw.session', $1::text, false) AS s;"),
            Some(SetConfig {
                name: t("ryw.session"),
                value: Arg::Param(1),
                local: Arg::Bool(false)
            })
        );
        assert_eq!(
            parse("SELECT set_config('a.b', 'it''s', 'on') x")
                .map(|c| (c.value, c.local.as_bool())),
            Some((t("it's"), Some(true)))
        );
        for other in [
            "SELECT set_config('a', 'b', false), 1",
            "SELECT set_config('a', lower('B'), false)",
            "SELECT set_config('a', 'b')",
            "SELECT 1, set_config('a', 'b', false)",
            "SELECT set_config('a', 'b', false) FROM t",
            "SELECT set_config('a', $0, false)",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
