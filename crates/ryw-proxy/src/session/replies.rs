//! A node's replies to a batch: relayed, held back (until a read is sure
//! to stay where it is), or swallowed (the proxy's own statements); then
//! the session's token and settings follow what the batch did. A node that
//! breaks or stops answering before anything reached the client: the batch
//! runs again elsewhere.

use super::*;

impl Session {
    /// Handles the node's replies that have arrived.
    pub(super) async fn take_backend_frames(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<(), Closing> {
        loop {
            let leader_slot = self.leader_slot;
            let Phase::Flying(f) = &mut self.phase else {
                return Ok(());
            };
            let node = f.node;
            let slot = match node {
                Node::Leader => leader_slot,
                Node::Follower(i) => i,
            };
            let backend = self.backends[slot].as_mut().expect("open");
            let frame =
                match protocol::next_frame(&mut backend.inbuf, crate::backend::MAX_BACKEND_MESSAGE)
                {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Ok(()),
                    Err(e) => return self.backend_lost(client, format!("protocol: {e}")).await,
                };
            let tag = frame.tag;
            // Settings replayed before the batch.
            if f.replays > 0 {
                match tag {
                    b'Z' => f.replays -= 1,
                    b'E' => {
                        let e = protocol::error_fields(frame.body());
                        tracing::warn!(node = %backend.name, code = %e.code, message = %e.message, "a session setting failed to replay");
                    }
                    _ => {}
                }
                continue;
            }
            // The proxy's own Parse/Close before the batch.
            if f.swallow > 0 && f.client_ready.is_none() {
                match tag {
                    b'1' | b'3' => {
                        f.swallow -= 1;
                        continue;
                    }
                    b'E' => {
                        // The server now skips to the client's Sync.
                        f.swallow = 0;
                        if f.read.is_some() && !f.forwarded && node != Node::Leader {
                            f.to_leader = true;
                            continue;
                        }
                    }
                    _ => f.swallow = 0,
                }
            }
            if f.client_ready.is_none() {
                match tag {
                    b'Z' if f.synced => {
                        let status = protocol::ready_status(&frame.raw).unwrap_or(b'I');
                        f.client_ready = Some(status);
                        if f.to_leader {
                            if !f.position_after {
                                return self.retry_on_leader(client).await;
                            }
                            continue;
                        }
                        release(f, client);
                        if f.position_after {
                            continue;
                        }
                        if f.position_later {
                            f.position_after = true;
                            let mut out = BytesMut::new();
                            let slot = self.slot(node);
                            position_statement(&mut out, &mut self.backends[slot]);
                            if let Err(e) = self.backend(node).send(&out).await {
                                return self.backend_lost(client, e.to_string()).await;
                            }
                            continue;
                        }
                        return self.land(client, Some(frame.raw)).await;
                    }
                    _ if f.to_leader => continue,
                    b'E' if is_fatal(frame.body()) => {
                        // The node ends this connection (shutting down, a
                        // crash): the client's own connection goes on.
                        let e = protocol::error_fields(frame.body());
                        let why = format!("{} ({})", e.message, e.code);
                        return self.backend_lost(client, why).await;
                    }
                    b'E' => {
                        let e = protocol::error_fields(frame.body());
                        if f.holding && !f.forwarded && e.code == "25006" {
                            // Rule: a read a follower refuses as a write runs
                            // on the leader, before anything reached the client.
                            f.to_leader = true;
                            f.held.clear();
                            continue;
                        }
                        f.error = Some(e.code);
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                    }
                    b'C' => {
                        let tag = protocol::command_tag(frame.body());
                        if tag == "COMMIT" {
                            f.committed = true;
                        } else if tag == "ROLLBACK" {
                            f.rolled_back = true;
                        }
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                    }
                    b'G' => {
                        f.copy_in = true;
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                        // The client sends its data once it reads this.
                        client.flush().await?;
                    }
                    b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'S' | b'N' if f.holding => {
                        f.held.put_slice(&frame.raw);
                    }
                    _ => {
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                    }
                }
                continue;
            }
            // The position statement after the batch.
            match tag {
                b'D' => {
                    f.position =
                        protocol::first_column(frame.body()).and_then(|v| v.parse::<Lsn>().ok());
                }
                b'Z' => {
                    if f.to_leader {
                        return self.retry_on_leader(client).await;
                    }
                    return self.land(client, None).await;
                }
                _ => {}
            }
        }
    }

    /// The batch is done: the session's token and settings follow what it
    /// did, then the client gets its `ReadyForQuery`.
    pub(super) async fn land(
        &mut self,
        client: &mut ClientConn,
        ready: Option<Bytes>,
    ) -> Result<(), Closing> {
        let Phase::Flying(mut f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let status = f.client_ready.unwrap_or(b'I');
        let router = &self.shared.router;
        if f.plan.runs {
            self.served_by = self.node_name(f.node);
        }
        if let Some(decision) = f.read.as_mut() {
            let fresh = decision.freshness == ryw_router::Freshness::Fresh;
            match f.position {
                // Rule 7: what the read saw, bounded by the position read
                // after it on the same connection. The leader's, or the same
                // follower's later one, also bounds an unsettled read.
                Some(lsn) => {
                    router.raise_token(decision, lsn).await;
                    if decision.follower_index().is_none()
                        || self.unsettled.map(|u| u.follower) == decision.follower_index()
                    {
                        self.unsettled = None;
                    }
                }
                None if f.position_after && decision.follower_index().is_some() => {
                    router.report_lost(decision, "no replay position after a read");
                }
                // A follower read of this connection's own session: the
                // tracker's next poll of the follower bounds it; until then
                // reads stay on that follower or go to the leader.
                None if fresh && decision.strategy.tracks_tokens() => {
                    self.unsettled = router.unsettled(decision, tokio::time::Instant::now());
                }
                None => {}
            }
            if let Some(lost) = decision.lost {
                self.tell_lost(client, lost);
                // Told once.
                self.written = None;
            }
            self.token = self.token.max(decision.token);
        } else if status == b'I'
            && let Some(lsn) = f.position
        {
            // Rule 1: the leader's position after the write committed. It
            // also bounds any read before it.
            let lost = match &self.named {
                Some(key) => router.record_write_at(key, lsn, f.floor).await.lost,
                None => {
                    router.note_leader_position(lsn);
                    self.written.and_then(|w| router.lost_write(w))
                }
            };
            if let Some(lost) = lost {
                self.tell_lost(client, lost);
                self.written = None;
            }
            let written = Position::new(router.leader_timeline(), lsn);
            self.token = self.token.max(Some(written));
            self.written = self.written.max(f.floor);
            self.last_write_ms = Some(now_ms());
            self.unsettled = None;
        }
        if f.error.is_none() {
            if f.plan.pins {
                self.pinned = true;
            }
            match self.status_after_settings(&f, status) {
                SettingsFate::Keep => self.settings.append(&mut f.plan.settings),
                SettingsFate::Pending => self.pending_settings.append(&mut f.plan.settings),
                SettingsFate::Drop => {}
            }
        }
        if f.committed {
            self.settings.append(&mut self.pending_settings);
        } else if f.rolled_back || (status == b'I' && f.error.is_some()) {
            self.pending_settings.clear();
        }
        if f.node == Node::Leader {
            // The client's own settings ran there.
            let n = self.settings.len();
            let slot = self.slot(f.node);
            if let Some(b) = self.backends[slot].as_mut() {
                b.settings_applied = n;
            }
        }
        self.status = status;
        match ready {
            Some(raw) => client.out.put_slice(&raw),
            None => protocol::ready(&mut client.out, status),
        }
        client.flush().await
    }

    pub(super) fn status_after_settings(&self, f: &Flight, status: u8) -> SettingsFate {
        if f.plan.settings.is_empty() {
            SettingsFate::Drop
        } else if status == b'I' {
            SettingsFate::Keep
        } else {
            SettingsFate::Pending
        }
    }

    /// The node refused the read as a write (25006), or its injected
    /// statements failed: the same batch on the leader.
    pub(super) async fn retry_on_leader(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        let Phase::Flying(f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        tracing::debug!(node = ?f.node, "read refused by a follower; running it on the leader");
        self.shared.metrics.retry(crate::metrics::Retry::ReadOnly);
        self.send_batch(
            client,
            f.frames,
            f.plan,
            Route::Leader,
            f.synced,
            f.attempts,
        )
        .await
    }

    /// The connection to the node of the batch in flight broke. Before
    /// anything reached the client, a read runs once more elsewhere (rule
    /// 8); otherwise the client gets an error (and, inside a transaction,
    /// loses its connection, as it would to a server that went away).
    pub(super) async fn backend_lost(
        &mut self,
        client: &mut ClientConn,
        why: String,
    ) -> Result<(), Closing> {
        let Phase::Flying(f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let slot = self.slot(f.node);
        self.backends[slot] = None;
        let name = self.node_name(f.node);
        if let Some(decision) = &f.read {
            // Rule 3: forget the follower's position now.
            self.shared.router.report_lost(decision, &why);
        }
        if f.read.is_some() && !f.forwarded && f.attempts < 3 && f.synced {
            tracing::info!(node = %name, %why, "read lost its node; running it elsewhere");
            self.shared.metrics.retry(crate::metrics::Retry::Lost);
            let route = f.plan.route.unwrap_or(Route::Read);
            // Boxed: sending may find this connection lost in turn.
            return Box::pin(self.send_batch(client, f.frames, f.plan, route, true, f.attempts))
                .await;
        }
        let message = format!("the connection to {name} was lost: {why}");
        if self.status != b'I' || f.node == Node::Leader && f.read.is_none() && f.forwarded {
            client.fatal("08006", &message).await;
            return Err(Closing::Fatal(message));
        }
        protocol::error(&mut client.out, "ERROR", "08006", &message);
        if f.synced {
            protocol::ready(&mut client.out, self.status);
        }
        client.flush().await
    }

    /// A read waits on a follower: if the follower leaves rotation (it
    /// stalled, rule 8) before anything reached the client, the read runs
    /// elsewhere and the stalled connection is dropped.
    pub(super) async fn check_follower_still_eligible(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<(), Closing> {
        let Phase::Flying(f) = &self.phase else {
            return Ok(());
        };
        let Node::Follower(i) = f.node else {
            return Ok(());
        };
        // Lagging past the limit is no reason to drop a read in progress,
        // nor a restart (this connection then breaks by itself); a follower
        // the tracker forgot and that does not answer its polls (stopped,
        // a partition: rule 3) is.
        let gone = {
            let view = self.view.borrow_and_update();
            view.nodes
                .get(i)
                .is_none_or(|s| !s.healthy && Some(s.epoch) != f.epoch)
        };
        if gone && !f.forwarded && f.synced {
            self.backend_lost(client, "stopped answering while the read waited".into())
                .await
        } else {
            Ok(())
        }
    }

    /// No connection to the node could be had for this batch.
    pub(super) async fn open_failed(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        e: BackendError,
    ) -> Result<(), Closing> {
        let (code, message) = match &e {
            BackendError::Refused { fields, .. } => (fields.code.clone(), fields.message.clone()),
            BackendError::Unreachable { node, .. } if &**node == ryw_router::LEADER_NAME => (
                "57P03".to_owned(),
                format!("the leader is unavailable: {e}"),
            ),
            _ => ("08006".to_owned(), e.to_string()),
        };
        self.fail_batch(client, frames, &code, &message).await
    }

    /// Answers a batch with an error, as a server would: one
    /// `ErrorResponse`, and a `ReadyForQuery` if the batch was synced.
    pub(super) async fn fail_batch(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        code: &str,
        message: &str,
    ) -> Result<(), Closing> {
        protocol::error(&mut client.out, "ERROR", code, message);
        if frames
            .last()
            .is_some_and(|f| f.tag == b'S' || f.tag == b'Q' || f.tag == b'F')
        {
            protocol::ready(&mut client.out, self.status);
        }
        client.flush().await
    }

    pub(super) async fn refuse_batch(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        code: &str,
        message: &str,
    ) -> Result<(), Closing> {
        self.fail_batch(client, frames, code, message).await
    }
}

pub(super) enum SettingsFate {
    Keep,
    Pending,
    Drop,
}
