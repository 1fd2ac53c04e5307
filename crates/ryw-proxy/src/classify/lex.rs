//! A small lexer for PostgreSQL statement texts: just enough to split a text
//! into statements, read their leading keywords and the `ryw:` hints, and
//! build the cache key. It follows PostgreSQL's own lexer (`scan.l`) where
//! that matters for those jobs (string, identifier and dollar quoting, nested
//! comments, `--` ending at `\n` or `\r`) and assumes
//! `standard_conforming_strings = on`, as PostgreSQL does by default: a
//! backslash escapes only inside `E'…'`.
//!
//! It is not a parser: the keyword decisions it feeds are about statement
//! heads (`SET LOCAL`, `ROLLBACK TO`, `CREATE TEMP`), never about whether a
//! statement is a read; that takes sqlparser (`read.rs`).

/// What a token is. Keywords are [`Kind::Word`]s: PostgreSQL keywords are
/// unquoted words, compared case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// An unquoted identifier or keyword.
    Word,
    /// A `"quoted identifier"` (also `U&"…"`).
    Quoted,
    /// A string constant: `'…'`, also `B'…'`, `X'…'`, `N'…'`, `U&'…'`.
    Str,
    /// An escape string constant `E'…'` (backslash escapes).
    EStr,
    /// A numeric constant.
    Num,
    /// A parameter `$1`.
    Param,
    /// A dollar-quoted string `$tag$…$tag$`.
    Dollar,
    /// One byte of punctuation or operator.
    Punct,
}

/// One token: where it is in the text, and what the cache key may do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Kind,
    /// Byte offsets in the text (always on `char` boundaries).
    pub start: usize,
    pub end: usize,
    /// Whitespace or a comment came between this token and the previous one.
    pub space_before: bool,
    /// The normalizer may key this token by its kind alone (a literal) or by
    /// its text. False for the forms whose tokenization by sqlparser might
    /// depend on the literal's content or differ from PostgreSQL's: prefixed
    /// strings (`B''`, `X''`, `N''`, `U&''`), `E''` strings that hold a
    /// backslash, dollar quotes, numbers outside `digits[.digits][e[±]digits]`
    /// (`0x1F`, `1_000`, `.5`, `1.`, `1abc`), `$1abc`.
    pub plain: bool,
}

/// The `ryw:` hints found in the comments before the first token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Hint {
    /// `ryw:leader`
    pub leader: bool,
    /// `ryw:stale-ok`
    pub stale_ok: bool,
}

impl Hint {
    /// The hint as one byte of the cache key.
    pub fn key_byte(self) -> u8 {
        u8::from(self.leader) | (u8::from(self.stale_ok) << 1)
    }
}

/// The text cannot be tokenized: an unterminated quote or comment, or a `$`
/// that starts neither a parameter nor a dollar quote. PostgreSQL rejects
/// such a text as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LexError;

/// The lexer: call [`Lexer::next_token`] until it returns `Ok(None)`.
#[derive(Debug)]
pub(super) struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    seen_token: bool,
    /// End of the previous token if it was an operator character.
    prev_op_end: Option<usize>,
    /// Hints from the comments before the first token.
    pub hint: Hint,
    /// A comment started right after an operator character (`+/* */`,
    /// `+--`): PostgreSQL ends the operator there, sqlparser makes the
    /// comment's opening part of a custom operator. The two texts with and
    /// without the comment may then parse differently, so the cache key,
    /// which drops comments, must not cover such a text.
    pub glued_comment: bool,
}

/// PostgreSQL's operator characters (`scan.l`'s `op_chars`), plus `:` for
/// `::`. Used to count operators and to spot glued comments.
pub(super) fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
            | b':'
    )
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// A dollar-quote tag character (no `$`, unlike identifiers).
fn is_tag_cont(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

impl<'a> Lexer<'a> {
    /// A lexer over one text.
    pub fn new(src: &'a str) -> Self {
        Self {
            src,
            b: src.as_bytes(),
            pos: 0,
            seen_token: false,
            prev_op_end: None,
            hint: Hint::default(),
            glued_comment: false,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    /// The next token, skipping whitespace and comments.
    pub fn next_token(&mut self) -> Result<Option<Token>, LexError> {
        let mut space = false;
        loop {
            let Some(c) = self.at(self.pos) else {
                return Ok(None);
            };
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                    self.pos += 1;
                    space = true;
                }
                b'-' if self.at(self.pos + 1) == Some(b'-') => {
                    self.note_glued();
                    let body = self.pos + 2;
                    let end = self.b[body..]
                        .iter()
                        .position(|&c| c == b'\n' || c == b'\r')
                        .map_or(self.b.len(), |n| body + n);
                    self.note_hints(body, end);
                    self.pos = end;
                    space = true;
                }
                b'/' if self.at(self.pos + 1) == Some(b'*') => {
                    self.note_glued();
                    let body = self.pos + 2;
                    let end = self.block_comment_end(body)?;
                    self.note_hints(body, end - 2);
                    self.pos = end;
                    space = true;
                }
                _ => break,
            }
        }
        let start = self.pos;
        let c = self.b[start];
        let (kind, plain) = match c {
            b'\'' => {
                self.pos = self.quoted_end(start + 1, b'\'')?;
                (Kind::Str, true)
            }
            b'"' => {
                self.pos = self.quoted_end(start + 1, b'"')?;
                (Kind::Quoted, true)
            }
            b'$' => self.dollar(start)?,
            b'0'..=b'9' => (Kind::Num, self.number(start)),
            b'.' if self.at(start + 1).is_some_and(|d| d.is_ascii_digit()) => {
                self.number(start);
                (Kind::Num, false)
            }
            c if is_ident_start(c) => self.word(start)?,
            _ => {
                self.pos = start + 1;
                (Kind::Punct, true)
            }
        };
        self.seen_token = true;
        self.prev_op_end = (kind == Kind::Punct && is_op_char(c)).then_some(self.pos);
        Ok(Some(Token {
            kind,
            start,
            end: self.pos,
            space_before: space,
            plain,
        }))
    }

    fn note_glued(&mut self) {
        if self.prev_op_end == Some(self.pos) {
            self.glued_comment = true;
        }
    }

    /// Reads `ryw:leader` / `ryw:stale-ok` from a comment before the first
    /// token: a word of the comment, case-insensitive.
    fn note_hints(&mut self, body: usize, end: usize) {
        if self.seen_token {
            return;
        }
        for word in self.src[body..end].split_ascii_whitespace() {
            if word.eq_ignore_ascii_case("ryw:leader") {
                self.hint.leader = true;
            } else if word.eq_ignore_ascii_case("ryw:stale-ok") {
                self.hint.stale_ok = true;
            }
        }
    }

    /// The end (past `*/`) of a block comment whose body starts at `i`;
    /// block comments nest, as in PostgreSQL.
    fn block_comment_end(&self, mut i: usize) -> Result<usize, LexError> {
        let mut depth = 1usize;
        while i + 1 < self.b.len() {
            match (self.b[i], self.b[i + 1]) {
                (b'/', b'*') => {
                    depth += 1;
                    i += 2;
                }
                (b'*', b'/') => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => i += 1,
            }
        }
        Err(LexError)
    }

    /// The end (past the closing quote) of a `'…'` or `"…"` whose body starts
    /// at `i`; a doubled quote stands for one.
    fn quoted_end(&self, mut i: usize, quote: u8) -> Result<usize, LexError> {
        loop {
            let n = self.b[i..]
                .iter()
                .position(|&c| c == quote)
                .ok_or(LexError)?;
            i += n + 1;
            if self.at(i) != Some(quote) {
                return Ok(i);
            }
            i += 1;
        }
    }

    /// The end of an `E'…'` whose body starts at `i`, and whether it holds a
    /// backslash (which escapes the next byte, a quote included).
    fn escape_string_end(&self, mut i: usize) -> Result<(usize, bool), LexError> {
        let mut backslash = false;
        loop {
            match self.at(i) {
                None => return Err(LexError),
                Some(b'\\') => {
                    backslash = true;
                    i += 2;
                }
                Some(b'\'') if self.at(i + 1) == Some(b'\'') => i += 2,
                Some(b'\'') => return Ok((i + 1, backslash)),
                Some(_) => i += 1,
            }
        }
    }

    /// `$1` or `$tag$…$tag$`.
    fn dollar(&mut self, start: usize) -> Result<(Kind, bool), LexError> {
        let mut i = start + 1;
        if self.at(i).is_some_and(|c| c.is_ascii_digit()) {
            while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            let mut plain = true;
            while self.at(i).is_some_and(is_ident_cont) {
                plain = false;
                i += 1;
            }
            self.pos = i;
            return Ok((Kind::Param, plain));
        }
        if self.at(i).is_some_and(is_ident_start) {
            while self.at(i).is_some_and(is_tag_cont) {
                i += 1;
            }
        }
        if self.at(i) != Some(b'$') {
            return Err(LexError);
        }
        let tag = &self.src[start..=i];
        let body = i + 1;
        let close = self.src[body..].find(tag).ok_or(LexError)?;
        self.pos = body + close + tag.len();
        Ok((Kind::Dollar, false))
    }

    /// A number; returns whether it has the plain form
    /// `digits[.digits][(e|E)[+-]digits]` and is not followed by junk.
    fn number(&mut self, start: usize) -> bool {
        let digits = |lx: &Self, mut i: usize| {
            while lx.at(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            i
        };
        let mut plain = true;
        let mut i = digits(self, start);
        if i == start {
            plain = false; // `.5`
        }
        if self.at(i) == Some(b'.') && self.at(i + 1) != Some(b'.') {
            let frac = digits(self, i + 1);
            if frac == i + 1 {
                plain = false; // `1.`
            }
            i = frac;
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.at(i + 1), Some(b'+' | b'-')));
            let exp = i + 1 + sign;
            if self.at(exp).is_some_and(|c| c.is_ascii_digit()) {
                i = digits(self, exp);
            }
        }
        // Trailing junk (`0x1F`, `1_000`, `1abc`, `1e`) belongs to the token
        // in PostgreSQL 15 and later, and makes it not plain; so does a
        // following `.` (`1.5.3`, `1..2`).
        while self.at(i).is_some_and(is_ident_cont) {
            plain = false;
            i += 1;
        }
        if self.at(i) == Some(b'.') {
            plain = false;
        }
        self.pos = i;
        plain
    }

    /// A word, or a string or identifier with a one-letter prefix
    /// (`E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`, `U&"…"`).
    fn word(&mut self, start: usize) -> Result<(Kind, bool), LexError> {
        let mut i = start + 1;
        while self.at(i).is_some_and(is_ident_cont) {
            i += 1;
        }
        if i == start + 1 {
            let quote = self.at(i);
            match (self.b[start].to_ascii_lowercase(), quote) {
                (b'e', Some(b'\'')) => {
                    let (end, backslash) = self.escape_string_end(i + 1)?;
                    self.pos = end;
                    return Ok((Kind::EStr, !backslash));
                }
                (b'b' | b'x' | b'n', Some(b'\'')) => {
                    self.pos = self.quoted_end(i + 1, b'\'')?;
                    return Ok((Kind::Str, false));
                }
                (b'u', Some(b'&')) => {
                    if let Some(q @ (b'\'' | b'"')) = self.at(i + 1) {
                        self.pos = self.quoted_end(i + 2, q)?;
                        let kind = if q == b'\'' { Kind::Str } else { Kind::Quoted };
                        return Ok((kind, false));
                    }
                }
                _ => {}
            }
        }
        self.pos = i;
        Ok((Kind::Word, true))
    }
}

/// The text of an unquoted word or the inside of a quoted identifier, for
/// name comparisons (a doubled `""` stays doubled: no listed name has one).
pub(super) fn name_text<'a>(src: &'a str, t: &Token) -> &'a str {
    let s = &src[t.start..t.end];
    match t.kind {
        Kind::Quoted if s.starts_with('"') && s.len() >= 2 => &s[1..s.len() - 1],
        Kind::Quoted => {
            // U&"…": not decoded; compare the raw inside.
            s.get(3..s.len().saturating_sub(1)).unwrap_or("")
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str, bool)> {
        let mut lx = Lexer::new(sql);
        let mut out = Vec::new();
        while let Some(t) = lx.next_token().unwrap() {
            out.push((t.kind, &sql[t.start..t.end], t.plain));
        }
        out
    }

    #[test]
    fn strings_identifiers_and_dollar_quotes_are_single_tokens() {
        use Kind::*;
        assert_eq!(
            kinds(r#"select 'it''s', E'a\'b', "Q""x", $x$ ; $x$, $1, B'01'"#),
            vec![
                (Word, "select", true),
                (Str, "'it''s'", true),
                (Punct, ",", true),
                (EStr, r"E'a\'b'", false),
                (Punct, ",", true),
                (Quoted, r#""Q""x""#, true),
                (Punct, ",", true),
                (Dollar, "$x$ ; $x$", false),
                (Punct, ",", true),
                (Param, "$1", true),
                (Punct, ",", true),
                (Str, "B'01'", false),
            ]
        );
    }

    #[test]
    fn a_backslash_does_not_escape_in_a_standard_string() {
        // standard_conforming_strings = on: '\' is a whole string.
        let toks = kinds(r"x = '\'; DELETE FROM t; --'");
        assert_eq!(toks[2], (Kind::Str, r"'\'", true));
        assert_eq!(toks[3].1, ";");
        assert_eq!(toks[4].1, "DELETE");
    }

    #[test]
    fn comments_nest_and_line_comments_end_at_cr() {
        let toks = kinds("/* a /* b */ c */ x --y\rz");
        assert_eq!(toks.iter().map(|t| t.1).collect::<Vec<_>>(), vec!["x", "z"]);
    }

    #[test]
    fn numbers_outside_the_plain_form_are_marked() {
        for (sql, plain) in [
            ("12", true),
            ("1.5", true),
            ("1e5", true),
            ("1.5E-3", true),
            ("0x1F", false),
            ("1_000", false),
            (".5", false),
            ("1.", false),
            ("1abc", false),
            ("1e", false),
            ("1.5.3", false),
        ] {
            let toks = kinds(sql);
            assert_eq!(toks[0].0, Kind::Num, "{sql}");
            assert_eq!(toks[0].2, plain, "{sql}");
        }
    }

    #[test]
    fn unterminated_quotes_comments_and_stray_dollars_are_errors() {
        for sql in [
            "'abc",
            "\"abc",
            "E'abc\\'",
            "/* a /* b */",
            "$x$ abc",
            "SELECT $",
        ] {
            let mut lx = Lexer::new(sql);
            let r =
                std::iter::from_fn(|| lx.next_token().transpose()).collect::<Result<Vec<_>, _>>();
            assert_eq!(r, Err(LexError), "{sql}");
        }
    }

    #[test]
    fn hints_come_from_comments_before_the_first_token_only() {
        let mut lx = Lexer::new("-- app\n/* RYW:Leader */ select /* ryw:stale-ok */ 1");
        while lx.next_token().unwrap().is_some() {}
        assert_eq!(
            lx.hint,
            Hint {
                leader: true,
                stale_ok: false
            }
        );
    }

    #[test]
    fn a_comment_glued_to_an_operator_is_noted() {
        for (sql, glued) in [
            ("1 +/* c */ 2", true),
            ("1 + /* c */ 2", false),
            ("1 +-- c\n2", true),
        ] {
            let mut lx = Lexer::new(sql);
            while lx.next_token().unwrap().is_some() {}
            assert_eq!(lx.glued_comment, glued, "{sql}");
        }
    }
}
