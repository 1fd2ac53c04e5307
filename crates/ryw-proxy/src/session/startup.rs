//! A client's startup: TLS and GSS requests answered `N`, a cancel request
//! forwarded, the startup parameters (`ryw.*` options taken out), the
//! authentication (trust on loopback, SCRAM against the auth file), the
//! first node and its parameters.

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

pub(super) async fn startup(
    shared: &Arc<Shared>,
    client: &mut ClientConn,
    peer: SocketAddr,
) -> Result<Session, Closing> {
    let (version, mut params) = loop {
        let packet = read_startup_packet(client).await?;
        match protocol::parse_startup(&packet) {
            Ok(Startup::Ssl | Startup::GssEnc) => {
                // No TLS or GSS encryption here: the client goes on in the
                // clear or gives up, as it chooses.
                client.out.put_u8(b'N');
                client.flush().await?;
            }
            Ok(Startup::Cancel { pid, key }) => {
                if let Some((addr, backend_key)) = shared.cancel_target(pid, key) {
                    Backend::cancel(addr, backend_key).await;
                }
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

    let (pid, key) = shared.register(Arc::new(Mutex::new(None)));
    let cancel = Arc::new(Mutex::new(None));
    shared.unregister(pid);
    let (pid, key) = {
        let _ = key;
        let registered = shared.register(cancel.clone());
        (registered.0, registered.1)
    };
    let _ = pid;
    let mut session = Session {
        shared: shared.clone(),
        pid,
        cancel,
        params,
        password,
        backends: (0..shared.nodes.len()).map(|_| None).collect(),
        leader_slot: shared.leader_slot(shared.nodes.len() - 1),
        status: b'I',
        named: None,
        token: None,
        written: None,
        last_write_ms: None,
        options: ReadOptions::default(),
        served_by: Arc::from("none"),
        statements: HashMap::new(),
        next_version: 1,
        settings: Vec::new(),
        pending_settings: Vec::new(),
        pinned: false,
        unsettled: None,
        classes: ClassCache::new(),
        phase: Phase::Idle,
        batch: Vec::new(),
        scratch: BytesMut::with_capacity(4096),
        view: shared.router.watch_cluster(),
    };
    for (name, value) in ryw_options {
        if let Err((code, message)) = session.set_ryw(&name, Some(&value)) {
            shared.unregister(session.pid);
            client.fatal(code, &message).await;
            return Err(Closing::Quiet);
        }
    }

    // The first node: the leader (the client's startup is checked there:
    // database, role), or, when it is down, a follower for reads.
    let mut opened = None;
    let mut last = None;
    for node in std::iter::once(Node::Leader).chain((0..shared.nodes.len() - 1).map(Node::Follower))
    {
        match session.open(node).await {
            Ok(()) => {
                opened = Some(node);
                break;
            }
            Err(BackendError::Refused { fields, .. }) => {
                shared.unregister(session.pid);
                protocol::error(&mut client.out, "FATAL", &fields.code, &fields.message);
                let _ = client.flush().await;
                return Err(Closing::Quiet);
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(node) = opened else {
        shared.unregister(session.pid);
        client
            .fatal(
                "08006",
                &format!(
                    "no node is reachable: {}",
                    last.map(|e| e.to_string()).unwrap_or_default()
                ),
            )
            .await;
        return Err(Closing::Quiet);
    };
    let backend = session.backend(node);
    for (name, value) in &backend.params {
        // A follower says so; the client is connected to the cluster.
        let value = match (node, name.as_str()) {
            (Node::Follower(_), "in_hot_standby") => "off",
            (Node::Follower(_), "default_transaction_read_only") => "off",
            _ => value.as_str(),
        };
        protocol::parameter(&mut client.out, name, value);
    }
    protocol::key_data(&mut client.out, session.pid, key);
    protocol::ready(&mut client.out, b'I');
    client.flush().await?;
    Ok(session)
}

/// Trust on loopback without an auth file; SCRAM-SHA-256 against it with
/// one. Returns the password to give the nodes.
pub(super) async fn authenticate(
    shared: &Arc<Shared>,
    client: &mut ClientConn,
    peer: SocketAddr,
    user: &str,
) -> Result<Option<String>, Closing> {
    let Some(auth) = &shared.auth else {
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
            &format!("password authentication failed for user \"{user}\""),
        );
    };
    let Some(entry) = auth.user(user) else {
        // Run the exchange anyway, as PostgreSQL does, so a client cannot
        // tell unknown users from wrong passwords by the protocol.
        failed(client);
        let _ = client.flush().await;
        return Err(Closing::Quiet);
    };
    let mut mechanisms = BytesMut::new();
    mechanisms.put_slice(b"SCRAM-SHA-256\0\0");
    protocol::authentication(&mut client.out, 10, &mechanisms);
    client.flush().await?;
    let mut scram = crate::auth::ScramServer::new(entry);
    let first = read_auth_message(client).await?;
    let (mechanism, data) = protocol::parse_sasl_initial(&first)?;
    if mechanism != "SCRAM-SHA-256" {
        client
            .fatal(
                "28000",
                &format!("unsupported SASL mechanism {mechanism:?}"),
            )
            .await;
        return Err(Closing::Quiet);
    }
    let server_first = match scram.client_first(data) {
        Ok(m) => m,
        Err(e) => {
            client.fatal(e.sqlstate(), &e.to_string()).await;
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
            Ok(entry.backend_password().map(str::to_owned))
        }
        Err(e) if e.sqlstate() == "28P01" => {
            failed(client);
            let _ = client.flush().await;
            Err(Closing::Quiet)
        }
        Err(e) => {
            client.fatal(e.sqlstate(), &e.to_string()).await;
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
