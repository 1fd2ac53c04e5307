//! The client's prepared statements (protocol-level, named and unnamed):
//! each `Parse` as sent, so that a node that lacks a statement gets it
//! before a `Bind` or `Describe` that uses it, and its classification. The
//! bytes held count toward the client's memory limit.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::Backend;
use crate::classify::{Class, PreparedEffect};

/// What the proxy knows of a client's prepared statement.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    /// The client's `Parse`, as sent.
    pub parse: Bytes,
    pub class: Class,
    /// Unique in the process, new each time the client prepares the name.
    pub version: u64,
    /// Its name on the nodes: the client's own in session mode; in
    /// transaction mode, a name of the proxy's derived from the text and
    /// parameter types (`ryw_<hash>`), so that a pooled connection holds
    /// one copy for every client that prepares the same statement.
    pub server_name: Arc<str>,
    /// The `Parse` under that name: replayed on a connection that lacks it.
    pub server_parse: Bytes,
}

/// The client's statements by name (`""` is the unnamed one).
#[derive(Debug, Default)]
pub(super) struct Statements {
    map: HashMap<String, Prepared>,
    bytes: usize,
    /// Transaction pooling: statements are renamed on the nodes.
    pooled: bool,
}

/// The name of a client's statement on pooled connections: from its text
/// and parameter types (a `Parse` body after its name), the same for every
/// client.
pub(super) fn server_name(parse_rest: &[u8]) -> Arc<str> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parse_rest.hash(&mut h);
    Arc::from(format!("ryw_{:016x}", h.finish()))
}

/// A `Parse` message's body after its statement name (text and types).
pub(super) fn parse_rest(parse: &[u8]) -> &[u8] {
    let body = &parse[5..];
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    &body[(end + 1).min(body.len())..]
}

/// A `Parse` message under another name.
pub(super) fn renamed_parse(name: &str, rest: &[u8]) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(5 + name.len() + 1 + rest.len());
    out.extend_from_slice(&[b'P', 0, 0, 0, 0]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(rest);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// Bytes counted per statement beside its `Parse` (the map's own cost).
const OVERHEAD: usize = 96;

impl Statements {
    /// A registry; `pooled`: statements are renamed on the nodes.
    pub fn new(pooled: bool) -> Statements {
        Statements {
            pooled,
            ..Statements::default()
        }
    }

    /// The statement called `name`.
    pub fn get(&self, name: &str) -> Option<&Prepared> {
        self.map.get(name)
    }

    /// Whether the client has no statement (then no SQL `EXECUTE` or
    /// `DEALLOCATE` can name one of its protocol statements).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// What the registry holds, for the client's memory limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The client prepared `name` (again), as `version`.
    pub fn insert(&mut self, name: &str, parse: Bytes, class: Class, version: u64) {
        let (server_name, server_parse) = if self.pooled && !name.is_empty() {
            let rest = parse_rest(&parse);
            let server = server_name(rest);
            let renamed = renamed_parse(&server, rest);
            (server, renamed)
        } else {
            (Arc::from(name), parse.clone())
        };
        let size = |p: &Prepared| p.parse.len() + p.server_parse.len() + 2 * name.len() + OVERHEAD;
        let new = Prepared {
            parse,
            class,
            version,
            server_name,
            server_parse,
        };
        self.bytes += size(&new);
        if let Some(old) = self.map.insert(name.to_owned(), new) {
            self.bytes -= size(&old);
        }
    }

    /// Whether statements are renamed on the nodes (transaction pooling).
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    /// Puts back what `name` was before a `Parse` or `Close` that did not
    /// take effect (its batch failed before the server reached it).
    pub fn restore(&mut self, name: &str, before: Option<Prepared>) {
        self.remove(name);
        if let Some(p) = before {
            self.bytes += p.parse.len() + p.server_parse.len() + 2 * name.len() + OVERHEAD;
            self.map.insert(name.to_owned(), p);
        }
    }

    /// The client closed `name`.
    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.map.remove(name) {
            self.bytes -= old.parse.len() + old.server_parse.len() + 2 * name.len() + OVERHEAD;
        }
    }

    /// Every named statement is gone (`DEALLOCATE ALL`, `DISCARD ALL`); the
    /// unnamed one stays (PostgreSQL's does too).
    pub fn remove_named(&mut self) {
        let names: Vec<String> = self.map.keys().filter(|k| !k.is_empty()).cloned().collect();
        for name in names {
            self.remove(&name);
        }
    }

    /// A `DEALLOCATE` or `DISCARD ALL` that ran on backend `ran_on`: the
    /// client's statements it dropped are forgotten; other nodes' copies
    /// are closed with the next batch sent there (so a `Bind` of a dropped
    /// statement fails everywhere, as it would on one server).
    pub fn dropped(
        &mut self,
        effect: &PreparedEffect,
        backends: &mut [Option<Backend>],
        ran_on: usize,
    ) {
        match effect {
            PreparedEffect::Deallocate(name) => {
                self.remove(name);
                for (i, b) in backends.iter_mut().enumerate() {
                    let Some(b) = b else { continue };
                    if b.prepared.remove(name).is_some() && i != ran_on {
                        b.pending_close.push(name.clone());
                    }
                }
            }
            PreparedEffect::DeallocateAll | PreparedEffect::DiscardAll => {
                self.remove_named();
                // A pooled connection's statements of every client are gone
                // too.
                if let Some(b) = backends.get_mut(ran_on).and_then(Option::as_mut) {
                    b.pooled.clear();
                    b.stale.clear();
                }
                for (i, b) in backends.iter_mut().enumerate() {
                    let Some(b) = b else { continue };
                    let names: Vec<String> = b.prepared.drain().map(|(n, _)| n).collect();
                    if i != ran_on {
                        b.pending_close.extend(names);
                    }
                }
            }
        }
    }
}
