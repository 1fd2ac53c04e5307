//! A raw PostgreSQL protocol client for tests: it sends exactly the
//! messages a test builds (extended batches without `Sync`, a `Query` after
//! a `Flush`, duplicate startup keys, …) and returns every message the
//! server sends, so a test can say what a driver would see.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One message from the server.
#[derive(Clone, Debug)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// An `ErrorResponse`'s or `NoticeResponse`'s field `kind` (`b'C'` the
    /// SQLSTATE, `b'M'` the message).
    pub fn field(&self, kind: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&k, tail)) = rest.split_first() {
            if k == 0 {
                return None;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if k == kind {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    /// A `DataRow`'s columns as text (`None` for NULL).
    pub fn columns(&self) -> Vec<Option<String>> {
        let b = &self.body;
        let n = i16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(String::from_utf8_lossy(&b[at..at + len]).into_owned()));
                at += len;
            }
        }
        out
    }
}

/// What came back for one batch, up to its `ReadyForQuery`.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub msgs: Vec<Msg>,
}

impl Reply {
    /// The SQLSTATEs of its errors.
    pub fn errors(&self) -> Vec<String> {
        self.msgs
            .iter()
            .filter(|m| m.tag == b'E')
            .filter_map(|m| m.field(b'C'))
            .collect()
    }

    /// Its rows' columns.
    pub fn rows(&self) -> Vec<Vec<Option<String>>> {
        self.msgs
            .iter()
            .filter(|m| m.tag == b'D')
            .map(Msg::columns)
            .collect()
    }

    /// The first column of the first row.
    pub fn value(&self) -> Option<String> {
        self.rows()
            .first()
            .and_then(|r| r.first().cloned().flatten())
    }

    /// The transaction status of its `ReadyForQuery`.
    pub fn status(&self) -> Option<u8> {
        self.msgs
            .iter()
            .rev()
            .find(|m| m.tag == b'Z')
            .map(|m| m.body[0])
    }

    /// The tags, for messages about the exchange.
    pub fn tags(&self) -> String {
        self.msgs.iter().map(|m| m.tag as char).collect()
    }
}

/// A connection speaking the protocol by hand.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    /// The `ParameterStatus` values of the login.
    pub params: Vec<(String, String)>,
}

impl Raw {
    /// Connects and sends a startup packet of exactly these parameters
    /// (duplicates allowed), without reading the answer.
    pub async fn start(addr: SocketAddr, params: &[(&str, &str)]) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            params: Vec::new(),
        };
        let mut body = BytesMut::new();
        body.put_i32(196_608);
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
        raw.send(&out).await;
        raw
    }

    /// Connects and logs in (trust), as `user` to the test database.
    pub async fn connect(addr: SocketAddr, user: &str, options: &str) -> Raw {
        let mut params = vec![("user", user), ("database", ryw_cluster::DATABASE)];
        if !options.is_empty() {
            params.push(("options", options));
        }
        let mut raw = Raw::start(addr, &params).await;
        let login = raw.reply().await;
        assert!(
            login.errors().is_empty(),
            "login failed: {:?}",
            login
                .msgs
                .iter()
                .filter_map(|m| m.field(b'M'))
                .collect::<Vec<_>>()
        );
        raw.params = login
            .msgs
            .iter()
            .filter(|m| m.tag == b'S')
            .map(|m| {
                let mut parts = m.body.split(|&b| b == 0);
                let k = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
                let v = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                (k, v)
            })
            .collect();
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next message, waiting at most `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Msg> {
        tokio::time::timeout(limit, self.next())
            .await
            .ok()
            .flatten()
    }

    /// The next message; `None` when the server closed the connection.
    pub async fn next(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let m = self.buf.split_to(len + 1);
                    return Some(Msg {
                        tag: m[0],
                        body: m[5..].to_vec(),
                    });
                }
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Everything up to and including the next `ReadyForQuery` (or until
    /// the connection closed), within 30 s.
    pub async fn reply(&mut self) -> Reply {
        let mut r = Reply::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.next())
                .await
                .unwrap_or_else(|_| panic!("no ReadyForQuery within 30 s: {}", r.tags()));
            let Some(m) = m else { return r };
            let done = m.tag == b'Z';
            r.msgs.push(m);
            if done {
                return r;
            }
        }
    }

    /// A simple query and its reply.
    pub async fn query(&mut self, sql: &str) -> Reply {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await;
        self.reply().await
    }

    /// One statement through the extended protocol (unnamed statement and
    /// portal, text parameters), and its reply.
    pub async fn extended(&mut self, sql: &str, params: &[Option<&str>]) -> Reply {
        let mut out = BytesMut::new();
        put_parse(&mut out, "", sql);
        put_bind(&mut out, "", "", params);
        put_describe(&mut out, b'P', "");
        put_execute(&mut out, "");
        frontend::sync(&mut out);
        self.send(&out).await;
        self.reply().await
    }
}

/// `Parse` with no parameter types.
pub fn put_parse(out: &mut BytesMut, name: &str, sql: &str) {
    frontend::parse(name, sql, std::iter::empty(), out).unwrap();
}

/// `Bind` with text parameters and text results.
pub fn put_bind(out: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&str>]) {
    frontend::bind(
        portal,
        statement,
        std::iter::empty::<i16>(),
        params.iter().copied(),
        |v: Option<&str>, buf: &mut BytesMut| match v {
            Some(v) => {
                buf.put_slice(v.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            }
            None => Ok(postgres_protocol::IsNull::Yes),
        },
        std::iter::empty::<i16>(),
        out,
    )
    .map_err(|_| ())
    .unwrap();
}

pub fn put_describe(out: &mut BytesMut, kind: u8, name: &str) {
    frontend::describe(kind, name, out).unwrap();
}

pub fn put_execute(out: &mut BytesMut, portal: &str) {
    frontend::execute(portal, 0, out).unwrap();
}

pub fn put_flush(out: &mut BytesMut) {
    frontend::flush(out);
}

pub fn put_sync(out: &mut BytesMut) {
    frontend::sync(out);
}
