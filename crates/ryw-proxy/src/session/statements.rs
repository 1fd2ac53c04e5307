//! The client's prepared statements (protocol-level, named and unnamed):
//! each `Parse` as sent, so that a node that lacks a statement gets it
//! before a `Bind` or `Describe` that uses it, and its classification. The
//! bytes held count toward the client's memory limit.

use std::collections::HashMap;

use bytes::Bytes;

use crate::backend::Backend;
use crate::classify::{Class, PreparedEffect};

/// What the proxy knows of a client's prepared statement.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    /// The client's `Parse`, as sent: replayed on a backend that lacks it.
    pub parse: Bytes,
    pub class: Class,
    /// Bumped each time the client prepares the name again.
    pub version: u64,
}

/// The client's statements by name (`""` is the unnamed one).
#[derive(Debug, Default)]
pub(super) struct Statements {
    map: HashMap<String, Prepared>,
    bytes: usize,
    next_version: u64,
}

/// Bytes counted per statement beside its `Parse` (the map's own cost).
const OVERHEAD: usize = 96;

impl Statements {
    /// The statement called `name`.
    pub fn get(&self, name: &str) -> Option<&Prepared> {
        self.map.get(name)
    }

    /// What the registry holds, for the client's memory limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The client prepared `name` (again): returns its new version.
    pub fn insert(&mut self, name: &str, parse: Bytes, class: Class) -> u64 {
        self.next_version += 1;
        let version = self.next_version;
        self.bytes += parse.len() + name.len() + OVERHEAD;
        if let Some(old) = self.map.insert(
            name.to_owned(),
            Prepared {
                parse,
                class,
                version,
            },
        ) {
            self.bytes -= old.parse.len() + name.len() + OVERHEAD;
        }
        version
    }

    /// The client closed `name`.
    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.map.remove(name) {
            self.bytes -= old.parse.len() + name.len() + OVERHEAD;
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
