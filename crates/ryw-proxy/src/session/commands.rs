//! What the proxy answers itself: `SET`/`SHOW`/`RESET ryw.*` (also `SET
//! LOCAL`, and a plain `SELECT set_config('ryw.…', value, is_local)` for
//! drivers that bind the value), with PostgreSQL's semantics inside
//! transactions; and batches that only close statements.

use super::*;

use crate::classify::Arg;

/// A bad `ryw.*` value: SQLSTATE and message.
type Refusal = (&'static str, String);

impl Session {
    /// Answers a batch that only closes statements and portals: the client
    /// gets its `CloseComplete`s at once; each node that holds a closed
    /// statement closes it with the next batch sent there. (A portal lives
    /// until the end of its transaction, and outside one that is the
    /// `Sync` that ended the batch that made it: nothing to close.)
    pub(super) async fn answer_close(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
    ) -> Result<(), Closing> {
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Close { kind, name }) => {
                    if kind == b'S' {
                        self.statements.remove(name);
                        for b in self.backends.iter_mut().flatten() {
                            if name.is_empty() {
                                b.unnamed = None;
                            } else if b.prepared.remove(name).is_some() {
                                b.pending_close.push(name.to_owned());
                            }
                        }
                    }
                    protocol::bare(&mut client.out, tag::backend::CLOSE_COMPLETE);
                }
                Ok(Client::Sync) => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Answers a batch of `Parse`s of statements servers know here
    /// (transaction pooling; see `parses_known`).
    pub(super) async fn answer_parse(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
    ) -> Result<(), Closing> {
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Parse { name, query }) => {
                    let class = self.class_of(query);
                    let version = self
                        .shared
                        .next_version
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.statements
                        .insert(name, frame.raw.clone(), class, version);
                    protocol::bare(&mut client.out, tag::backend::PARSE_COMPLETE);
                }
                Ok(Client::Sync) => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Answers a simple query of `DEALLOCATE`s here (transaction pooling;
    /// see `local_deallocations`), as the server would.
    pub(super) async fn answer_deallocate(
        &mut self,
        client: &mut ClientConn,
        effects: &[crate::classify::PreparedEffect],
    ) -> Result<(), Closing> {
        use crate::classify::PreparedEffect;
        if self.status == b'E' {
            protocol::error(
                &mut client.out,
                "ERROR",
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
        } else {
            for effect in effects {
                match effect {
                    PreparedEffect::Deallocate(name) => {
                        self.statements.remove(name);
                        protocol::complete(&mut client.out, "DEALLOCATE");
                    }
                    _ => {
                        self.statements.remove_named();
                        protocol::complete(&mut client.out, "DEALLOCATE ALL");
                    }
                }
            }
        }
        protocol::ready(&mut client.out, self.status);
        client.flush().await
    }

    /// Answers a batch of `ryw.*` commands here, as a server would answer
    /// the same messages.
    pub(super) async fn answer_ryw(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
    ) -> Result<(), Closing> {
        // The token may leave this connection (SHOW ryw.token), or the
        // connection join a named session: what its last read saw must be
        // settled first (rule 7).
        if self.positions.unsettled.is_some() {
            self.settle_wait().await;
        }
        if self.status == b'E' {
            // PostgreSQL ignores every command in a failed transaction.
            protocol::error(
                &mut client.out,
                "ERROR",
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
            if frames
                .last()
                .is_some_and(|f| matches!(f.tag, tag::frontend::SYNC | tag::frontend::QUERY))
            {
                protocol::ready(&mut client.out, self.status);
            }
            return client.flush().await;
        }
        let mut portals: Vec<(String, Class, Vec<Option<String>>)> = Vec::new();
        let mut parsed: Vec<(String, Class)> = Vec::new();
        let mut failed = false;
        for frame in frames {
            let Ok(kind) = protocol::parse_client(frame) else {
                continue;
            };
            if failed && !matches!(kind, Client::Sync) {
                continue;
            }
            match kind {
                Client::Query(sql) => {
                    let class = self.class_of(sql);
                    self.answer_command(client, &class, true, &[]).await;
                    protocol::ready(&mut client.out, self.status);
                }
                Client::Parse { name, query } => {
                    let class = self.class_of(query);
                    parsed.push((name.to_owned(), class.clone()));
                    let version = self
                        .shared
                        .next_version
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.statements
                        .insert(name, frame.raw.clone(), class, version);
                    protocol::bare(&mut client.out, tag::backend::PARSE_COMPLETE);
                }
                Client::Bind { portal, statement } => {
                    let class = parsed
                        .iter()
                        .rev()
                        .find(|(n, _)| n == statement)
                        .map(|(_, c)| c.clone())
                        .or_else(|| self.statements.get(statement).map(|p| p.class.clone()));
                    if let Some(class) = class {
                        let params = protocol::bind_values(frame.body())
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(text, v)| {
                                v.and_then(|v| {
                                    // Binary text is the same bytes.
                                    let _ = text;
                                    std::str::from_utf8(v).ok().map(str::to_owned)
                                })
                            })
                            .collect();
                        portals.push((portal.to_owned(), class, params));
                    }
                    protocol::bare(&mut client.out, tag::backend::BIND_COMPLETE);
                }
                Client::Describe { kind, name } => {
                    let class = if kind == b'S' {
                        parsed
                            .iter()
                            .rev()
                            .find(|(n, _)| n == name)
                            .map(|(_, c)| c.clone())
                            .or_else(|| self.statements.get(name).map(|p| p.class.clone()))
                    } else {
                        portals
                            .iter()
                            .rev()
                            .find(|(n, _, _)| n == name)
                            .map(|(_, c, _)| c.clone())
                    };
                    let command = class.as_ref().and_then(|c| c.ryw.as_ref());
                    if kind == b'S' {
                        protocol::parameter_types(&mut client.out, &params_of(command));
                    }
                    match command {
                        Some(RywCommand::Show(name)) => {
                            protocol::row_description(&mut client.out, &[&format!("ryw.{name}")])
                        }
                        Some(RywCommand::SetConfig { .. }) => {
                            protocol::row_description(&mut client.out, &["set_config"])
                        }
                        _ => protocol::bare(&mut client.out, tag::backend::NO_DATA),
                    }
                }
                Client::Execute { portal } => {
                    match portals.iter().rev().find(|(n, _, _)| n == portal).cloned() {
                        Some((_, class, params)) => {
                            if !self.answer_command(client, &class, false, &params).await {
                                failed = true;
                            }
                        }
                        None => {
                            protocol::error(
                                &mut client.out,
                                "ERROR",
                                "34000",
                                "portal does not exist",
                            );
                            failed = true;
                        }
                    }
                }
                Client::Close { .. } => {
                    protocol::bare(&mut client.out, tag::backend::CLOSE_COMPLETE)
                }
                Client::Sync => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Runs one `ryw.*` command and writes its answer (with its row
    /// description in the simple protocol). `false`: it was refused (an
    /// `ErrorResponse` was written; inside a transaction, the transaction
    /// failed, as on a server).
    pub(super) async fn answer_command(
        &mut self,
        client: &mut ClientConn,
        class: &Class,
        simple: bool,
        params: &[Option<String>],
    ) -> bool {
        let Some(cmd) = &class.ryw else {
            return true;
        };
        self.shared.metrics.ryw_command();
        let (result, tag) = match cmd {
            RywCommand::Show(name) => match self.show_ryw(name) {
                Ok(value) => {
                    if simple {
                        protocol::row_description(&mut client.out, &[&format!("ryw.{name}")]);
                    }
                    protocol::data_row(&mut client.out, &[Some(&value)]);
                    (Ok(()), "SHOW")
                }
                Err(e) => (Err(e), ""),
            },
            RywCommand::SetConfig { name, value, local } => {
                let value = match value {
                    Arg::Text(t) => Some(t.clone()),
                    Arg::Bool(b) => Some(b.to_string()),
                    Arg::Param(n) => params.get(usize::from(*n) - 1).cloned().flatten(),
                };
                let local = match local {
                    Arg::Param(n) => params
                        .get(usize::from(*n) - 1)
                        .cloned()
                        .flatten()
                        .and_then(|v| crate::classify::setconfig::parse_bool(&v)),
                    other => other.as_bool(),
                };
                match local {
                    None => (
                        Err((
                            "22023",
                            "set_config's is_local must be true or false".to_owned(),
                        )),
                        "",
                    ),
                    Some(local) => {
                        let r = self.set_ryw(client, name, value.as_deref(), local).await;
                        if r.is_ok() {
                            if simple {
                                protocol::row_description(&mut client.out, &["set_config"]);
                            }
                            let shown = self.show_ryw(name).unwrap_or_default();
                            protocol::data_row(&mut client.out, &[Some(&shown)]);
                        }
                        (r, "SELECT 1")
                    }
                }
            }
            RywCommand::SetLocal(inner) => match &**inner {
                RywCommand::Reset(name) => (self.set_ryw(client, name, None, true).await, "SET"),
                other => match set_value(other) {
                    Some((name, v)) => (self.set_ryw(client, name, Some(v), true).await, "SET"),
                    None => (Err(("22023", "invalid ryw command".to_owned())), ""),
                },
            },
            RywCommand::Reset(name) => (self.set_ryw(client, name, None, false).await, "RESET"),
            RywCommand::Invalid(message) => (Err(("22023", message.clone())), ""),
            other => match set_value(other) {
                Some((name, v)) => (self.set_ryw(client, name, Some(v), false).await, "SET"),
                None => (Err(("22023", "invalid ryw command".to_owned())), ""),
            },
        };
        match result {
            Ok(()) => {
                protocol::complete(&mut client.out, tag);
                true
            }
            Err((code, message)) => {
                protocol::error(&mut client.out, "ERROR", code, &message);
                if self.status == b'T' {
                    self.abort_transaction(client).await;
                    self.status = b'E';
                }
                false
            }
        }
    }

    /// `SHOW ryw.<name>`.
    pub(super) fn show_ryw(&self, name: &str) -> Result<String, Refusal> {
        Ok(match name {
            "token" => self
                .shared
                .key
                .sign(self.positions.token.unwrap_or_default()),
            "served_by" => self.served_by.to_string(),
            "session" => self
                .ryw
                .named
                .as_ref()
                .map(|(name, _)| name.to_string())
                .unwrap_or_default(),
            "strategy" => match self.ryw.options.strategy {
                Some(_) => self.ryw.options.to_string(),
                None => self.shared.router.config().default_strategy.to_string(),
            },
            "scope" => self.scope().to_string(),
            other => return Err(unknown_setting(other)),
        })
    }

    /// `SET [LOCAL] ryw.<name> = value`, or `RESET` with `None`, with
    /// PostgreSQL's semantics: outside a transaction a `SET` holds for the
    /// session and a `SET LOCAL` does nothing but warn; inside one, both
    /// hold at once, a rollback undoes them, a commit keeps the `SET`s.
    /// (`ryw.token` only rises, whatever happens to the transaction: a
    /// token is never made lower than what the session saw.)
    pub(super) async fn set_ryw(
        &mut self,
        client: &mut ClientConn,
        name: &str,
        value: Option<&str>,
        local: bool,
    ) -> Result<(), Refusal> {
        let in_transaction = self.status != b'I';
        if local && !in_transaction {
            protocol::notice(
                &mut client.out,
                "WARNING",
                "25P01",
                "SET LOCAL can only be used in transaction blocks",
            );
            return Ok(());
        }
        if name == "token" {
            return self.set_token(value);
        }
        let mut next = self.ryw.clone();
        match (name, value) {
            ("session", Some(v)) => {
                let key = self.session_key(v)?;
                next.named = Some((Arc::from(v), key));
            }
            ("session", None) => next.named = None,
            ("strategy", Some(v)) => {
                next.options = v.parse().map_err(|_| {
                    (
                        "22023",
                        format!(
                            "invalid value for ryw.strategy: {:?}; use one of leader, legacy, sticky, \
                             causal, hybrid, per-read-check, optionally with :<duration>",
                            cut(v, 64)
                        ),
                    )
                })?;
            }
            ("strategy", None) => next.options = ReadOptions::default(),
            ("scope", Some(v)) => {
                next.scope = Some(v.parse().map_err(|_| {
                    (
                        "22023",
                        format!(
                            "invalid value for ryw.scope: {:?}; use one of connection, session, \
                             global, cluster",
                            cut(v, 64)
                        ),
                    )
                })?);
            }
            ("scope", None) => next.scope = None,
            (other, _) => return Err(unknown_setting(other)),
        }
        let bound = next.named.as_ref().map(|(_, k)| k.clone());
        let was = self.named().cloned();
        if in_transaction {
            let txn = self.ryw_txn.get_or_insert_with(|| RywTxn {
                before: self.ryw.clone(),
                committed: self.ryw.clone(),
            });
            if !local {
                match name {
                    "session" => txn.committed.named = next.named.clone(),
                    "scope" => txn.committed.scope = next.scope,
                    _ => txn.committed.options = next.options,
                }
            }
        }
        self.ryw = next;
        if let Some(key) = bound
            && was.as_ref() != Some(&key)
        {
            self.carry_into(&key).await;
        }
        Ok(())
    }

    /// `SET ryw.token`: verified (rule 4), clamped when absurdly far ahead,
    /// and only ever raises the connection's token; `RESET` drops it.
    fn set_token(&mut self, value: Option<&str>) -> Result<(), Refusal> {
        match value {
            Some(v) => {
                let pos = self
                    .shared
                    .key
                    .verify(v.trim())
                    .map_err(|e| ("22023", format!("invalid value for ryw.token: {e}")))?;
                let pos = self.shared.router.clamp_token(pos);
                self.positions.token = self.positions.token.max(Some(pos));
            }
            None => self.positions.token = None,
        }
        Ok(())
    }

    /// The store's key of a session named `name` by this connection's role:
    /// a named session belongs to the role that named it (another role
    /// naming the same key gets a session of its own). The role is written
    /// with `%`, `/` and whitespace escaped, so the key is unambiguous.
    fn session_key(&self, name: &str) -> Result<SessionKey, Refusal> {
        let bad = || {
            (
                "22023",
                format!(
                    "invalid value for ryw.session: 1–{} visible characters, no spaces",
                    ryw_router::MAX_SESSION_KEY.saturating_sub(self.id.user.len() + 1)
                ),
            )
        };
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad());
        }
        let mut role = String::with_capacity(self.id.user.len());
        for c in self.id.user.chars() {
            match c {
                '%' | '/' => role.push_str(&format!("%{:02X}", c as u32)),
                c if c.is_whitespace() || c.is_control() => {
                    for b in c.to_string().bytes() {
                        role.push_str(&format!("%{b:02X}"));
                    }
                }
                c => role.push(c),
            }
        }
        SessionKey::new(format!("{role}/{name}")).map_err(|_| bad())
    }

    /// Binding a named session carries this connection's own writes (and
    /// what it read) into it, so a read through another connection of the
    /// session sees them.
    async fn carry_into(&mut self, key: &SessionKey) {
        let router = &self.shared.router;
        let p = &self.positions;
        let result = match (p.token, p.last_write_ms) {
            (Some(token), Some(_)) => {
                let _ = router.record_write_position(key, token, p.written).await;
                Ok(())
            }
            (Some(token), None) => router.observe(key, token).await.map(|_| ()),
            (None, _) => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "carrying the connection's token into its session failed");
        }
    }
}

/// The name and value of a `SET ryw.…` command.
fn set_value(cmd: &RywCommand) -> Option<(&'static str, &str)> {
    Some(match cmd {
        RywCommand::SetSession(v) => ("session", v),
        RywCommand::SetToken(v) => ("token", v),
        RywCommand::SetStrategy(v) => ("strategy", v),
        RywCommand::SetScope(v) => ("scope", v),
        _ => return None,
    })
}

/// The parameter types a `Describe` of a statement answers: one `text` per
/// `$n` of a `set_config`, none for the rest.
fn params_of(command: Option<&RywCommand>) -> Vec<u32> {
    let mut n = 0;
    if let Some(RywCommand::SetConfig { name, value, local }) = command {
        let _ = name;
        for a in [value, local] {
            if let Arg::Param(i) = a {
                n = n.max(*i);
            }
        }
    }
    vec![25; usize::from(n)]
}

pub(super) fn unknown_setting(name: &str) -> Refusal {
    (
        "22023",
        format!(
            "unknown setting ryw.{}; ryw proxy knows ryw.session, ryw.token, ryw.strategy, \
             ryw.scope and (SHOW) ryw.served_by",
            cut(name, 64)
        ),
    )
}
