//! The per-connection cache of classifications, keyed by a normalized text.

use std::collections::HashMap;

use super::lex::{Kind, Lexer};
use super::{Class, MAX_PARSE_LEN, classify_counted};

/// Key bytes that stand for a literal. They can never occur in a `&str`
/// (0xF8–0xFF are not UTF-8), so a key cannot confuse a literal with text.
const STRING: u8 = 0xFE;
const ESCAPE_STRING: u8 = 0xFD;
const NUMBER: u8 = 0xFF;

/// Texts whose key would be longer than this are not cached.
const MAX_KEY: usize = 16 * 1024;

/// Writes the cache key of `sql` into `key` and returns true, or returns
/// false if the text must not be cached (then `key` holds garbage).
///
/// The key is the text's token stream with what the classification cannot
/// depend on taken out: the hints of the leading comments become one byte;
/// other comments and whitespace become one space (present or not, as in
/// the text: `E'x'` and `E 'x'` are different things); unquoted words are
/// lower-cased (keywords and unquoted names are case-insensitive);
/// string and number constants become one byte for their kind; `$n`, quoted
/// identifiers and punctuation stay as written.
///
/// It refuses what it cannot key safely: texts whose string constants decide
/// their class (`set_config`, `standard_conforming_strings`), anything the
/// lexer cannot
/// tokenize, texts longer than [`MAX_PARSE_LEN`] (whose class depends on
/// their length), tokens that are not [`plain`](super::lex::Token::plain),
/// and comments glued to an operator.
pub(super) fn normalize(sql: &str, key: &mut Vec<u8>) -> bool {
    key.clear();
    if sql.len() > MAX_PARSE_LEN {
        return false;
    }
    key.push(0); // the hints, once known
    let mut lx = Lexer::new(sql);
    loop {
        let t = match lx.next_token() {
            Ok(Some(t)) => t,
            Ok(None) => break,
            Err(_) => return false,
        };
        if !t.plain {
            return false;
        }
        if t.space_before && key.len() > 1 {
            key.push(b' ');
        }
        let text = &sql.as_bytes()[t.start..t.end];
        match t.kind {
            // Their string arguments decide the class (which setting
            // `set_config` sets: a `ryw.*` one is the proxy's; the value
            // of standard_conforming_strings): not keyed without them.
            Kind::Word
                if text.eq_ignore_ascii_case(b"set_config")
                    || text.eq_ignore_ascii_case(b"standard_conforming_strings") =>
            {
                return false;
            }
            Kind::Word => key.extend(text.iter().map(u8::to_ascii_lowercase)),
            Kind::Quoted | Kind::Param | Kind::Punct => key.extend_from_slice(text),
            Kind::Str => key.push(STRING),
            Kind::EStr => key.push(ESCAPE_STRING),
            Kind::Num => key.push(NUMBER),
            Kind::Dollar => return false,
        }
        if key.len() > MAX_KEY {
            return false;
        }
    }
    if lx.glued_comment {
        return false;
    }
    key[0] = lx.hint.key_byte();
    true
}

/// A connection's cache of classifications: a hit costs one pass of the
/// lexer and a hash lookup (about 0.1 µs for pgbench's `SELECT`, in a
/// release build), where a miss parses (about 4 µs). Bounded: at most
/// [`ClassCache::DEFAULT_ENTRIES`] entries (or as many as asked) and 512 KiB
/// of keys, cleared when either is reached.
///
/// `pgbench -M simple` sends `SELECT abalance FROM pgbench_accounts WHERE
/// aid = 12345;` with a new number each time: all of them share one key.
/// `ryw.` commands are never cached (their class holds their value), so a
/// hit never allocates.
pub struct ClassCache {
    map: HashMap<Box<[u8]>, Class>,
    /// The key being built (kept to reuse its allocation).
    key: Vec<u8>,
    entries: usize,
    key_bytes: usize,
    hits: u64,
    parses: u64,
}

impl std::fmt::Debug for ClassCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassCache")
            .field("len", &self.map.len())
            .field("entries", &self.entries)
            .field("hits", &self.hits)
            .field("parses", &self.parses)
            .finish()
    }
}

impl Default for ClassCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ClassCache {
    /// Entries a cache holds by default before it is cleared.
    pub const DEFAULT_ENTRIES: usize = 4096;
    /// Key bytes a cache holds before it is cleared, whatever the entries.
    const MAX_KEY_BYTES: usize = 512 * 1024;

    /// A cache of [`ClassCache::DEFAULT_ENTRIES`] entries.
    pub fn new() -> Self {
        Self::with_entries(Self::DEFAULT_ENTRIES)
    }

    /// A cache of `entries` entries (at least one).
    pub fn with_entries(entries: usize) -> Self {
        Self {
            map: HashMap::new(),
            key: Vec::with_capacity(256),
            entries: entries.max(1),
            key_bytes: 0,
            hits: 0,
            parses: 0,
        }
    }

    /// Classifies `sql` as [`classify`](super::classify) does, from the
    /// cache when a text of the same key was classified before.
    pub fn classify(&mut self, sql: &str) -> Class {
        if !normalize(sql, &mut self.key) {
            return self.classify_uncached(sql);
        }
        if let Some(class) = self.map.get(self.key.as_slice()) {
            self.hits += 1;
            return class.clone();
        }
        let class = self.classify_uncached(sql);
        if class.ryw.is_none() {
            if self.map.len() >= self.entries
                || self.key_bytes + self.key.len() > Self::MAX_KEY_BYTES
            {
                self.map.clear();
                self.key_bytes = 0;
            }
            self.key_bytes += self.key.len();
            self.map.insert(self.key.as_slice().into(), class.clone());
        }
        class
    }

    fn classify_uncached(&mut self, sql: &str) -> Class {
        let (class, parsed) = classify_counted(sql);
        self.parses += u64::from(parsed);
        class
    }

    /// Classifications answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Texts sqlparser parsed (cache misses that needed a parse; a miss
    /// decided by keywords alone does not count).
    pub fn parses(&self) -> u64 {
        self.parses
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
