//! Prepared statements under transaction pooling: a pooled connection
//! serves many clients, so a client's named statement goes there under the
//! proxy's name for its text (`ryw_<hash>`, [`statements::server_name`]),
//! once for every client that prepares the same statement, and the
//! client's `Bind`, `Describe` and `Close` are rewritten to it.
//!
//! A client's `Parse` of a statement the connection already holds is sent
//! under a fresh name (`ryw_<hash>_<n>`), so the client gets its
//! `ParseComplete` from the server in order; the older copy is closed before
//! the next batch. A client's `Close` of its statement closes nothing on the
//! connection (others may use it): it goes as a `Close` of a name that does
//! not exist, which the server answers `CloseComplete`. Past
//! [`CACHE`] statements, the least recently used are closed.

use super::statements::{parse_rest, renamed_parse};
use super::*;

/// Statements a pooled connection keeps before it closes the least
/// recently used (PgBouncer's `max_prepared_statements` is 200).
pub(super) const CACHE: usize = 256;

/// A name no statement has: a client's `Close` of its statement becomes a
/// `Close` of this.
const NOTHING: &str = "ryw_closed";

/// What a client's `Parse` did to a pooled connection, to take it back if
/// the server never got to it.
#[derive(Debug)]
pub(super) enum PooledParse {
    /// The unnamed statement.
    Unnamed,
    /// A named one, under the proxy's name `canonical`, which had the
    /// name `before` on the connection (if any).
    Named {
        canonical: Arc<str>,
        before: Option<(Arc<str>, u64)>,
    },
    /// A name the client has already: it went as a `Parse` of a name the
    /// connection has, so the server refuses it (42P05), as it would the
    /// client's.
    Duplicate,
}

impl Session {
    /// The preamble for a pooled connection: copies to close, and the
    /// statements the batch uses that the connection lacks. Returns how
    /// many replies to swallow, and the names prepared.
    pub(super) fn inject_pooled(
        &mut self,
        node: Node,
        frames: &[Frame],
        out: &mut BytesMut,
    ) -> (usize, Vec<String>) {
        let slot = self.slot(node);
        let backend = self.backends[slot].as_mut().expect("opened");
        let mut swallow = 0;
        let mut injected = Vec::new();
        for name in backend.stale.drain(..) {
            prepare::close_statement(out, &name);
            swallow += 1;
        }
        if backend.pooled.len() >= CACHE {
            // The least recently used quarter goes.
            let mut by_use: Vec<(u64, Arc<str>, Arc<str>)> = backend
                .pooled
                .iter()
                .map(|(c, (actual, used))| (*used, c.clone(), actual.clone()))
                .collect();
            by_use.sort_unstable_by_key(|(used, _, _)| *used);
            for (_, canonical, actual) in by_use.into_iter().take(CACHE / 4) {
                backend.pooled.remove(&canonical);
                prepare::close_statement(out, &actual);
                swallow += 1;
            }
        }
        let mut parsed_here: Vec<&str> = Vec::new();
        let mut closed_here: Vec<&str> = Vec::new();
        for frame in frames {
            let name = match protocol::parse_client(frame) {
                // A name the client has: parsed again, it must fail as a
                // duplicate, on the copy the connection holds.
                Ok(Client::Parse { name, .. })
                    if name.is_empty()
                        || parsed_here.contains(&name)
                        || closed_here.contains(&name) =>
                {
                    parsed_here.push(name);
                    continue;
                }
                Ok(Client::Parse { name, .. }) => {
                    if self.statements.get(name).is_none() {
                        parsed_here.push(name);
                        continue;
                    }
                    name
                }
                Ok(Client::Bind { statement, .. }) => statement,
                Ok(Client::Describe { kind: b'S', name }) => name,
                Ok(Client::Close { kind: b'S', name }) => {
                    closed_here.push(name);
                    continue;
                }
                _ => continue,
            };
            if parsed_here.contains(&name) {
                continue;
            }
            let Some(p) = self.statements.get(name) else {
                continue;
            };
            if name.is_empty() {
                if backend.unnamed != Some(p.version) {
                    out.put_slice(&p.parse);
                    swallow += 1;
                    backend.unnamed = Some(p.version);
                    injected.push(String::new());
                }
            } else if !backend.pooled.contains_key(&p.server_name) {
                out.put_slice(&p.server_parse);
                swallow += 1;
                backend.tick += 1;
                backend
                    .pooled
                    .insert(p.server_name.clone(), (p.server_name.clone(), backend.tick));
                injected.push(p.server_name.to_string());
            }
            parsed_here.push(name);
        }
        (swallow, injected)
    }

    /// Writes the client's frames for a pooled connection, statements
    /// renamed. Returns what each `Parse` did, in order.
    pub(super) fn write_pooled(
        &mut self,
        node: Node,
        frames: &[Frame],
        out: &mut BytesMut,
    ) -> Vec<PooledParse> {
        let slot = self.slot(node);
        let mut parses = Vec::new();
        // This batch's own statements: client name → name on the node.
        let mut here: Vec<(&str, Arc<str>)> = Vec::new();
        let mut closed_here: Vec<&str> = Vec::new();
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Parse { name, .. }) if !name.is_empty() => {
                    let rest = parse_rest(&frame.raw);
                    let exists = here.iter().any(|(n, _)| *n == name)
                        || (self.statements.get(name).is_some() && !closed_here.contains(&name));
                    if exists && let Some(held) = self.actual_name(slot, &here, name) {
                        // PostgreSQL refuses a name in use (42P05): so does
                        // the connection, for the copy it holds.
                        out.put_slice(&renamed_parse(&held, rest));
                        parses.push(PooledParse::Duplicate);
                        continue;
                    }
                    let canonical = statements::server_name(rest);
                    let backend = self.backends[slot].as_mut().expect("opened");
                    backend.tick += 1;
                    let tick = backend.tick;
                    let before = backend.pooled.get(&canonical).cloned();
                    let actual: Arc<str> = match &before {
                        // It is there already: a fresh copy, so the server
                        // answers this Parse; the old one closes later.
                        Some((old, _)) => {
                            backend.stale.push(old.clone());
                            Arc::from(format!("{canonical}_{tick}"))
                        }
                        None => canonical.clone(),
                    };
                    out.put_slice(&renamed_parse(&actual, rest));
                    backend
                        .pooled
                        .insert(canonical.clone(), (actual.clone(), tick));
                    here.push((name, actual));
                    parses.push(PooledParse::Named { canonical, before });
                }
                Ok(Client::Parse { .. }) => {
                    put_frame(out, frame);
                    parses.push(PooledParse::Unnamed);
                }
                Ok(Client::Bind { statement, .. }) if !statement.is_empty() => {
                    match self.actual_name(slot, &here, statement) {
                        Some(actual) => put_renamed(out, frame, &actual),
                        // Not the client's (none, or SQL-prepared on a
                        // connection it holds): as sent.
                        None => put_frame(out, frame),
                    }
                }
                Ok(Client::Describe { kind: b'S', name }) if !name.is_empty() => {
                    match self.actual_name(slot, &here, name) {
                        Some(actual) => {
                            let _ = frontend::describe(b'S', &actual, out);
                        }
                        None => put_frame(out, frame),
                    }
                }
                Ok(Client::Close { kind: b'S', name })
                    if !name.is_empty()
                        && (self.statements.get(name).is_some()
                            || here.iter().any(|(n, _)| *n == name)) =>
                {
                    // Shared: it stays on the connection.
                    here.retain(|(n, _)| *n != name);
                    closed_here.push(name);
                    prepare::close_statement(out, NOTHING);
                }
                _ => put_frame(out, frame),
            }
        }
        parses
    }

    /// The name on the held connection of `slot` of the client's statement
    /// `name` (parsed in this batch, or before).
    fn actual_name(
        &mut self,
        slot: NodeId,
        here: &[(&str, Arc<str>)],
        name: &str,
    ) -> Option<Arc<str>> {
        if let Some((_, actual)) = here.iter().rev().find(|(n, _)| *n == name) {
            return Some(actual.clone());
        }
        let canonical = self.statements.get(name)?.server_name.clone();
        let backend = self.backends[slot].as_mut().expect("opened");
        backend.tick += 1;
        let tick = backend.tick;
        let entry = backend.pooled.get_mut(&canonical)?;
        entry.1 = tick;
        Some(entry.0.clone())
    }

    /// A failed batch on a pooled connection: the `Parse`s the server
    /// never ran (all after the first `parsed`) are taken back.
    pub(super) fn take_back_pooled(&mut self, node: Node, parses: Vec<PooledParse>, parsed: usize) {
        let slot = self.slot(node);
        let Some(backend) = self.backends[slot].as_mut() else {
            return;
        };
        for p in parses
            .into_iter()
            .skip(parsed)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            match p {
                PooledParse::Unnamed => backend.unnamed = None,
                PooledParse::Duplicate => {}
                PooledParse::Named {
                    canonical,
                    before: Some((old, used)),
                } => {
                    backend.stale.retain(|s| *s != old);
                    backend.pooled.insert(canonical, (old, used));
                }
                PooledParse::Named {
                    canonical,
                    before: None,
                } => {
                    backend.pooled.remove(&canonical);
                }
            }
        }
    }
}

/// A `Bind` with its statement name replaced.
fn put_renamed(out: &mut BytesMut, frame: &Frame, statement: &str) {
    let body = frame.body();
    let portal_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let after_portal = &body[(portal_end + 1).min(body.len())..];
    let stmt_end = after_portal
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(after_portal.len());
    let rest = &after_portal[(stmt_end + 1).min(after_portal.len())..];
    let len = 4 + portal_end + 1 + statement.len() + 1 + rest.len();
    out.put_u8(tag::frontend::BIND);
    out.put_i32(len as i32);
    out.put_slice(&body[..portal_end + 1]);
    out.put_slice(statement.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
}
