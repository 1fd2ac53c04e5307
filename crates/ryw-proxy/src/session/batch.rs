//! A client's batch on its way to a node: what it does ([`BatchPlan`]),
//! where it goes (the leader, or a read planned by the router), and what
//! the node needs before it (settings, prepared statements) and after it
//! (the position statement).

use super::*;

impl Session {
    /// What a batch does: the statements it parses, binds, describes and
    /// runs, and where they may go.
    pub(super) fn plan_batch(&mut self, frames: &[Frame]) -> BatchPlan {
        let mut plan = BatchPlan {
            why: "",
            ..BatchPlan::default()
        };
        // One pass over the batch; a handful of messages, so small vectors
        // rather than maps (nothing allocated for a Bind/Execute/Sync).
        let mut classes: Vec<Class> = Vec::new();
        let mut parsed: Vec<(&str, Class)> = Vec::new();
        let mut portals: Vec<(&str, Class)> = Vec::new();
        let find = |list: &[(&str, Class)], name: &str| {
            list.iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c.clone())
        };
        for frame in frames {
            let Ok(kind) = protocol::parse_client(frame) else {
                continue;
            };
            match kind {
                Client::Query(sql) => {
                    let c = self.class_of(sql);
                    if c.effect == Effect::SessionSetting {
                        plan.settings.push(sql.to_owned());
                    }
                    classes.push(c);
                }
                Client::Parse { name, query } => {
                    let c = self.class_of(query);
                    if c.effect == Effect::SessionSetting {
                        plan.settings.push(query.to_owned());
                    }
                    parsed.push((name, c.clone()));
                    classes.push(c);
                }
                Client::Bind { portal, statement } => {
                    let c = find(&parsed, statement)
                        .or_else(|| self.statements.get(statement).map(|p| p.class.clone()));
                    if let Some(c) = c {
                        portals.push((portal, c.clone()));
                        classes.push(c);
                    }
                }
                Client::Describe { kind, name } => {
                    let c = if kind == b'S' {
                        find(&parsed, name)
                            .or_else(|| self.statements.get(name).map(|p| p.class.clone()))
                    } else {
                        find(&portals, name)
                    };
                    classes.extend(c);
                }
                Client::Execute { portal } => classes.extend(find(&portals, portal)),
                Client::FunctionCall => {
                    plan.route = Some(Route::Leader);
                    plan.why = "function call";
                }
                _ => {}
            }
        }
        let mut route = None;
        let mut ryw = 0;
        for c in &classes {
            if c.ryw.is_some() {
                ryw += 1;
                continue;
            }
            match c.effect {
                Effect::EndsTransaction => plan.ends_transaction = true,
                Effect::PinsToLeader => plan.pins = true,
                Effect::SessionSetting | Effect::None => {}
            }
            if c.why == "copy" {
                plan.copy = true;
            }
            route = Some(match (route, c.route) {
                (Some(Route::Leader), _) | (_, Route::Leader) => {
                    if plan.why.is_empty() {
                        plan.why = c.why;
                    }
                    Route::Leader
                }
                (Some(Route::Read), _) | (_, Route::Read) => Route::Read,
                _ => Route::StaleOk,
            });
        }
        plan.ryw = ryw > 0 && ryw == classes.len();
        plan.mixed_ryw = (ryw > 0 && ryw < classes.len())
            || classes
                .iter()
                .any(|c| c.why == "ryw command among multiple statements");
        plan.close_only = frames.iter().all(|f| matches!(f.tag, b'C' | b'S' | b'H'))
            && frames.iter().any(|f| f.tag == b'C');
        plan.runs = frames.iter().any(|f| matches!(f.tag, b'E' | b'Q' | b'F'));
        plan.route = plan.route.or(route);
        plan
    }

    /// Routes a batch and sends it (or answers it here).
    pub(super) async fn dispatch(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        synced: bool,
    ) -> Result<(), Closing> {
        // The rest of a batch that went out with a Flush follows it.
        if let Phase::Flying(f) = &mut self.phase {
            let node = f.node;
            f.frames.extend(frames.iter().cloned());
            f.synced = synced;
            let mut out = BytesMut::new();
            for frame in &frames {
                out.put_slice(&frame.raw);
            }
            if synced && f.position_after {
                let slot = self.slot(node);
                position_statement(&mut out, &mut self.backends[slot]);
            }
            self.note_statements(&frames, node);
            if let Err(e) = self.backend(node).send(&out).await {
                return self.backend_lost(client, e.to_string()).await;
            }
            return Ok(());
        }
        let plan = self.plan_batch(&frames);
        if plan.mixed_ryw {
            return self
                .refuse_batch(
                    client,
                    &frames,
                    "0A000",
                    "send SET ryw.* and SHOW ryw.* on their own, not with other statements",
                )
                .await;
        }
        if plan.ryw {
            return self.answer_ryw(client, &frames).await;
        }
        if plan.close_only && synced {
            return self.answer_close(client, &frames).await;
        }
        let route = match plan.route {
            _ if self.status != b'I' => Route::Leader,
            Some(Route::Read | Route::StaleOk) if self.pinned => Route::Leader,
            Some(r) => r,
            None => Route::Leader,
        };
        self.send_batch(client, frames, plan, route, synced, 0)
            .await
    }

    /// Plans the node (reads through the router), opens it if needed, and
    /// sends the batch with what the node lacks before it and the position
    /// statement after it.
    pub(super) async fn send_batch(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        plan: BatchPlan,
        route: Route,
        synced: bool,
        attempts: u8,
    ) -> Result<(), Closing> {
        let mut read = None;
        self.follow_leader();
        let node = match route {
            Route::Leader => Node::Leader,
            Route::Read | Route::StaleOk => {
                if route == Route::Read {
                    self.settle();
                }
                let mut chosen = Node::Leader;
                for _ in 0..3 {
                    let req = self.read_request(route);
                    // Rule 7 while the last read's bound is unknown: the
                    // same follower or the leader, at once.
                    let unsettled = self.unsettled.filter(|_| route == Route::Read);
                    let decision = match unsettled {
                        Some(u) => self.shared.router.plan_after_unsettled(&req, &u),
                        None => match self.shared.router.plan_read(&req).await {
                            Ok(d) => d,
                            Err(e) => {
                                return self
                                    .fail_batch(client, &frames, "08006", &e.to_string())
                                    .await;
                            }
                        },
                    };
                    let node = match decision.follower_index() {
                        Some(i) => Node::Follower(i),
                        None => Node::Leader,
                    };
                    match self.open(node).await {
                        Ok(()) => {
                            chosen = node;
                            read = Some(decision);
                            break;
                        }
                        Err(
                            e @ (BackendError::Unreachable { .. }
                            | BackendError::Incarnation { .. }),
                        ) if node != Node::Leader => {
                            // Rule 3: forget it, plan again.
                            self.shared.router.report_lost(&decision, &e.to_string());
                        }
                        Err(e) => return self.open_failed(client, &frames, e).await,
                    }
                }
                chosen
            }
        };
        if read.is_none()
            && let Err(e) = self.open(node).await
        {
            return self.open_failed(client, &frames, e).await;
        }
        // Rule 1 and rule 7: the node's position after the batch, pipelined
        // behind its Sync (once the Sync is there). Not behind a COPY: the
        // node would read it as COPY data; it is asked after the batch.
        // Not after a read that promises nothing (stale-ok, legacy,
        // sticky), nor after a follower read of a session this connection
        // keeps: the tracker's next poll of that follower bounds it (see
        // `land`).
        let wants_position = match &read {
            Some(d) => self.read_needs_position(d),
            None => self.status == b'I' || plan.ends_transaction,
        };
        let position_after = wants_position && !plan.copy;
        let position_later = wants_position && plan.copy;
        let holding = read.is_some() && synced && node != Node::Leader;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let replays = self.replay_settings(node, &mut out);
        let swallow = self.inject_statements(node, &frames, &mut out);
        for frame in &frames {
            out.put_slice(&frame.raw);
        }
        self.note_statements(&frames, node);
        let slot = self.slot(node);
        if position_after && synced {
            position_statement(&mut out, &mut self.backends[slot]);
        }
        self.shared.metrics.batch(metric_index(node), route);
        let epoch = match node {
            Node::Follower(i) => self.view.borrow().nodes.get(i).map(|f| f.epoch),
            Node::Leader => None,
        };
        let backend = self.backend(node);
        let target = (backend.addr, backend.key);
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
        self.phase = Phase::Flying(Box::new(Flight {
            node,
            frames,
            plan,
            read,
            attempts: attempts + 1,
            epoch,
            synced,
            replays,
            swallow,
            holding,
            held: BytesMut::new(),
            forwarded: false,
            to_leader: false,
            error: None,
            committed: false,
            rolled_back: false,
            copy_in: false,
            position_after,
            position_later,
            client_ready: None,
            position: None,
            floor: match node {
                Node::Leader => self.shared.router.leader_floor(),
                Node::Follower(_) => None,
            },
        }));
        let sent = self.backend(node).send(&out).await;
        self.scratch = out;
        if let Err(e) = sent {
            return self.backend_lost(client, e.to_string()).await;
        }
        Ok(())
    }

    /// Replays the session settings `node` has not applied, each as a query
    /// of its own (`DISCARD ALL` cannot run in a multi-statement one).
    /// Returns how many `ReadyForQuery`s to swallow.
    pub(super) fn replay_settings(&mut self, node: Node, out: &mut BytesMut) -> usize {
        let settings = &self.settings;
        let slot = self.slot(node);
        let backend = self.backends[slot].as_mut().expect("opened before replay");
        let todo = &settings[backend.settings_applied.min(settings.len())..];
        for sql in todo {
            let _ = frontend::query(sql, out);
            if sql.trim_start().to_ascii_lowercase().starts_with("discard") {
                backend.prepared.clear();
                backend.position_prepared = false;
            }
        }
        if !todo.is_empty() {
            // A simple query drops the unnamed statement.
            backend.unnamed = None;
        }
        backend.settings_applied = settings.len();
        todo.len()
    }

    /// The client's prepared statements a batch uses that `node` lacks:
    /// their `Parse` (and a `Close` of an older version) go first. Returns
    /// how many replies to swallow.
    pub(super) fn inject_statements(
        &mut self,
        node: Node,
        frames: &[Frame],
        out: &mut BytesMut,
    ) -> usize {
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
        for frame in frames {
            let name = match protocol::parse_client(frame) {
                Ok(Client::Parse { name, .. }) => {
                    parsed_here.push(name);
                    // Parsing a name the node has an older version of: close it first.
                    if !name.is_empty() && backend.prepared.contains_key(name) {
                        close_statement(out, name);
                        backend.prepared.remove(name);
                        swallow += 1;
                    }
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
            let has = if name.is_empty() {
                backend.unnamed == Some(p.version)
            } else {
                backend.prepared.get(name) == Some(&p.version)
            };
            if has {
                continue;
            }
            if !name.is_empty() && backend.prepared.contains_key(name) {
                close_statement(out, name);
                swallow += 1;
            }
            out.put_slice(&p.parse);
            swallow += 1;
            if name.is_empty() {
                backend.unnamed = Some(p.version);
            } else {
                backend.prepared.insert(name.to_owned(), p.version);
            }
            parsed_here.push(name);
        }
        swallow
    }

    /// Keeps the registry of the client's prepared statements, and which
    /// of them `node` has, in step with a batch sent there.
    pub(super) fn note_statements(&mut self, frames: &[Frame], node: Node) {
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Parse { name, query }) => {
                    let class = self.class_of(query);
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
                    let slot = self.slot(node);
                    let backend = self.backends[slot].as_mut().expect("open");
                    if name.is_empty() {
                        backend.unnamed = Some(version);
                    } else {
                        backend.prepared.insert(name.to_owned(), version);
                    }
                }
                Ok(Client::Close { kind: b'S', name }) => {
                    self.statements.remove(name);
                    let slot = self.slot(node);
                    let backend = self.backends[slot].as_mut().expect("open");
                    if name.is_empty() {
                        backend.unnamed = None;
                    } else {
                        backend.prepared.remove(name);
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
    }
}

/// A `Close` of the client's statement `name`.
pub(super) fn close_statement(out: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'S', name, out);
}

/// The proxy's own position statement, prepared once per connection: the
/// node's current position on the leader (rule 1: read after COMMIT
/// returned), its replay position on a follower (rule 7). One text for
/// both, as the node's role can change under a connection (a follower
/// promoted keeps its connections).
pub(super) fn position_statement(out: &mut BytesMut, backend: &mut Option<Backend>) {
    let Some(b) = backend.as_mut() else { return };
    if !b.position_prepared {
        let sql = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                   ELSE pg_current_wal_lsn() END)::text";
        let _ = frontend::parse(POSITION_STATEMENT, sql, std::iter::empty(), out);
        b.position_prepared = true;
    }
    let _ = frontend::bind(
        "",
        POSITION_STATEMENT,
        std::iter::empty::<i16>(),
        std::iter::empty::<Option<&[u8]>>(),
        |_: Option<&[u8]>, _: &mut BytesMut| Ok(postgres_protocol::IsNull::Yes),
        Some(0),
        out,
    );
    let _ = frontend::execute("", 0, out);
    frontend::sync(out);
}
