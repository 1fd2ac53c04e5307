//! What the proxy answers itself: `SET`/`SHOW`/`RESET ryw.*`, and batches
//! that only close statements.

use super::*;

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
                    protocol::bare(&mut client.out, b'3');
                }
                Ok(Client::Sync) => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Answers a batch of `SET ryw.*` / `SHOW ryw.*` here, as a server
    /// would answer the same messages.
    pub(super) async fn answer_ryw(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
    ) -> Result<(), Closing> {
        // The token may leave this connection (SHOW ryw.token), or the
        // connection join a named session: what its last read saw must be
        // settled first (rule 7).
        if self.unsettled.is_some() {
            self.settle_wait().await;
        }
        let mut portals: HashMap<String, Class> = HashMap::new();
        let mut parsed: HashMap<String, Class> = HashMap::new();
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
                    self.answer_command(client, &class, true)?;
                    protocol::ready(&mut client.out, self.status);
                }
                Client::Parse { name, query } => {
                    let class = self.class_of(query);
                    parsed.insert(name.to_owned(), class.clone());
                    let version = self.next_version;
                    self.next_version += 1;
                    self.statements.insert(
                        name.to_owned(),
                        Prepared {
                            parse: frame.raw.clone(),
                            class,
                            version,
                        },
                    );
                    protocol::bare(&mut client.out, b'1');
                }
                Client::Bind { portal, statement } => {
                    let class = parsed
                        .get(statement)
                        .cloned()
                        .or_else(|| self.statements.get(statement).map(|p| p.class.clone()));
                    if let Some(class) = class {
                        portals.insert(portal.to_owned(), class);
                    }
                    protocol::bare(&mut client.out, b'2');
                }
                Client::Describe { kind, name } => {
                    let class = if kind == b'S' {
                        parsed
                            .get(name)
                            .cloned()
                            .or_else(|| self.statements.get(name).map(|p| p.class.clone()))
                    } else {
                        portals.get(name).cloned()
                    };
                    if kind == b'S' {
                        protocol::no_parameters(&mut client.out);
                    }
                    match class.as_ref().and_then(|c| c.ryw.as_ref()) {
                        Some(RywCommand::Show(name)) => {
                            protocol::row_description(&mut client.out, &[&format!("ryw.{name}")])
                        }
                        _ => protocol::bare(&mut client.out, b'n'),
                    }
                }
                Client::Execute { portal } => match portals.get(portal).cloned() {
                    Some(class) => {
                        if !self.answer_command(client, &class, false)? {
                            failed = true;
                        }
                    }
                    None => {
                        protocol::error(&mut client.out, "ERROR", "34000", "portal does not exist");
                        failed = true;
                    }
                },
                Client::Close { .. } => protocol::bare(&mut client.out, b'3'),
                Client::Sync => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Runs one `ryw.*` command and writes its answer (with its row
    /// description in the simple protocol). `Ok(false)`: it was refused
    /// (an ErrorResponse was written).
    pub(super) fn answer_command(
        &mut self,
        client: &mut ClientConn,
        class: &Class,
        simple: bool,
    ) -> Result<bool, Closing> {
        let Some(cmd) = &class.ryw else {
            return Ok(true);
        };
        self.shared.metrics.ryw_command();
        let result = match cmd {
            RywCommand::Show(name) => match self.show_ryw(name) {
                Ok(value) => {
                    if simple {
                        protocol::row_description(&mut client.out, &[&format!("ryw.{name}")]);
                    }
                    protocol::data_row(&mut client.out, &[Some(&value)]);
                    protocol::complete(&mut client.out, "SHOW");
                    Ok(())
                }
                Err(e) => Err(e),
            },
            RywCommand::SetSession(v) => self.set_ryw("session", Some(v)),
            RywCommand::SetToken(v) => self.set_ryw("token", Some(v)),
            RywCommand::SetStrategy(v) => self.set_ryw("strategy", Some(v)),
            RywCommand::Reset(name) => self.set_ryw(name, None),
            RywCommand::Invalid(message) => Err(("22023", message.clone())),
        };
        match result {
            Ok(()) => {
                if !matches!(cmd, RywCommand::Show(_)) {
                    let tag = if matches!(cmd, RywCommand::Reset(_)) {
                        "RESET"
                    } else {
                        "SET"
                    };
                    protocol::complete(&mut client.out, tag);
                }
                Ok(true)
            }
            Err((code, message)) => {
                protocol::error(&mut client.out, "ERROR", code, &message);
                Ok(false)
            }
        }
    }

    /// `SHOW ryw.<name>`.
    pub(super) fn show_ryw(&self, name: &str) -> Result<String, (&'static str, String)> {
        Ok(match name {
            "token" => self.shared.key.sign(self.token.unwrap_or_default()),
            "served_by" => self.served_by.to_string(),
            "session" => self
                .named
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
            "strategy" => match self.options.strategy {
                Some(_) => self.options.to_string(),
                None => self.shared.router.config().default_strategy.to_string(),
            },
            other => return Err(unknown_setting(other)),
        })
    }

    /// `SET ryw.<name> = value`, or `RESET` with `None`.
    pub(super) fn set_ryw(
        &mut self,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        match (name, value) {
            ("session", Some(v)) => {
                let key = SessionKey::new(v).map_err(|_| {
                    (
                        "22023",
                        "invalid value for ryw.session: 1–128 visible characters, no spaces"
                            .to_owned(),
                    )
                })?;
                self.named = Some(key);
            }
            ("session", None) => self.named = None,
            ("token", Some(v)) => {
                let pos = self
                    .shared
                    .key
                    .verify(v.trim())
                    .map_err(|e| ("22023", format!("invalid value for ryw.token: {e}")))?;
                // Rule 4: verified, so it can raise the session's token but
                // never make a read wait past its budget.
                self.token = self.token.max(Some(pos));
            }
            ("token", None) => self.token = None,
            ("strategy", Some(v)) => {
                self.options = v.parse().map_err(|_| {
                    (
                        "22023",
                        format!(
                            "invalid value for ryw.strategy: {:?}; use one of leader, legacy, sticky, \
                             causal, hybrid, per-read-check, optionally with :<duration>",
                            v.chars().take(64).collect::<String>()
                        ),
                    )
                })?;
            }
            ("strategy", None) => self.options = ReadOptions::default(),
            (other, _) => return Err(unknown_setting(other)),
        }
        Ok(())
    }
}

pub(super) fn unknown_setting(name: &str) -> (&'static str, String) {
    (
        "22023",
        format!(
            "unknown setting ryw.{}; ryw proxy knows ryw.session, ryw.token, ryw.strategy \
             and (SHOW) ryw.served_by",
            name.chars().take(64).collect::<String>()
        ),
    )
}
