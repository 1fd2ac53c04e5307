//! The proxy's own commands: `SET ryw.<name> = <value>`, `RESET ryw.<name>`,
//! `SHOW ryw.<name>`. Parsed from tokens, since the values are kept as the
//! client wrote them and sqlparser is not needed for so small a grammar.

use super::RywCommand;
use super::lex::{Kind, Lexer, Token, name_text};

/// Settings a client may `SET` and `RESET`.
pub(super) const SETTABLE: &[&str] = &["session", "token", "strategy", "scope"];
/// Settings a client may `SHOW` (the node that served the last statement
/// can only be read).
const SHOWABLE: &[&str] = &["session", "token", "strategy", "scope", "served_by"];

/// Parses one statement (the text between its first and last token) that
/// the scan recognised as a `ryw.` command.
pub(super) fn parse(stmt: &str) -> RywCommand {
    let mut lx = Lexer::new(stmt);
    let mut toks: Vec<Token> = Vec::new();
    while let Ok(Some(t)) = lx.next_token() {
        toks.push(t);
    }
    let text = |t: &Token| &stmt[t.start..t.end];
    let kw = |i: usize, kw: &str| {
        toks.get(i)
            .is_some_and(|t| t.kind == Kind::Word && text(t).eq_ignore_ascii_case(kw))
    };
    let punct = |i: usize, c: u8| {
        toks.get(i)
            .is_some_and(|t| t.kind == Kind::Punct && stmt.as_bytes()[t.start] == c)
    };
    let verb = if kw(0, "set") {
        Verb::Set
    } else if kw(0, "reset") {
        Verb::Reset
    } else {
        Verb::Show
    };
    // `SET LOCAL`: until the end of the transaction, as PostgreSQL's.
    let local = verb == Verb::Set && kw(1, "local");
    // `ryw` `.` name [`.` part]…
    let mut i = if verb == Verb::Set && (kw(1, "session") || local) {
        4
    } else {
        3
    };
    let mut name = String::new();
    loop {
        match toks.get(i) {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => {
                name.push_str(&name_text(stmt, t).to_ascii_lowercase());
            }
            _ => return invalid(verb.usage()),
        }
        i += 1;
        if !punct(i, b'.') {
            break;
        }
        name.push('.');
        i += 1;
    }
    // `i` is now the index of the token after the name.
    let known = match verb {
        Verb::Show => SHOWABLE,
        _ => SETTABLE,
    };
    if !known.contains(&name.as_str()) {
        return if SHOWABLE.contains(&name.as_str()) {
            invalid(&format!("parameter \"ryw.{name}\" cannot be changed"))
        } else {
            invalid(&format!("unknown ryw setting \"ryw.{name}\""))
        };
    }
    match verb {
        Verb::Show if toks.len() == i => RywCommand::Show(name),
        Verb::Reset if toks.len() == i => RywCommand::Reset(name),
        Verb::Set if (punct(i, b'=') || kw(i, "to")) && toks.len() == i + 2 => {
            let v = toks[i + 1];
            let raw = text(&v);
            let value = match v.kind {
                Kind::Word if raw.eq_ignore_ascii_case("default") => {
                    let reset = RywCommand::Reset(name);
                    return if local {
                        RywCommand::SetLocal(Box::new(reset))
                    } else {
                        reset
                    };
                }
                // An unquoted identifier is folded to lower case, as
                // PostgreSQL does with `SET x TO Value`.
                Kind::Word => raw.to_ascii_lowercase(),
                Kind::Quoted if v.plain => name_text(stmt, &v).replace("\"\"", "\""),
                Kind::Str if v.plain => unquote(&raw[1..]),
                Kind::EStr if v.plain => unquote(&raw[2..]),
                Kind::Num => raw.to_owned(),
                _ => return invalid("a ryw setting's value must be a plain string"),
            };
            let set = set(&name, value);
            if local {
                RywCommand::SetLocal(Box::new(set))
            } else {
                set
            }
        }
        _ => invalid(verb.usage()),
    }
}

/// `SET ryw.<name> = value` for a settable name.
pub(super) fn set(name: &str, value: String) -> RywCommand {
    match name {
        "session" => RywCommand::SetSession(value),
        "token" => RywCommand::SetToken(value),
        "scope" => RywCommand::SetScope(value),
        _ => RywCommand::SetStrategy(value),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Set,
    Reset,
    Show,
}

impl Verb {
    fn usage(self) -> &'static str {
        match self {
            Verb::Set => "invalid ryw command: expected SET ryw.<name> = '<value>'",
            Verb::Reset => "invalid ryw command: expected RESET ryw.<name>",
            Verb::Show => "invalid ryw command: expected SHOW ryw.<name>",
        }
    }
}

fn invalid(message: &str) -> RywCommand {
    RywCommand::Invalid(message.to_owned())
}

/// The inside of a `'…'` (given without its opening quote), with `''` as `'`.
fn unquote(s: &str) -> String {
    s[..s.len() - 1].replace("''", "'")
}
