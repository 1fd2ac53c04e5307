//! A batch is done: the session's positions, settings, pins and prepared
//! statements follow what it did, then the client gets its
//! `ReadyForQuery`.

use super::*;

use ryw_router::Writer;

impl Session {
    /// Lands the flight: `ready` is the node's `ReadyForQuery` (relayed
    /// as is), `lsn` the position statement's answer, if any.
    pub(super) async fn land(
        &mut self,
        client: &mut ClientConn,
        ready: Option<Frame>,
        lsn: Option<ryw_router::Lsn>,
    ) -> Result<(), Closing> {
        let Phase::Flying(mut f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        self.running(Running::Idle);
        let status = ready
            .as_ref()
            .and_then(|r| protocol::ready_status(&r.raw))
            .unwrap_or(self.status);
        tracing::debug!(
            pid = self.pid,
            node = %self.node_name(f.node),
            status = %(status as char),
            error = ?f.outcome.error,
            "batch done"
        );
        if f.plan.runs {
            self.served_by = self.node_name(f.node);
        }
        let ok = f.outcome.error.is_none();
        if ok {
            for p in &f.pooled {
                if let pooled::PooledParse::Named { canonical, .. } = p {
                    self.shared
                        .pools
                        .parsed(&self.id.user, &self.id.database, canonical);
                }
            }
        } else {
            let undo = std::mem::take(&mut f.undo);
            self.take_back(f.node, undo, f.outcome.parsed, f.outcome.closed);
            let pooled = std::mem::take(&mut f.pooled);
            self.take_back_pooled(f.node, pooled, f.outcome.parsed);
        }
        // What may have committed: a COMMIT, or anything that left the
        // session idle but a plain ROLLBACK. Even a batch that failed
        // outside a transaction (CREATE INDEX CONCURRENTLY, a procedure
        // that commits, VACUUM) can have committed part of its work; a
        // position read for nothing only raises the token a little.
        let committed = f.outcome.committed
            || (status == b'I' && (f.status_before == b'I' || !f.outcome.rolled_back));
        if let Some(read) = f.read.take() {
            self.land_read(client, read, lsn).await;
        } else if let Some(write) = f.write.take()
            && committed
        {
            self.land_write(client, write).await;
        }

        // What the batch did to the session, if it took effect.
        if ok && f.plan.settings {
            self.record_settings(&f.frames, status != b'I');
        }
        if f.outcome.committed {
            self.settings.commit();
        } else if f.outcome.rolled_back || (status == b'I' && !ok) {
            self.settings.rollback();
        }
        if f.node == Node::Leader && status == b'I' {
            // The client's own settings ran there (but a RESET of a startup
            // parameter went to the server's default, not the client's:
            // the whole list again next time).
            let current = match self.settings.took_defaults_back() {
                false => self.settings.current().to_vec(),
                true => Vec::new(),
            };
            let slot = self.slot(Node::Leader);
            if let Some(b) = self.backends[slot].as_mut() {
                b.settings = current;
            }
        }
        if ok && f.plan.drops_prepared {
            self.drop_prepared(&f.frames, f.node);
        }
        if f.node == Node::Leader {
            if ok && f.plan.pins {
                self.pins.pinned = true;
                self.pins.holds = true;
                self.pins.lasting |= self.pins_last(&f.frames);
            }
            if ok && f.plan.statistics {
                // It reads the leader's statistics: its reads count there.
                self.pins.pinned = true;
                self.pins.lasting = true;
            }
            if self.pins.pinned && !f.plan.all_reads && !f.plan.pins {
                // It may have dropped what pinned: ask before the next read.
                self.pins.check_due = true;
            }
        }
        self.end_ryw_transaction(&f.outcome, status);
        self.status = status;
        self.release();
        if f.proxy_sync {
            return client.flush().await;
        }
        match ready {
            Some(raw) => client.out.put_slice(&raw.raw),
            None => protocol::ready(&mut client.out, status),
        }
        client.flush().await
    }

    /// Rule 7: what a read saw raises the session's token.
    async fn land_read(
        &mut self,
        client: &mut ClientConn,
        read: FrontRead,
        lsn: Option<ryw_router::Lsn>,
    ) {
        let follower = read.decision().follower();
        let done = read.finish(lsn).await;
        if done.refused {
            self.shared
                .metrics
                .count(crate::metrics::Event::PositionRefused);
        }
        let d = done.decision;
        match done.unsettled {
            Some(u) => self.positions.unsettled = Some(u),
            // A position read after this read, on the leader or on the
            // follower of an unsettled read, also bounds that one.
            None if lsn.is_some()
                && (follower.is_none()
                    || self.positions.unsettled.map(|u| u.follower) == follower) =>
            {
                self.positions.unsettled = None;
            }
            None => {}
        }
        if let Some(lost) = d.lost {
            self.tell_lost(client, lost);
            // Told once.
            self.positions.written = None;
        }
        self.positions.token = self.positions.token.max(d.token);
    }

    /// Rule 1: a write committed; the router reads the leader's position
    /// on its own connection and it becomes the session's token.
    async fn land_write(&mut self, client: &mut ClientConn, write: FrontWrite) {
        let floor = write.floor();
        let key = self.named().cloned();
        let writer = match &key {
            Some(k) => Writer::Shared(k),
            None => Writer::Local(self.positions.written),
        };
        let result = write.committed(writer).await;
        match result {
            Ok(c) => {
                if let Some(lost) = c.lost {
                    self.tell_lost(client, lost);
                    self.positions.written = None;
                }
                self.positions.token = self.positions.token.max(Some(c.token));
                self.positions.written = self.positions.written.max(floor);
                self.positions.last_write_ms = Some(now_ms());
                self.positions.unsettled = None;
                self.positions.unknown = None;
            }
            Err(e) => {
                // Unknown, never skipped: fresh reads go to the leader
                // until a position is known again.
                tracing::warn!(pid = self.pid, error = %e, "a write's position could not be read; fresh reads go to the leader until one is");
                self.shared
                    .metrics
                    .count(crate::metrics::Event::PositionUnknown);
                self.positions.unknown = Some(floor.max(self.positions.unknown.flatten()));
                self.positions.last_write_ms = Some(now_ms());
            }
        }
    }

    /// A write's position was unknown: try once more to learn the
    /// leader's (any position read after the commit covers it).
    pub(super) async fn resolve_unknown(&mut self) {
        let Some(floor) = self.positions.unknown else {
            return;
        };
        let write = self.shared.router.front_write_after(floor);
        let key = self.named().cloned();
        let writer = match &key {
            Some(k) => Writer::Shared(k),
            None => Writer::Local(self.positions.written),
        };
        let result = write.committed(writer).await;
        if let Ok(c) = result {
            self.positions.token = self.positions.token.max(Some(c.token));
            self.positions.written = self.positions.written.max(floor);
            self.positions.unknown = None;
        }
    }

    /// The session settings a batch made, each statement on its own.
    fn record_settings(&mut self, frames: &[Frame], in_transaction: bool) {
        let mut parsed: Vec<(&str, &str)> = Vec::new();
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Query(sql)) => {
                    for stmt in crate::classify::setting_statements(sql) {
                        if let Some(op) = settings::op_of(stmt, &[]) {
                            self.record_setting(op, in_transaction);
                        }
                    }
                }
                Ok(Client::Parse { name, query }) => parsed.push((name, query)),
                Ok(Client::Bind { statement, .. }) => {
                    let sql = parsed
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == statement)
                        .map(|(_, q)| (*q).to_owned())
                        .or_else(|| {
                            self.statements.get(statement).and_then(|p| {
                                let f = Frame {
                                    tag: tag::frontend::PARSE,
                                    raw: p.parse.clone(),
                                };
                                match protocol::parse_client(&f) {
                                    Ok(Client::Parse { query, .. }) => Some(query.to_owned()),
                                    _ => None,
                                }
                            })
                        });
                    let Some(sql) = sql else { continue };
                    let params = protocol::bind_values(frame.body()).unwrap_or_default();
                    for stmt in crate::classify::setting_statements(&sql) {
                        if let Some(op) = settings::op_of(stmt, &params) {
                            self.record_setting(op, in_transaction);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn record_setting(&mut self, op: settings::Op, in_transaction: bool) {
        if matches!(op, settings::Op::ResetAll | settings::Op::DiscardAll) && self.pins.lasting {
            // What made the pin last is reset: ask the leader what is left.
            self.pins.lasting = false;
            self.pins.check_due = true;
        }
        self.settings.record(op, in_transaction);
    }

    /// A `DEALLOCATE` or `DISCARD ALL` ran on `node`.
    fn drop_prepared(&mut self, frames: &[Frame], node: Node) {
        let slot = self.slot(node);
        for frame in frames {
            let sql = match protocol::parse_client(frame) {
                Ok(Client::Query(sql)) | Ok(Client::Parse { query: sql, .. }) => sql,
                _ => continue,
            };
            for effect in crate::classify::prepared_effects(sql) {
                if effect == crate::classify::PreparedEffect::DiscardAll {
                    // All session state is gone on the leader.
                    self.pins = Pins::default();
                    self.settings.record(settings::Op::DiscardAll, false);
                }
                self.statements
                    .dropped(&effect, &mut self.backends, slot.index());
            }
        }
    }

    /// Whether a pinning batch made state the pin check cannot see (a
    /// computed `set_config`, `standard_conforming_strings`): lifted only
    /// by `RESET ALL` or `DISCARD ALL`.
    fn pins_last(&self, frames: &[Frame]) -> bool {
        frames
            .iter()
            .any(|frame| match protocol::parse_client(frame) {
                Ok(Client::Query(sql)) | Ok(Client::Parse { query: sql, .. }) => {
                    crate::classify::pins_lasting(sql)
                }
                _ => false,
            })
    }

    /// The end of a transaction for `ryw.*`: a commit keeps the `SET`s
    /// (not the `SET LOCAL`s), a rollback undoes both.
    fn end_ryw_transaction(&mut self, outcome: &Outcome, status: u8) {
        if status != b'I' {
            return;
        }
        let Some(txn) = self.ryw_txn.take() else {
            return;
        };
        self.ryw = if outcome.committed {
            txn.committed
        } else {
            txn.before
        };
    }
}
