//! The client's prepared statements on the node a batch goes to: what
//! the node lacks goes first ([`Session::inject_statements`]), what the
//! batch parses and closes is noted ([`Session::note_statements`]) and
//! taken back if the server never got to it ([`Session::take_back`]);
//! `Parse`s and `Close`s answered here under transaction pooling.

use std::sync::atomic::Ordering;

use super::*;

impl Session {
    /// The client's prepared statements a batch uses that `node` lacks:
    /// their `Parse` (and a `Close` of an older version) go first. Returns
    /// how many replies to swallow, and the names prepared (taken back if
    /// the preamble fails: in a failed transaction, say).
    pub(super) fn inject_statements(
        &mut self,
        node: Node,
        frames: &[Frame],
        out: &mut BytesMut,
    ) -> (usize, Vec<String>) {
        let mut injected = Vec::new();
        let slot = self.slot(node);
        let backend = self.backends[slot]
            .as_mut()
            .expect("opened before injection");
        let mut parsed_here: Vec<&str> = Vec::new();
        let mut swallow = 0;
        for name in backend.pending_close.drain(..) {
            close_statement(out, &name);
            swallow += 1;
        }
        // SQL PREPARE/EXECUTE/DEALLOCATE of a name share the namespace of
        // the protocol's statements: the node must have the client's.
        // (None to look for while the client has no statement.)
        let mut named_in_sql: Vec<String> = Vec::new();
        for frame in frames.iter().filter(|_| !self.statements.is_empty()) {
            if let Ok(Client::Query(sql) | Client::Parse { query: sql, .. }) =
                protocol::parse_client(frame)
            {
                named_in_sql.extend(crate::classify::prepared_names(sql));
            }
        }
        for name in &named_in_sql {
            if let Some(p) = self.statements.get(name) {
                swallow += put_statement(backend, name, p, out, &mut injected);
            }
        }
        for frame in frames {
            let name = match protocol::parse_client(frame) {
                Ok(Client::Parse { name, .. }) => {
                    // A named statement the client has: the node must have
                    // it too, so that parsing the name again fails (42P05)
                    // as it would on one server.
                    if !name.is_empty() && !parsed_here.contains(&name) {
                        if let Some(p) = self.statements.get(name) {
                            swallow += put_statement(backend, name, p, out, &mut injected);
                        } else if backend.prepared.remove(name).is_some() {
                            // A copy the client closed or dropped.
                            close_statement(out, name);
                            swallow += 1;
                        }
                    }
                    parsed_here.push(name);
                    continue;
                }
                Ok(Client::Bind { statement, .. }) => statement,
                Ok(Client::Describe { kind: b'S', name }) => name,
                _ => continue,
            };
            if parsed_here.contains(&name) {
                continue;
            }
            let Some(p) = self.statements.get(name) else {
                continue;
            };
            let added = put_statement(backend, name, p, out, &mut injected);
            if added > 0 {
                swallow += added;
                parsed_here.push(name);
            }
        }
        (swallow, injected)
    }

    /// Transaction pooling: a simple query of nothing but `DEALLOCATE`s of
    /// the client's protocol statements (or `ALL`, when no connection holds
    /// SQL-prepared ones of the client's) is the proxy's to answer: on a
    /// pooled connection those statements have the proxy's names, and are
    /// shared.
    pub(super) fn local_deallocations(
        &self,
        frames: &[Frame],
    ) -> Option<Vec<crate::classify::PreparedEffect>> {
        use crate::classify::PreparedEffect;
        let [frame] = frames else { return None };
        let Ok(Client::Query(sql)) = protocol::parse_client(frame) else {
            return None;
        };
        let effects = crate::classify::deallocations(sql)?;
        let ours = effects.iter().all(|e| match e {
            PreparedEffect::Deallocate(name) => self.statements.get(name).is_some(),
            PreparedEffect::DeallocateAll => !self.pins.holds,
            PreparedEffect::DiscardAll => false,
        });
        ours.then_some(effects)
    }

    /// Transaction pooling: a batch of nothing but `Parse`s of new names,
    /// each of a statement a server has parsed before for this role and
    /// database, and a `Sync`, outside a transaction. The proxy answers it
    /// (the statements go to a server with the first `Bind` that uses them),
    /// so a client that prepares synchronously while its other connections
    /// hold every server connection (pgbench `-M prepared`, one thread for
    /// many clients) does not wait for one of them.
    pub(super) fn parses_known(&self, frames: &[Frame]) -> bool {
        let [parses @ .., last] = frames else {
            return false;
        };
        if last.tag != tag::frontend::SYNC || parses.is_empty() {
            return false;
        }
        let mut names: Vec<&str> = Vec::new();
        parses.iter().all(|f| match protocol::parse_client(f) {
            Ok(Client::Parse { name, .. })
                if !name.is_empty()
                    && !names.contains(&name)
                    && self.statements.get(name).is_none() =>
            {
                names.push(name);
                let canonical = statements::server_name(statements::parse_rest(&f.raw));
                self.shared
                    .pools
                    .is_parsed(&self.id.user, &self.id.database, &canonical)
            }
            _ => false,
        })
    }

    /// Whether every statement a close-only batch closes is one of the
    /// client's protocol statements the proxy knows (then it answers the
    /// batch itself). A `Close` of another name (a statement made with SQL
    /// `PREPARE`, which a `Close` drops too) goes to the leader.
    pub(super) fn closes_known(&self, frames: &[Frame]) -> bool {
        frames.iter().all(|f| match protocol::parse_client(f) {
            Ok(Client::Close { kind: b'S', name }) => {
                name.is_empty() || self.statements.get(name).is_some()
            }
            _ => true,
        })
    }

    /// The version of the client's statement `name` that the open
    /// connection to `slot` holds (`""`: the unnamed one).
    fn held_version(&self, slot: NodeId, name: &str) -> Option<u64> {
        let b = self.backends[slot].as_ref().expect("open");
        if name.is_empty() {
            b.unnamed
        } else {
            b.prepared.get(name).copied()
        }
    }

    /// Keeps the registry of the client's prepared statements, and which
    /// of them `node` has, in step with a batch sent there; returns how to
    /// take each `Parse` and `Close` back (a `Parse` of a name that exists
    /// fails on the server, and a failure skips the rest of the batch).
    pub(super) fn note_statements(&mut self, frames: &[Frame], node: Node) -> Vec<Undo> {
        let mut undo = Vec::new();
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Parse { name, query }) => {
                    let class = self.class_of(query);
                    let registry = self.statements.get(name).cloned();
                    let slot = self.slot(node);
                    let held = self.held_version(slot, name);
                    undo.push(Undo {
                        what: Undoes::Parse,
                        name: name.to_owned(),
                        registry,
                        node: held,
                    });
                    let version = self.shared.next_version.fetch_add(1, Ordering::Relaxed);
                    self.statements
                        .insert(name, frame.raw.clone(), class, version);
                    let backend = self.backends[slot].as_mut().expect("open");
                    if name.is_empty() {
                        backend.unnamed = Some(version);
                    } else if !self.statements.pooled() {
                        // Pooled connections hold it under the proxy's
                        // name (see `pooled`).
                        backend.prepared.insert(name.to_owned(), version);
                    }
                }
                Ok(Client::Close { kind, name }) => {
                    let slot = self.slot(node);
                    if kind != b'S' {
                        // A portal: nothing kept, but it counts among the closes.
                        undo.push(Undo {
                            what: Undoes::ClosePortal,
                            name: String::new(),
                            registry: None,
                            node: None,
                        });
                        continue;
                    }
                    let registry = self.statements.get(name).cloned();
                    let held = self.held_version(slot, name);
                    undo.push(Undo {
                        what: Undoes::Close,
                        name: name.to_owned(),
                        registry,
                        node: held,
                    });
                    self.statements.remove(name);
                    for (i, b) in self.backends.iter_mut().enumerate() {
                        let Some(b) = b else { continue };
                        if name.is_empty() {
                            if i == slot.index() {
                                b.unnamed = None;
                            }
                        } else if b.prepared.remove(name).is_some() && i != slot.index() {
                            // Closed where it ran; closed elsewhere with the
                            // next batch sent there.
                            b.pending_close.push(name.to_owned());
                        }
                    }
                }
                Ok(Client::Query(_)) => {
                    let slot = self.slot(node);
                    let backend = self.backends[slot].as_mut().expect("open");
                    backend.unnamed = None;
                }
                _ => {}
            }
        }
        undo
    }

    /// A batch failed: the `Parse`s and `Close`s the server never ran (all
    /// after the first `parsed` and `closed`) are taken back.
    pub(super) fn take_back(&mut self, node: Node, undo: Vec<Undo>, parsed: usize, closed: usize) {
        let slot = self.slot(node);
        let (mut parses, mut closes) = (0, 0);
        let mut not_run = Vec::new();
        for u in undo {
            let ran = if u.what == Undoes::Parse {
                parses += 1;
                parses <= parsed
            } else {
                closes += 1;
                closes <= closed
            };
            if !ran && u.what != Undoes::ClosePortal {
                not_run.push(u);
            }
        }
        for u in not_run.into_iter().rev() {
            self.statements.restore(&u.name, u.registry);
            if let Some(b) = self.backends[slot].as_mut() {
                if u.name.is_empty() {
                    b.unnamed = u.node;
                } else {
                    match u.node {
                        Some(v) => {
                            b.prepared.insert(u.name.clone(), v);
                        }
                        None => {
                            b.prepared.remove(&u.name);
                        }
                    }
                }
            }
        }
    }
}

/// A `Close` of the client's statement `name`.
/// Puts version `p` of the client's statement `name` (`""` the unnamed
/// one) on `backend` unless it holds that version: a `Close` of an older
/// copy, then the `Parse`, the name noted in `injected`. Returns how many
/// replies that adds, to swallow (0 when the node held it).
fn put_statement(
    backend: &mut crate::backend::Backend,
    name: &str,
    p: &super::statements::Prepared,
    out: &mut BytesMut,
    injected: &mut Vec<String>,
) -> usize {
    let held = if name.is_empty() {
        backend.unnamed
    } else {
        backend.prepared.get(name).copied()
    };
    if held == Some(p.version) {
        return 0;
    }
    let mut replies = 1;
    if !name.is_empty() && held.is_some() {
        close_statement(out, name);
        replies += 1;
    }
    out.put_slice(&p.parse);
    if name.is_empty() {
        backend.unnamed = Some(p.version);
    } else {
        backend.prepared.insert(name.to_owned(), p.version);
    }
    injected.push(name.to_owned());
    replies
}

pub(super) fn close_statement(out: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'S', name, out);
}
