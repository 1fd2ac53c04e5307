//! A client's batch on its way to a node: what it does ([`BatchPlan`]),
//! where it goes (the leader, or a read planned by the router), and what
//! the node needs before it (settings, prepared statements) and after it
//! (the position statement).

use std::sync::atomic::Ordering;

use super::*;

impl Session {
    /// What a batch does: the statements it parses, binds, describes and
    /// runs, and where they may go.
    pub(super) fn plan_batch(&mut self, frames: &[Frame]) -> BatchPlan {
        let mut plan = BatchPlan {
            why: "",
            all_reads: true,
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
        let mut unknown_statement = false;
        for frame in frames {
            let Ok(kind) = protocol::parse_client(frame) else {
                continue;
            };
            match kind {
                Client::Query(sql) => classes.push(self.class_of(sql)),
                Client::Parse { name, query } => {
                    let c = self.class_of(query);
                    parsed.push((name, c.clone()));
                    classes.push(c);
                }
                Client::Bind { portal, statement } => {
                    let c = find(&parsed, statement)
                        .or_else(|| self.statements.get(statement).map(|p| p.class.clone()));
                    match c {
                        Some(c) => {
                            portals.push((portal, c.clone()));
                            classes.push(c);
                        }
                        // A statement the proxy does not know (SQL PREPARE'd
                        // on the leader, or none): where the session is.
                        None => unknown_statement = true,
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
                Client::Execute { portal } => match find(&portals, portal) {
                    Some(c) => classes.push(c),
                    // A portal of an earlier batch (in a transaction, or a
                    // cursor): where it lives, the leader.
                    None => unknown_statement = true,
                },
                Client::FunctionCall => {
                    plan.route = Some(Route::Leader);
                    plan.why = "function call";
                    plan.all_reads = false;
                }
                _ => {}
            }
        }
        if unknown_statement {
            plan.route = Some(Route::Leader);
            plan.why = "a statement or portal of the session";
            plan.all_reads = false;
        }
        let mut route = None;
        let mut ryw = 0;
        for c in &classes {
            if c.ryw.is_some() {
                ryw += 1;
                continue;
            }
            match c.effect {
                Effect::PinsToLeader => plan.pins = true,
                Effect::SessionSetting => plan.settings = true,
                Effect::EndsTransaction | Effect::None => {}
            }
            plan.drops_prepared |= c.drops_prepared;
            if c.why == "copy" {
                plan.copy = true;
            }
            if c.route == Route::Leader
                && !matches!(c.why, "hint" | "node-local state" | "statistics")
            {
                plan.all_reads = false;
            }
            plan.statistics |= c.statistics;
            if let Some(f) = &c.functions {
                plan.functions.push(f.clone());
            }
            if let Some(r) = &c.relations {
                plan.relations.push(r.clone());
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
        plan.ryw = ryw > 0 && ryw == classes.len() && !unknown_statement;
        plan.mixed_ryw = (ryw > 0 && (ryw < classes.len() || unknown_statement))
            || classes
                .iter()
                .any(|c| c.why == "ryw command among multiple statements");
        plan.close_only = frames.iter().all(|f| {
            matches!(
                f.tag,
                tag::frontend::CLOSE | tag::frontend::SYNC | tag::frontend::FLUSH
            )
        }) && frames.iter().any(|f| f.tag == tag::frontend::CLOSE);
        plan.runs = frames.iter().any(|f| {
            matches!(
                f.tag,
                tag::frontend::EXECUTE | tag::frontend::QUERY | tag::frontend::FUNCTION_CALL
            )
        });
        plan.route = plan.route.or(route);
        if plan.route.is_none() {
            // Nothing but Sync/Flush/Close: no statement at all.
            plan.all_reads = false;
        }
        plan
    }

    /// Routes a batch and sends it (or answers it here).
    pub(super) async fn dispatch(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        synced: bool,
    ) -> Result<(), Closing> {
        let plan = self.plan_batch(&frames);
        // The rest of a batch that went out with a Flush follows it, on its
        // node, if that node may run it; if not, that batch is ended first
        // (a Sync of the proxy's, whose ReadyForQuery the client never sees).
        if let Phase::Flying(f) = &self.phase {
            let fits = f.node == Node::Leader
                || (matches!(plan.route, Some(Route::Read | Route::StaleOk) | None)
                    && !plan.ryw
                    && !plan.mixed_ryw
                    && !self.pins.pinned
                    && self.catalog_clears(&plan) == (true, true));
            if fits && !plan.ryw {
                return self.continue_flight(client, frames, plan, synced).await;
            }
            self.end_flight(client).await?;
        }
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
        if plan.close_only && synced && self.closes_known(&frames) {
            return self.answer_close(client, &frames).await;
        }
        if self.statements.pooled()
            && synced
            && self.status == b'I'
            && !self.pins.holds
            && self.parses_known(&frames)
        {
            return self.answer_parse(client, &frames).await;
        }
        if plan.drops_prepared
            && self.statements.pooled()
            && let Some(effects) = self.local_deallocations(&frames)
        {
            return self.answer_deallocate(client, &effects).await;
        }
        let mut route = match plan.route {
            _ if self.status != b'I' => Route::Leader,
            Some(r) => r,
            None => Route::Leader,
        };
        // A read that must stay on the leader, as a read: its position
        // bounds what it saw.
        let mut on_leader = false;
        if route == Route::Leader && self.status == b'I' && plan.all_reads {
            // Reads the classifier keeps on the leader (node-local state,
            // a hint).
            route = Route::Read;
            on_leader = true;
        } else if route != Route::Leader {
            let (functions, relations) = self.catalog_clears(&plan);
            if !functions {
                // A function that may write: not a read at all.
                route = Route::Leader;
            } else if !relations {
                // A sequence, or a relation the catalog does not know yet.
                on_leader = true;
            }
        }
        if route != Route::Leader && !on_leader {
            if self.pins.pinned && self.pins.check_due {
                self.check_pins(client).await?;
            }
            if self.pins.pinned {
                on_leader = true;
            }
            if route == Route::Read && self.positions.unknown.is_some() {
                self.resolve_unknown().await;
                on_leader |= self.positions.unknown.is_some();
            }
        }
        self.send_batch(client, frames, plan, route, on_leader, synced, 0)
            .await
    }

    /// Whether the catalog says every function a batch calls is safe on a
    /// follower (IMMUTABLE or STABLE, or a harmless VOLATILE one), and
    /// whether every relation it reads is one it knows and not a sequence.
    fn catalog_clears(&self, plan: &BatchPlan) -> (bool, bool) {
        let db = &self.id.database;
        let catalog = &self.shared.catalog;
        let functions = plan
            .functions
            .iter()
            .all(|names| names.iter().all(|n| catalog.safe(db, n)));
        let relations = plan
            .relations
            .iter()
            .all(|names| names.iter().all(|n| catalog.safe_relation(db, n)));
        (functions, relations)
    }

    /// Plans the node (reads through the router), opens it if needed, and
    /// sends the batch with what the node lacks before it and the position
    /// statement after it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_batch(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        plan: BatchPlan,
        route: Route,
        on_leader: bool,
        synced: bool,
        attempts: u8,
    ) -> Result<(), Closing> {
        self.follow_leader();
        self.running(Running::Routing { cancelled: false });
        let mut read = None;
        let mut write = None;
        let node = match route {
            Route::Leader => {
                if let Err(e) = self.open(Node::Leader, None).await {
                    return self.open_failed(client, &frames, e).await;
                }
                write = Some(self.shared.router.front_write());
                Node::Leader
            }
            Route::Read | Route::StaleOk => {
                if route == Route::Read {
                    self.settle();
                }
                match self.plan_read(client, &frames, route, on_leader).await? {
                    Some((node, r)) => {
                        read = Some(r);
                        node
                    }
                    None => return Ok(()),
                }
            }
        };
        // The position statement after the batch (rule 7): a read that
        // needs one, once the batch is synced.
        let position = read
            .as_ref()
            .is_some_and(|r| r.wants_position(self.shares_positions()))
            && synced
            && !plan.copy;
        let target = {
            let backend = self.backend(node);
            Running::On(backend.addr, backend.key)
        };
        if !self.start_running(target) {
            // Cancelled while it waited for a follower: never sent, as a
            // server cancels a statement that runs.
            return self
                .refuse_batch(
                    client,
                    &frames,
                    "57014",
                    "canceling statement due to user request",
                )
                .await;
        }
        let holding = read.is_some() && synced && node != Node::Leader;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let slot = self.slot(node);
        let queries = {
            let backend = self.backends[slot].as_mut().expect("opened");
            self.settings.replay(&mut backend.settings, &mut out)
        };
        if queries > 0 {
            // A simple query drops the unnamed statement.
            self.backends[slot].as_mut().expect("opened").unnamed = None;
        }
        let pooled = self.statements.pooled();
        let (statements, injected) = if pooled {
            self.inject_pooled(node, &frames, &mut out)
        } else {
            self.inject_statements(node, &frames, &mut out)
        };
        // Before a simple query, the statements prepared for it end with a
        // Sync of their own: were one to fail, the server would skip what
        // follows up to a Sync, the client's Query included.
        let sync = statements > 0
            && frames.first().is_some_and(|f| {
                matches!(f.tag, tag::frontend::QUERY | tag::frontend::FUNCTION_CALL)
            });
        if sync {
            frontend::sync(&mut out);
        }
        let pooled_parses = if pooled {
            self.write_pooled(node, &frames, &mut out)
        } else {
            for frame in &frames {
                put_frame(&mut out, frame);
            }
            Vec::new()
        };
        let undo = self.note_statements(&frames, node);
        if position {
            simple_query(&mut out, POSITION_SQL);
            self.backends[slot].as_mut().expect("opened").unnamed = None;
        }
        self.shared.metrics.batch(metric_slot(node), route);
        tracing::debug!(
            pid = self.pid,
            node = %self.node_name(node),
            ?route,
            why = plan.why,
            replays = queries,
            statements,
            sync,
            synced,
            position,
            "batch sent"
        );
        let stage = if queries > 0 || statements > 0 {
            Stage::Preamble {
                queries,
                statements,
                sync,
                holding,
            }
        } else {
            Stage::Client {
                held: holding.then(|| std::mem::take(&mut self.hold_spare)),
                copy_in: false,
            }
        };
        self.phase = Phase::Flying(Box::new(Flight {
            node,
            frames,
            plan,
            read,
            write,
            attempts: attempts + 1,
            synced,
            position,
            stage,
            forwarded: false,
            outcome: Outcome::default(),
            status_before: self.status,
            undo,
            injected,
            pooled: pooled_parses,
            proxy_sync: false,
        }));
        let sent = self.backend(node).send(&out).await;
        self.scratch = out;
        if let Err(e) = sent {
            return self.backend_lost(client, e.to_string()).await;
        }
        Ok(())
    }

    /// A read's node, planned by the router (rules 2, 4, 5), with a
    /// connection to it open. A follower that cannot be reached, or has
    /// restarted, is forgotten (rule 3) and the read planned again; one
    /// that is full (53300), going away (57P03), or does not know yet the
    /// role or database the leader let the client in with (28000, 28P01,
    /// 3D000: a `CREATE ROLE` it has not replayed) sends the read to the
    /// leader. `None` when the client was answered with an error.
    async fn plan_read(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        route: Route,
        mut on_leader: bool,
    ) -> Result<Option<(Node, FrontRead)>, Closing> {
        // A scope that fetches its position cannot take the unsettled
        // shortcut below (it would skip the position): the last read's
        // bound is settled first, else the read goes to the leader.
        if self.scope().fetches() && self.positions.unsettled.is_some() {
            self.settle_wait().await;
            on_leader |= self.positions.unsettled.is_some();
        }
        for _ in 0..3 {
            let mut req = self.read_request(route);
            if on_leader {
                req = req.options(ReadOptions {
                    strategy: Some(ryw_router::Strategy::Leader),
                    ..self.ryw.options
                });
            }
            // Rule 7 while the last read's bound is unknown: the same
            // follower or the leader, at once (not for a scope that
            // fetches its position, settled above).
            let unsettled = self
                .positions
                .unsettled
                .filter(|_| route == Route::Read && !self.scope().fetches());
            let read = match unsettled {
                Some(u) if !on_leader => self.shared.router.front_read_unsettled(&req, &u),
                _ => match self.shared.router.front_read(&req).await {
                    Ok(r) => r,
                    Err(e) => {
                        self.fail_batch(client, frames, "08006", &e.to_string())
                            .await?;
                        return Ok(None);
                    }
                },
            };
            let (node, incarnation) = match read.target() {
                ryw_router::Target::Leader => (Node::Leader, None),
                ryw_router::Target::Follower { node, incarnation } => {
                    (Node::Follower(node), incarnation)
                }
            };
            match self.open(node, incarnation).await {
                Ok(()) => return Ok(Some((node, read))),
                Err(e @ (BackendError::Unreachable { .. } | BackendError::Incarnation { .. }))
                    if node != Node::Leader =>
                {
                    // Rule 3: forget it, plan again.
                    read.lost(&e.to_string());
                }
                Err(BackendError::Refused { fields, .. })
                    if node != Node::Leader
                        && matches!(
                            fields.code.as_str(),
                            "53300" | "57P03" | "28000" | "28P01" | "3D000"
                        ) =>
                {
                    tracing::info!(node = %self.node_name(node), code = %fields.code, "a follower refused a connection; the read goes to the leader");
                    self.shared
                        .metrics
                        .count(crate::metrics::Event::FollowerRefused);
                    drop(read);
                    on_leader = true;
                }
                Err(e) => {
                    self.open_failed(client, frames, e).await?;
                    return Ok(None);
                }
            }
        }
        // Three followers in a row failed: the leader.
        let req = self.read_request(route).options(ReadOptions {
            strategy: Some(ryw_router::Strategy::Leader),
            ..self.ryw.options
        });
        match self.shared.router.front_read(&req).await {
            Ok(read) => match self.open(Node::Leader, None).await {
                Ok(()) => Ok(Some((Node::Leader, read))),
                Err(e) => {
                    self.open_failed(client, frames, e).await?;
                    Ok(None)
                }
            },
            Err(e) => {
                self.fail_batch(client, frames, "08006", &e.to_string())
                    .await?;
                Ok(None)
            }
        }
    }

    /// More of a batch that went out with a `Flush`, on the same node.
    async fn continue_flight(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        plan: BatchPlan,
        synced: bool,
    ) -> Result<(), Closing> {
        let named = self.shares_positions();
        let Phase::Flying(f) = &mut self.phase else {
            return Ok(());
        };
        let node = f.node;
        f.frames.extend(frames.iter().cloned());
        f.synced = synced;
        f.plan.settings |= plan.settings;
        f.plan.pins |= plan.pins;
        f.plan.drops_prepared |= plan.drops_prepared;
        f.plan.copy |= plan.copy;
        f.plan.runs |= plan.runs;
        f.plan.all_reads &= plan.all_reads;
        if !plan.all_reads && f.write.is_none() && node == Node::Leader {
            // It writes after all: its commit is recorded as a write's.
            f.write = Some(self.shared.router.front_write());
        }
        let position = synced
            && !f.plan.copy
            && f.write.is_none()
            && f.read.as_ref().is_some_and(|r| r.wants_position(named));
        f.position = position;
        let mut out = BytesMut::new();
        let pooled = if self.statements.pooled() {
            self.write_pooled(node, &frames, &mut out)
        } else {
            for frame in &frames {
                put_frame(&mut out, frame);
            }
            Vec::new()
        };
        if position {
            simple_query(&mut out, POSITION_SQL);
        }
        let undo = self.note_statements(&frames, node);
        if let Phase::Flying(f) = &mut self.phase {
            f.undo.extend(undo);
            f.pooled.extend(pooled);
        }
        if position {
            self.backend(node).unnamed = None;
        }
        if let Err(e) = self.backend(node).send(&out).await {
            return self.backend_lost(client, e.to_string()).await;
        }
        Ok(())
    }

    /// Ends a batch that went out with a `Flush` with a `Sync` of the
    /// proxy's (its `ReadyForQuery` is not the client's), and waits until
    /// its node has answered everything.
    async fn end_flight(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        let Phase::Flying(f) = &mut self.phase else {
            return Ok(());
        };
        let node = f.node;
        f.synced = true;
        f.proxy_sync = true;
        let mut out = BytesMut::new();
        frontend::sync(&mut out);
        if let Err(e) = self.backend(node).send(&out).await {
            return self.backend_lost(client, e.to_string()).await;
        }
        while let Phase::Flying(f) = &self.phase {
            let node = f.node;
            client.flush().await?;
            let fill = self.backend(node).fill().await;
            match fill {
                Ok(_) => self.take_backend_frames(client).await?,
                Err(e) => self.backend_lost(client, e.to_string()).await?,
            }
        }
        Ok(())
    }

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
            let Some(p) = self.statements.get(name) else {
                continue;
            };
            if backend.prepared.get(name.as_str()) == Some(&p.version) {
                continue;
            }
            if backend.prepared.contains_key(name.as_str()) {
                close_statement(out, name);
                swallow += 1;
            }
            out.put_slice(&p.parse);
            swallow += 1;
            backend.prepared.insert(name.clone(), p.version);
            injected.push(name.clone());
        }
        for frame in frames {
            let name = match protocol::parse_client(frame) {
                Ok(Client::Parse { name, .. }) => {
                    // A named statement the client has: the node must have
                    // it too, so that parsing the name again fails (42P05)
                    // as it would on one server.
                    if !name.is_empty() && !parsed_here.contains(&name) {
                        if let Some(p) = self.statements.get(name) {
                            if backend.prepared.get(name) != Some(&p.version) {
                                if backend.prepared.contains_key(name) {
                                    close_statement(out, name);
                                    swallow += 1;
                                }
                                out.put_slice(&p.parse);
                                swallow += 1;
                                backend.prepared.insert(name.to_owned(), p.version);
                                injected.push(name.to_owned());
                            }
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
            injected.push(name.to_owned());
            parsed_here.push(name);
        }
        (swallow, injected)
    }

    /// Transaction pooling: a simple query of nothing but `DEALLOCATE`s of
    /// the client's protocol statements (or `ALL`, when no connection holds
    /// SQL-prepared ones of the client's) is the proxy's to answer: on a
    /// pooled connection those statements have the proxy's names, and are
    /// shared.
    fn local_deallocations(
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
    fn parses_known(&self, frames: &[Frame]) -> bool {
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
    fn closes_known(&self, frames: &[Frame]) -> bool {
        frames.iter().all(|f| match protocol::parse_client(f) {
            Ok(Client::Close { kind: b'S', name }) => {
                name.is_empty() || self.statements.get(name).is_some()
            }
            _ => true,
        })
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
                    let held = {
                        let b = self.backends[slot].as_ref().expect("open");
                        if name.is_empty() {
                            b.unnamed
                        } else {
                            b.prepared.get(name).copied()
                        }
                    };
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
                    let held = {
                        let b = self.backends[slot].as_ref().expect("open");
                        if name.is_empty() {
                            b.unnamed
                        } else {
                            b.prepared.get(name).copied()
                        }
                    };
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
pub(super) fn close_statement(out: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'S', name, out);
}
