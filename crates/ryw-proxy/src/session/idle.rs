//! Between batches: what the nodes send unasked reaches the client at once
//! (a `LISTEN`ing client waits on its socket for notifications), and the
//! proxy's own exchanges with the leader in the client's session (the pin
//! check, aborting a transaction the proxy refused a statement in).

use super::*;

use tag::backend as b;

/// Is any session state that lives on the leader only still there? One
/// row, one boolean; catalogs and built-ins only, schema-qualified.
pub(crate) const PIN_CHECK_SQL: &str = "SELECT \
     EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
             WHERE c.relnamespace = pg_catalog.pg_my_temp_schema()) \
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels()) \
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_cursors WHERE is_holdable) \
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_locks \
             WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid())";

/// Makes the leader's open transaction fail, as an error the proxy answered
/// would have made it fail on the server.
const ABORT_SQL: &str = "SELECT 'ryw proxy refused a statement'::pg_catalog.int4";

impl Session {
    /// Waits for the client's next message, relaying what any node sends
    /// meanwhile (notifications, notices, parameter changes). A node that
    /// closes or ends the connection is dropped; if the session's state
    /// lived there (the leader, pinned), the client's connection ends too,
    /// as it would have with the server.
    pub(super) async fn wait_idle(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        let ready = {
            // Every open node at once, polled in place (nothing allocated
            // per wait).
            let backends = &self.backends;
            let ids = &self.shared.ids;
            let any_backend = std::future::poll_fn(|cx| {
                for (b, &id) in backends.iter().zip(ids) {
                    if let Some(b) = b
                        && b.poll_readable(cx).is_ready()
                    {
                        return std::task::Poll::Ready(id);
                    }
                }
                std::task::Poll::Pending
            });
            tokio::select! {
                r = client.fill() => match r {
                    Ok(0) | Err(_) => return Err(Closing::Left),
                    Ok(_) => None,
                },
                slot = any_backend => Some(slot),
            }
        };
        let Some(slot) = ready else { return Ok(()) };
        // Never a blocking read here: the readiness may be left over from
        // the last batch's replies, and the client must not wait on a node
        // that has nothing to say.
        let fill = match self.backends[slot].as_mut() {
            Some(b) => b.try_fill(),
            None => return Ok(()),
        };
        match fill {
            Ok(Some(_)) => self.relay_unasked(client, slot).await,
            Ok(None) => Ok(()),
            Err(e) => self.idle_backend_gone(client, slot, e.to_string()).await,
        }
    }

    /// Relays the whole messages node `slot` sent while no batch was there.
    async fn relay_unasked(
        &mut self,
        client: &mut ClientConn,
        slot: NodeId,
    ) -> Result<(), Closing> {
        loop {
            let Some(backend) = self.backends[slot].as_mut() else {
                return Ok(());
            };
            let frame =
                match protocol::next_frame(&mut backend.inbuf, crate::backend::MAX_BACKEND_MESSAGE)
                {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        return self
                            .idle_backend_gone(client, slot, format!("protocol: {e}"))
                            .await;
                    }
                };
            let follower = slot != self.leader_slot;
            match frame.tag {
                // The client's session is on the leader: what a follower's
                // connection says unasked (its own parameters, a notice of
                // its own) is not the client's business.
                b::NOTIFICATION_RESPONSE | b::NOTICE_RESPONSE | b::PARAMETER_STATUS => {
                    // A node going away warns before it closes (57P01,
                    // 57P02: class 57, operator intervention): that node's
                    // business; the client's session goes on elsewhere.
                    let node_going = frame.tag == b::NOTICE_RESPONSE
                        && protocol::error_fields(frame.body()).code.starts_with("57");
                    if !follower && !node_going {
                        client.out.put_slice(&frame.raw);
                    }
                }
                b::ERROR_RESPONSE => {
                    let e = protocol::error_fields(frame.body());
                    let why = format!("{} ({})", e.message, e.code);
                    return self.idle_backend_gone(client, slot, why).await;
                }
                other => {
                    let why = format!("unexpected message {:?} while idle", other as char);
                    return self.idle_backend_gone(client, slot, why).await;
                }
            }
        }
    }

    /// A node's connection went away between batches.
    async fn idle_backend_gone(
        &mut self,
        client: &mut ClientConn,
        slot: NodeId,
        why: String,
    ) -> Result<(), Closing> {
        let name = self.shared.addr(slot).name.clone();
        self.drop_backend(slot);
        let lived_there = slot == self.leader_slot && (self.pins.pinned || self.status != b'I');
        if lived_there {
            let message = format!(
                "the connection to {name} was lost, with the session state that lived there: {why}"
            );
            client.fatal("08006", &message).await;
            return Err(Closing::Fatal(message));
        }
        tracing::debug!(node = %name, %why, "an idle connection to a node closed; it opens again when needed");
        Ok(())
    }

    /// The pin check: asks the leader, in the client's session, whether
    /// any state that pins is left; unpins if not.
    pub(super) async fn check_pins(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        self.pins.check_due = false;
        if self.pins.lasting {
            return Ok(());
        }
        self.shared.metrics.count(crate::metrics::Event::PinCheck);
        let slot = self.slot(Node::Leader);
        if self.backends[slot].is_none() {
            // The session on the leader is gone, and its state with it.
            self.pins = Pins::default();
            return Ok(());
        }
        match self.exchange(client, slot, PIN_CHECK_SQL).await? {
            Some(row) if row.as_deref() == Some("f") => {
                tracing::debug!(
                    pid = self.pid,
                    "nothing pins the session to the leader any more"
                );
                self.shared.metrics.count(crate::metrics::Event::Unpinned);
                self.pins = Pins::default();
            }
            _ => {}
        }
        Ok(())
    }

    /// Makes the leader's open transaction fail (see [`ABORT_SQL`]).
    pub(super) async fn abort_transaction(&mut self, client: &mut ClientConn) {
        let slot = self.slot(Node::Leader);
        if self.backends[slot].is_none() {
            return;
        }
        let _ = self.exchange_raw(&mut client.out, slot, ABORT_SQL).await;
    }

    /// Runs one simple query of the proxy's on node `slot`, in the client's
    /// session, between batches: returns its first column of its first
    /// row (`Some(None)` for NULL), or `None` if it failed. Notifications
    /// that arrive meanwhile go to the client.
    async fn exchange(
        &mut self,
        client: &mut ClientConn,
        slot: NodeId,
        sql: &str,
    ) -> Result<Option<Option<String>>, Closing> {
        match self.exchange_raw(&mut client.out, slot, sql).await {
            Ok(v) => Ok(v),
            Err(why) => {
                self.idle_backend_gone(client, slot, why).await?;
                Ok(None)
            }
        }
    }

    async fn exchange_raw(
        &mut self,
        asides: &mut BytesMut,
        slot: NodeId,
        sql: &str,
    ) -> Result<Option<Option<String>>, String> {
        let Some(backend) = self.backends[slot].as_mut() else {
            return Ok(None);
        };
        let mut out = BytesMut::new();
        simple_query(&mut out, sql);
        backend.send(&out).await.map_err(|e| e.to_string())?;
        backend.unnamed = None;
        let mut value = None;
        let mut failed = false;
        loop {
            let frame = backend.read_frame().await.map_err(|e| e.to_string())?;
            match frame.tag {
                b::DATA_ROW if value.is_none() => {
                    value = Some(protocol::first_column(frame.body()).map(str::to_owned));
                }
                b::ERROR_RESPONSE => {
                    let e = protocol::error_fields(frame.body());
                    if is_fatal(&e) {
                        return Err(format!("{} ({})", e.message, e.code));
                    }
                    failed = true;
                }
                b::NOTIFICATION_RESPONSE => asides.put_slice(&frame.raw),
                b::READY_FOR_QUERY => break,
                _ => {}
            }
        }
        Ok(if failed { None } else { value })
    }
}
