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
}
