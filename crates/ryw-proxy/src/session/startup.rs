//! A client's startup: a TLS request answered `S` and the handshake made
//! (`N` with `--tls-mode disable`), a GSS request answered `N`, each once
//! and with nothing after it in the clear; a startup in the clear refused
//! under `--tls-mode require`; a cancel request forwarded (also over TLS);
//! the startup parameters (each key once; `ryw.*` options taken out), the
//! authentication (trust on loopback, SCRAM against the auth file, the same
//! steps for a role that does not exist), a client slot, and the server
//! parameters the client gets (cached per role, database and parameters; a
//! node is opened only when none are cached).

use super::*;

pub(super) async fn read_startup_packet(client: &mut ClientConn) -> Result<Vec<u8>, Closing> {
    loop {
        match protocol::startup_len(&client.inbuf) {
            Ok(Some(n)) => return Ok(client.inbuf.split_to(n).to_vec()),
            Ok(None) => {}
            Err(e) => {
                client
                    .fatal("08P01", &format!("invalid startup packet: {e}"))
                    .await;
                return Err(e.into());
            }
        }
        match client.fill().await {
            Ok(0) | Err(_) => return Err(Closing::Left),
            Ok(_) => {}
        }
    }
}

/// `options=-c ryw.session=k -c search_path=x`: the `ryw.*` settings, and
/// the options left for the nodes.
pub(super) fn split_options(options: &str) -> (Vec<(String, String)>, String) {
    // PostgreSQL's syntax: words split on spaces, `\` escapes the next
    // character; `-c name=value` or `--name=value`.
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let escape = |w: &str| w.replace('\\', "\\\\").replace(' ', "\\ ");
    let (mut ryw, mut keep) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < words.len() {
        let (setting, used) = match words[i].as_str() {
            "-c" if i + 1 < words.len() => (Some(words[i + 1].clone()), 2),
            w if w.starts_with("--") => (Some(w[2..].to_owned()), 1),
            w if w.starts_with("-c") && w.len() > 2 => (Some(w[2..].to_owned()), 1),
            _ => (None, 1),
        };
        match setting.as_deref().and_then(|s| s.split_once('=')) {
            Some((name, value)) if name.to_ascii_lowercase().starts_with("ryw.") => {
                ryw.push((name[4..].to_ascii_lowercase(), value.to_owned()));
            }
            _ => keep.extend(words[i..i + used].iter().map(|w| escape(w))),
        }
        i += used;
    }
    (ryw, keep.join(" "))
}

/// `-c name=value` and `--name=value` of a startup `options` value (what is
/// left once the `ryw.*` ones are out), as settings.
fn option_settings(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace().peekable();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()
        } else {
            w.strip_prefix("--").or_else(|| w.strip_prefix("-c"))
        };
        if let Some((k, v)) = setting.and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

/// A setting's name as SQL: quoted unless a plain lower-case word (dotted
/// names part by part).
fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|part| {
            let plain = !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !part.starts_with(|c: char| c.is_ascii_digit());
            if plain {
                part.to_owned()
            } else {
                format!("\"{}\"", part.replace('"', "\"\""))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub(super) async fn startup(
    shared: &Arc<ProxyState>,
    client: &mut ClientConn,
    peer: SocketAddr,
    thread: usize,
) -> Result<Session, Closing> {
    let (mut ssl_asked, mut gss_asked) = (false, false);
    let (version, mut params) = loop {
        let packet = read_startup_packet(client).await?;
        match protocol::parse_startup(&packet) {
            Ok(request @ (Startup::Ssl | Startup::GssEnc)) => {
                // Each request once, and none once TLS is on (PostgreSQL's
                // rule): a client cannot loop here.
                let asked = match request {
                    Startup::Ssl => &mut ssl_asked,
                    _ => &mut gss_asked,
                };
                if std::mem::replace(asked, true) || client.stream.is_tls() {
                    let e =
                        ProtocolError::Malformed("startup packet (an encryption request repeated)");
                    client
                        .fatal(
                            "08P01",
                            "an encryption request was already answered on this connection",
                        )
                        .await;
                    return Err(e.into());
                }
                // Bytes that came with the request came in the clear: after
                // a TLS handshake they would pass for the client's
                // (CVE-2021-23214). Nothing may follow the request unasked.
                if !client.inbuf.is_empty() {
                    let e = ProtocolError::Malformed(
                        "startup packet (data after an encryption request)",
                    );
                    client
                        .fatal("08P01", "received unencrypted data after SSL request")
                        .await;
                    return Err(e.into());
                }
                // No GSS encryption here; TLS when `--tls-mode` allows it.
                // Answered `N`, the client goes on in the clear or gives
                // up, as its `sslmode` says.
                match (request, shared.tls.acceptor()) {
                    (Startup::Ssl, Some((acceptor, end_point))) => {
                        client.out.put_u8(b'S');
                        client.flush().await?;
                        // Within the login timeout and the pending-login
                        // limit, as all of the startup is.
                        client
                            .stream
                            .accept(acceptor)
                            .await
                            .map_err(|e| Closing::Fatal(format!("TLS handshake: {e}")))?;
                        client.end_point = end_point;
                    }
                    _ => {
                        client.out.put_u8(b'N');
                        client.flush().await?;
                    }
                }
            }
            Ok(Startup::Cancel { pid, key }) => {
                if let Some((addr, backend_key)) = shared.cancel_target(pid, key) {
                    Backend::cancel(addr, backend_key).await;
                }
                return Err(Closing::Quiet);
            }
            Ok(Startup::Params { .. })
                if shared.tls.mode == crate::tls::TlsMode::Require && !client.stream.is_tls() =>
            {
                client
                    .fatal(
                        "28000",
                        "ryw proxy requires TLS (--tls-mode require): connect with sslmode=require or verify-full",
                    )
                    .await;
                return Err(Closing::Quiet);
            }
            Ok(Startup::Params { version, params }) => break (version, params),
            Err(e) => {
                let code = match e {
                    ProtocolError::Unsupported(..) => "0A000",
                    _ => "08P01",
                };
                client.fatal(code, &e.to_string()).await;
                return Err(e.into());
            }
        }
    };
    if version == protocol::PROTOCOL_3_2 {
        let unknown: Vec<&str> = params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
            .collect();
        protocol::negotiate_version(&mut client.out, 0, &unknown);
    }
    params.retain(|(k, _)| !k.starts_with("_pq_."));
    // One value per key: PostgreSQL takes the last of a repeated key, a
    // proxy that checked the first would log one role in and run another.
    for (i, (k, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(earlier, _)| earlier == k) {
            let e = ProtocolError::Malformed("startup packet (a parameter given twice)");
            client
                .fatal(
                    "08P01",
                    &format!(
                        "invalid startup packet: parameter \"{}\" is given twice",
                        cut(k, 63)
                    ),
                )
                .await;
            return Err(e.into());
        }
    }
    let user = match params.iter().find(|(k, _)| k == "user") {
        Some((_, u)) if !u.is_empty() => u.clone(),
        _ => {
            client
                .fatal(
                    "28000",
                    "no PostgreSQL user name specified in startup packet",
                )
                .await;
            return Err(Closing::Quiet);
        }
    };
    if params
        .iter()
        .any(|(k, v)| k == "replication" && v != "false" && v != "0")
    {
        client
            .fatal(
                "0A000",
                "replication connections are not supported by ryw proxy",
            )
            .await;
        return Err(Closing::Quiet);
    }
    let database = params
        .iter()
        .find(|(k, _)| k == "database")
        .map(|(_, d)| d.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let mut ryw_options = Vec::new();
    for (k, v) in params.iter_mut() {
        if k == "options" {
            let (ryw, rest) = split_options(v);
            ryw_options = ryw;
            *v = rest;
        }
    }
    params.retain(|(k, v)| !(k == "options" && v.is_empty()));

    let password = authenticate(shared, client, peer, &user).await?;

    // A client slot only now: connections that never log in take none.
    let Some(slot) = shared.client_slot() else {
        shared.metrics.refused();
        client
            .fatal(
                "53300",
                &format!(
                    "sorry, too many clients already (the proxy's limit is {}, --max-clients)",
                    shared.cfg.max_clients
                ),
            )
            .await;
        return Err(Closing::Quiet);
    };
    let cancel = Arc::new(std::sync::Mutex::new(crate::server::Running::Idle));
    let (pid, key) = shared.register(cancel.clone());
    // Transaction pooling: connections are shared by role and database, so
    // what else the client's startup asks for becomes settings of its own,
    // replayed on whichever connection it gets (as PgBouncer's
    // track_extra_parameters, for every parameter).
    let mut startup_settings = Vec::new();
    if shared.cfg.pool_mode == crate::pool::PoolMode::Transaction {
        params.retain(|(k, v)| {
            if k == "user" || k == "database" {
                return true;
            }
            if k == "options" {
                startup_settings.extend(option_settings(v));
            } else {
                startup_settings.push((k.clone(), v.clone()));
            }
            false
        });
    }
    let mut session = Session {
        shared: shared.clone(),
        peer,
        thread,
        pid,
        cancel,
        id: Identity {
            user: Arc::from(user.as_str()),
            database: Arc::from(database.as_str()),
            params,
            password,
        },
        backends: super::Backends::new(shared.nodes.len()),
        pools: (0..shared.nodes.len()).map(|_| None).collect(),
        leader_slot: shared.leader_slot(),
        status: b'I',
        ryw: RywSettings::default(),
        ryw_txn: None,
        positions: Positions::default(),
        served_by: Arc::from("none"),
        statements: Statements::new(shared.cfg.pool_mode == crate::pool::PoolMode::Transaction),
        settings: Settings::default(),
        pins: Pins::default(),
        classes: ClassCache::new(),
        phase: Phase::Idle,
        batch: Vec::new(),
        batch_bytes: 0,
        scratch: BytesMut::with_capacity(4096),
        hold_spare: BytesMut::new(),
        view: shared.router.watch_cluster(),
        _slot: slot,
    };
    for (name, value) in &startup_settings {
        let sql = format!(
            "SET {} = '{}'",
            quote_ident(name),
            value.replace('\'', "''")
        );
        if let Some(op) = super::settings::op_of(&sql, &[]) {
            session.settings.startup_default(op);
        }
    }
    for (name, value) in ryw_options {
        if let Err((code, message)) = session.set_ryw(client, &name, Some(&value), false).await {
            shared.unregister(session.pid);
            client.fatal(code, &message).await;
            return Err(Closing::Quiet);
        }
    }
    session.shared.catalog.wanted(&session.id.database);

    // What the client is told of the server: from a node's startup for the
    // same role, database and parameters (cached a while), so a client
    // that only reads opens no connection to the leader at all.
    let cache_key = crate::server::ParamsKey::new(&session.id.user, &session.id.params);
    let values = match shared.cached_params(&cache_key) {
        Some(values) => values,
        None => match session.first_node(client).await? {
            Some(values) => {
                shared.cache_params(cache_key, values.clone());
                values
            }
            None => return Err(Closing::Quiet),
        },
    };
    for (name, value) in values.iter() {
        // The client's own startup values, as its session will have them.
        let own = startup_settings
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        protocol::parameter(&mut client.out, name, own.unwrap_or(value));
    }
    session.release();
    protocol::key_data(&mut client.out, session.pid, key);
    protocol::ready(&mut client.out, b'I');
    client.flush().await?;
    Ok(session)
}

impl Session {
    /// Opens the first node for a login nobody made before: the leader (the
    /// client's startup is checked there: database, role), or, when it is
    /// down, a follower for reads. Returns the parameters for the client,
    /// or `None` after refusing it.
    async fn first_node(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<Option<crate::server::ServerParams>, Closing> {
        let mut last = None;
        let shared = self.shared.clone();
        let followers = shared
            .ids
            .iter()
            .filter(|&&id| id != shared.configured_leader())
            .map(|&id| Node::Follower(id));
        for node in std::iter::once(Node::Leader).chain(followers) {
            let incarnation = match node {
                Node::Leader => None,
                Node::Follower(i) => self.shared.router.follower_incarnation(i),
            };
            match self.open(node, incarnation).await {
                Ok(()) => {
                    let backend = self.backend(node);
                    let values = backend
                        .params
                        .iter()
                        .map(|(name, value)| {
                            // A follower says so; the client is connected to the cluster.
                            let value = match (node, name.as_str()) {
                                (Node::Follower(_), "in_hot_standby") => "off",
                                (Node::Follower(_), "default_transaction_read_only") => "off",
                                _ => value.as_str(),
                            };
                            (name.clone(), value.to_owned())
                        })
                        .collect();
                    return Ok(Some(Arc::new(values)));
                }
                Err(BackendError::Refused { fields, .. }) => {
                    self.shared.unregister(self.pid);
                    protocol::error(&mut client.out, "FATAL", &fields.code, &fields.message);
                    let _ = client.flush().await;
                    return Ok(None);
                }
                Err(e) => last = Some(e),
            }
        }
        self.shared.unregister(self.pid);
        client
            .fatal(
                "08006",
                &format!(
                    "no node is reachable: {}",
                    last.map(|e| e.to_string()).unwrap_or_default()
                ),
            )
            .await;
        Ok(None)
    }
}

/// Trust on loopback without an auth file; SCRAM-SHA-256 against it with
/// one. An unknown role goes through the same exchange as a known one and
/// fails at the same step with the same message, so a client cannot tell
/// which roles exist. Returns the password to give the nodes.
pub(super) async fn authenticate(
    shared: &Arc<ProxyState>,
    client: &mut ClientConn,
    peer: SocketAddr,
    user: &str,
) -> Result<Option<String>, Closing> {
    let auth = shared.auth();
    let Some(auth) = auth.as_deref() else {
        if !peer.ip().is_loopback() {
            client
                .fatal(
                    "28000",
                    &format!(
                        "no --auth-file: ryw proxy trusts loopback clients only, not {}",
                        peer.ip()
                    ),
                )
                .await;
            return Err(Closing::Quiet);
        }
        protocol::authentication(&mut client.out, 0, &[]);
        return Ok(None);
    };
    let failed = |client: &mut ClientConn| {
        shared.metrics.auth_failure();
        protocol::error(
            &mut client.out,
            "FATAL",
            "28P01",
            &format!(
                "password authentication failed for user \"{}\"",
                cut(user, 63)
            ),
        );
    };
    // Over TLS, channel binding to the certificate first (libpq's default
    // `channel_binding=prefer` takes it).
    let mut mechanisms = BytesMut::new();
    if client.end_point.is_some() {
        mechanisms.put_slice(crate::auth::SCRAM_SHA_256_PLUS.as_bytes());
        mechanisms.put_u8(0);
    }
    mechanisms.put_slice(crate::auth::SCRAM_SHA_256.as_bytes());
    mechanisms.put_slice(b"\0\0");
    protocol::authentication(&mut client.out, 10, &mechanisms);
    client.flush().await?;
    let mut scram = auth.scram_server(user);
    let first = read_auth_message(client).await?;
    let (mechanism, data) = protocol::parse_sasl_initial(&first)?;
    let plus = mechanism == crate::auth::SCRAM_SHA_256_PLUS;
    if let Some(end_point) = &client.end_point {
        scram.offer_binding(end_point.clone(), plus);
    }
    if mechanism != crate::auth::SCRAM_SHA_256 && !(plus && client.end_point.is_some()) {
        client
            .fatal(
                "28000",
                &format!("unsupported SASL mechanism {:?}", cut(mechanism, 32)),
            )
            .await;
        return Err(Closing::Quiet);
    }
    let server_first = match scram.client_first(data) {
        Ok(m) => m,
        Err(e) => {
            client.fatal(e.sqlstate(), &cut(&e.to_string(), 200)).await;
            return Err(Closing::Quiet);
        }
    };
    protocol::authentication(&mut client.out, 11, &server_first);
    client.flush().await?;
    let last = read_auth_message(client).await?;
    match scram.client_final(last.body()) {
        Ok(server_final) => {
            protocol::authentication(&mut client.out, 12, &server_final);
            protocol::authentication(&mut client.out, 0, &[]);
            Ok(auth
                .user(user)
                .and_then(|entry| entry.backend_password())
                .map(str::to_owned))
        }
        Err(e) if e.sqlstate() == "28P01" => {
            failed(client);
            let _ = client.flush().await;
            Err(Closing::Quiet)
        }
        Err(e) => {
            client.fatal(e.sqlstate(), &cut(&e.to_string(), 200)).await;
            Err(Closing::Quiet)
        }
    }
}

pub(super) async fn read_auth_message(client: &mut ClientConn) -> Result<Frame, Closing> {
    loop {
        match protocol::next_frame(&mut client.inbuf, protocol::MAX_STARTUP) {
            Ok(Some(f)) if f.tag == b'p' => return Ok(f),
            Ok(Some(f)) => {
                let e = ProtocolError::UnknownType(f.tag as char);
                client
                    .fatal("08P01", &format!("expected a password message: {e}"))
                    .await;
                return Err(e.into());
            }
            Ok(None) => {}
            Err(e) => {
                client.fatal("08P01", &e.to_string()).await;
                return Err(e.into());
            }
        }
        match client.fill().await {
            Ok(0) | Err(_) => return Err(Closing::Left),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ryw_options_are_taken_out_of_the_startup_options() {
        let (ryw, rest) =
            split_options("-c ryw.session=alice -c search_path=app --ryw.strategy=causal:0ms");
        assert_eq!(
            ryw,
            vec![
                ("session".to_owned(), "alice".to_owned()),
                ("strategy".to_owned(), "causal:0ms".to_owned())
            ]
        );
        assert_eq!(rest, "-c search_path=app");
        let (ryw, rest) = split_options("-c application_name=a\\ b");
        assert!(ryw.is_empty());
        assert_eq!(rest, "-c application_name=a\\ b");
        assert_eq!(split_options("").1, "");
    }
}
