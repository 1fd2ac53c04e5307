//! A node's replies to a batch, stage by stage ([`Stage`]): the proxy's
//! preamble swallowed, the client's replies relayed (held back on a
//! follower until the read cannot move), the position statement read.
//! A node that refuses a read as a write, breaks or stops answering before
//! anything reached the client: the batch runs again elsewhere.

use super::*;

use crate::backend::{LARGE_MESSAGE, MAX_BACKEND_MESSAGE};
use tag::backend as b;

/// Held replies past this size are released: the read stays where it is.
const HOLD_CAP: usize = 64 * 1024;
/// How much of a large `ErrorResponse`/`NoticeResponse` is read for its
/// fields before the rest is relayed in pieces.
const FIELDS_PREFIX: usize = 8 * 1024;

/// What to do with a large message: relay it, or drop it.
enum Large {
    Relay,
    Drop,
}

impl Session {
    /// Handles the node's replies that have arrived.
    pub(super) async fn take_backend_frames(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<(), Closing> {
        loop {
            let Phase::Flying(f) = &self.phase else {
                return Ok(());
            };
            let slot = self.slot(f.node);
            let backend = self.backends[slot].as_mut().expect("open");
            // The rest of a large message, as it comes.
            if backend.passthrough > 0 {
                let n = backend.passthrough.min(backend.inbuf.len());
                if n == 0 {
                    return Ok(());
                }
                let piece = backend.inbuf.split_to(n);
                backend.passthrough -= n;
                if !backend.discard {
                    client.out.put_slice(&piece);
                    client.flush().await?;
                }
                continue;
            }
            let Some((t, total)) = protocol::peek_header(&backend.inbuf) else {
                return Ok(());
            };
            let total = match total {
                Ok(n) => n,
                Err(e) => return self.backend_lost(client, format!("protocol: {e}")).await,
            };
            if total > LARGE_MESSAGE
                && matches!(
                    t,
                    b::DATA_ROW
                        | b::COPY_DATA
                        | b::FUNCTION_CALL_RESPONSE
                        | b::ERROR_RESPONSE
                        | b::NOTICE_RESPONSE
                )
            {
                let need = if matches!(t, b::ERROR_RESPONSE | b::NOTICE_RESPONSE) {
                    total.min(FIELDS_PREFIX)
                } else {
                    5
                };
                if backend.inbuf.len() < need {
                    backend.inbuf.reserve(need);
                    return Ok(());
                }
                let prefix = backend.inbuf[5..need].to_vec();
                let what = self.large_message(client, t, &prefix).await?;
                let Phase::Flying(f) = &self.phase else {
                    return Ok(());
                };
                let slot = self.slot(f.node);
                let backend = self.backends[slot].as_mut().expect("open");
                let n = total.min(backend.inbuf.len());
                let piece = backend.inbuf.split_to(n);
                backend.passthrough = total - n;
                backend.discard = matches!(what, Large::Drop);
                if !backend.discard {
                    client.out.put_slice(&piece);
                    client.flush().await?;
                }
                continue;
            }
            if total > MAX_BACKEND_MESSAGE {
                return self
                    .backend_lost(
                        client,
                        format!("protocol: a message of {total} bytes from the node"),
                    )
                    .await;
            }
            let frame = match protocol::next_frame(&mut backend.inbuf, MAX_BACKEND_MESSAGE) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return self.backend_lost(client, format!("protocol: {e}")).await,
            };
            self.on_frame(client, frame).await?;
        }
    }

    /// The start of a message too big to hold: what its stage makes of it.
    async fn large_message(
        &mut self,
        client: &mut ClientConn,
        t: u8,
        prefix: &[u8],
    ) -> Result<Large, Closing> {
        let Phase::Flying(f) = &mut self.phase else {
            return Ok(Large::Drop);
        };
        match &mut f.stage {
            Stage::Client { held, .. } => {
                if t == b::ERROR_RESPONSE {
                    let e = protocol::error_fields(prefix);
                    f.outcome.error.get_or_insert(e.code);
                }
                if let Some(h) = held.take() {
                    client.out.put_slice(&h);
                }
                f.forwarded = true;
                Ok(Large::Relay)
            }
            _ => Ok(Large::Drop),
        }
    }

    /// One whole reply, in the flight's stage.
    async fn on_frame(&mut self, client: &mut ClientConn, frame: Frame) -> Result<(), Closing> {
        let leader_slot = self.leader_slot;
        let names = &self.shared;
        let Phase::Flying(f) = &mut self.phase else {
            return Ok(());
        };
        let t = frame.tag;
        // Asynchronous: a notification is the client's whatever the stage.
        if t == b::NOTIFICATION_RESPONSE {
            client.out.put_slice(&frame.raw);
            return Ok(());
        }
        if t == b::ERROR_RESPONSE {
            let e = protocol::error_fields(frame.body());
            if is_fatal(&e) {
                // The node ends this connection (shutting down, a crash):
                // the client's own connection goes on where it can.
                let why = format!("{} ({})", e.message, e.code);
                return self.backend_lost(client, why).await;
            }
        }
        match &mut f.stage {
            Stage::Preamble {
                queries,
                statements,
                sync,
                holding,
            } => {
                if *queries == 0 && *statements == 0 && *sync {
                    // The proxy's Sync after the statements it prepared.
                    if t == b::READY_FOR_QUERY {
                        *sync = false;
                    }
                } else if *queries > 0 {
                    match t {
                        b::READY_FOR_QUERY => *queries -= 1,
                        b::ERROR_RESPONSE => {
                            let e = protocol::error_fields(frame.body());
                            tracing::warn!(
                                node = %match f.node {
                                    Node::Leader => names.addr(leader_slot).name.clone(),
                                    Node::Follower(i) => names.addr(i).name.clone(),
                                },
                                code = %e.code,
                                message = %e.message,
                                "a session setting failed to replay"
                            );
                        }
                        _ => {}
                    }
                } else {
                    match t {
                        b::PARSE_COMPLETE | b::CLOSE_COMPLETE => *statements -= 1,
                        b::ERROR_RESPONSE if *sync => {
                            // Before a simple query: the server skips to the
                            // proxy's Sync; the client's query runs after it
                            // and answers for itself.
                            *statements = 0;
                            let slot = match f.node {
                                Node::Leader => leader_slot,
                                Node::Follower(i) => i,
                            };
                            if let Some(b) = self.backends[slot].as_mut() {
                                for name in f.injected.drain(..) {
                                    b.forget_statement(&name);
                                }
                            }
                        }
                        b::ERROR_RESPONSE => {
                            // The node now skips to the client's Sync, and
                            // holds none of what the preamble prepared.
                            let node = f.node;
                            let slot = match node {
                                Node::Leader => leader_slot,
                                Node::Follower(i) => i,
                            };
                            if let Some(b) = self.backends[slot].as_mut() {
                                for name in f.injected.drain(..) {
                                    b.forget_statement(&name);
                                }
                            }
                            if f.read.is_some() && node != Node::Leader {
                                f.stage = Stage::Redirect {
                                    readies: 1 + u8::from(f.position),
                                    as_write: false,
                                };
                                return Ok(());
                            }
                            // On the leader it is the batch's answer.
                            f.stage = Stage::Client {
                                held: None,
                                copy_in: false,
                            };
                            let e = protocol::error_fields(frame.body());
                            f.outcome.error.get_or_insert(e.code);
                            f.forwarded = true;
                            client.out.put_slice(&frame.raw);
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                if *queries == 0 && *statements == 0 && !*sync {
                    let holding = *holding;
                    f.stage = Stage::Client {
                        held: holding.then(BytesMut::new),
                        copy_in: false,
                    };
                }
                Ok(())
            }
            Stage::Client { held, copy_in } => {
                match t {
                    b::READY_FOR_QUERY if f.synced => {
                        if let Some(h) = held.take() {
                            client.out.put_slice(&h);
                        }
                        if f.position {
                            f.stage = Stage::Position {
                                ready: frame,
                                lsn: None,
                            };
                            return Ok(());
                        }
                        return self.land(client, Some(frame), None).await;
                    }
                    b::ERROR_RESPONSE => {
                        let e = protocol::error_fields(frame.body());
                        if held.is_some() && e.code == "25006" {
                            // A read a follower refuses as a write runs on
                            // the leader, before anything reached the client.
                            f.stage = Stage::Redirect {
                                readies: 1 + u8::from(f.position),
                                as_write: true,
                            };
                            return Ok(());
                        }
                        f.outcome.error.get_or_insert(e.code);
                    }
                    b::COMMAND_COMPLETE => match protocol::command_tag(frame.body()) {
                        "COMMIT" => f.outcome.committed = true,
                        "ROLLBACK" => f.outcome.rolled_back = true,
                        _ => {}
                    },
                    b::COPY_IN_RESPONSE => *copy_in = true,
                    b::PARSE_COMPLETE => f.outcome.parsed += 1,
                    b::CLOSE_COMPLETE => f.outcome.closed += 1,
                    _ => {}
                }
                match t {
                    b::PARSE_COMPLETE
                    | b::BIND_COMPLETE
                    | b::CLOSE_COMPLETE
                    | b::PARAMETER_DESCRIPTION
                    | b::ROW_DESCRIPTION
                    | b::NO_DATA
                    | b::PARAMETER_STATUS
                    | b::NOTICE_RESPONSE
                        if held.as_ref().is_some_and(|h| h.len() < HOLD_CAP) =>
                    {
                        held.as_mut().expect("checked").put_slice(&frame.raw);
                        return Ok(());
                    }
                    _ => {}
                }
                if let Some(h) = held.take() {
                    client.out.put_slice(&h);
                }
                f.forwarded = true;
                client.out.put_slice(&frame.raw);
                if t == b::COPY_IN_RESPONSE {
                    // The client sends its data once it reads this.
                    client.flush().await?;
                }
                Ok(())
            }
            Stage::Redirect { readies, as_write } => {
                if t == b::READY_FOR_QUERY {
                    *readies -= 1;
                    if *readies == 0 {
                        let as_write = *as_write;
                        return self.retry_on_leader(client, as_write).await;
                    }
                }
                Ok(())
            }
            Stage::Position { lsn, .. } => {
                match t {
                    b::DATA_ROW => {
                        *lsn = protocol::first_column(frame.body()).and_then(|v| v.parse().ok());
                    }
                    b::ERROR_RESPONSE => {
                        let e = protocol::error_fields(frame.body());
                        tracing::debug!(code = %e.code, message = %e.message, "the position statement failed");
                    }
                    b::READY_FOR_QUERY => {
                        let Stage::Position { ready, lsn } = &f.stage else {
                            unreachable!("matched above")
                        };
                        let (ready, lsn) = (ready.clone(), *lsn);
                        return self.land(client, Some(ready), lsn).await;
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    /// The node refused the read as a write (25006), or could not prepare
    /// what it needed: the same batch on the leader (as a write, or a read).
    pub(super) async fn retry_on_leader(
        &mut self,
        client: &mut ClientConn,
        as_write: bool,
    ) -> Result<(), Closing> {
        let Phase::Flying(f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        tracing::debug!(node = ?f.node, as_write, "a read could not run on its follower; running it on the leader");
        self.shared.metrics.retry(crate::metrics::Retry::ReadOnly);
        let route = if as_write {
            Route::Leader
        } else {
            f.plan.route.unwrap_or(Route::Read)
        };
        if !as_write {
            // Its preamble failed there: what the proxy thinks that node
            // holds is not sure any more; a new connection next time.
            let slot = self.slot(f.node);
            self.drop_backend(slot);
        }
        let Flight {
            frames,
            plan,
            synced,
            attempts,
            ..
        } = *f;
        self.send_batch(client, frames, plan, route, true, synced, attempts)
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
        self.running(Running::Idle);
        let slot = self.slot(f.node);
        self.drop_backend(slot);
        if f.node == Node::Leader {
            // The session's state there is gone with it.
            self.pins = Pins::default();
        }
        let name = self.node_name(f.node);
        let was_read = f.read.is_some();
        if let Some(read) = f.read {
            // Rule 3: forget the follower's position now.
            read.lost(&why);
        }
        if was_read && !f.forwarded && f.attempts < 3 && f.synced && !f.proxy_sync {
            tracing::info!(node = %name, %why, "read lost its node; running it elsewhere");
            // The batch runs again whole: what it registered (its `Parse`s
            // and `Close`s) is taken back first, or its own `Parse` would
            // meet the copy prepared for it on the next node (42P05).
            self.take_back(f.node, f.undo, 0, 0);
            self.take_back_pooled(f.node, f.pooled, 0);
            self.shared.metrics.retry(crate::metrics::Retry::Lost);
            let route = f.plan.route.unwrap_or(Route::Read);
            // Boxed: sending may find this connection lost in turn.
            return Box::pin(
                self.send_batch(client, f.frames, f.plan, route, false, true, f.attempts),
            )
            .await;
        }
        let message = format!("the connection to {name} was lost: {why}");
        if self.status != b'I' || (f.node == Node::Leader && !was_read && f.forwarded) {
            client.fatal("08006", &message).await;
            return Err(Closing::Fatal(message));
        }
        protocol::error(&mut client.out, "ERROR", "08006", &message);
        if f.synced && !f.proxy_sync {
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
        // Lagging past the limit is no reason to drop a read in progress,
        // nor a restart (this connection then breaks by itself); a follower
        // the tracker forgot and that does not answer its polls (stopped,
        // a partition: rule 3) is.
        let gone = {
            let view = self.view.borrow_and_update();
            f.read.as_ref().is_some_and(|r| r.abandoned(&view))
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
            BackendError::Busy { why, .. } => ("53300".to_owned(), why.clone()),
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
        if frames.last().is_some_and(|f| {
            matches!(
                f.tag,
                tag::frontend::SYNC | tag::frontend::QUERY | tag::frontend::FUNCTION_CALL
            )
        }) {
            protocol::ready(&mut client.out, self.status);
        }
        client.flush().await
    }

    /// Refuses a batch the proxy will not run. Inside a transaction the
    /// error aborts it, as any error would on the server: the leader's
    /// transaction is made to fail too, so the two agree.
    pub(super) async fn refuse_batch(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        code: &str,
        message: &str,
    ) -> Result<(), Closing> {
        if self.status == b'T' {
            self.abort_transaction(client).await;
            self.status = b'E';
        }
        self.fail_batch(client, frames, code, message).await
    }
}
