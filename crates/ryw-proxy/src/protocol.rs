//! The PostgreSQL v3 wire protocol, as far as routing needs it: framing
//! (type byte, length, body) with a size cap, decoders for the few messages
//! the proxy reads, and encoders for the few it answers itself. Everything
//! else is relayed as the bytes it arrived as.
//!
//! `postgres-protocol` (the codec tokio-postgres uses) encodes the messages
//! the proxy sends to backends as a client (startup, SASL, queries); it has
//! no parser for what a client sends, nor encoders for what a server sends,
//! which live here.

use bytes::{BufMut, Bytes, BytesMut};

/// The largest message accepted from a client: 64 MiB (PostgreSQL's own
/// limit is 1 GiB; a bigger statement or row is more likely an attack).
pub const MAX_MESSAGE: usize = 64 << 20;
/// The largest startup packet (PostgreSQL's own cap).
pub const MAX_STARTUP: usize = 10_000;

/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// Protocol 3.2 (PostgreSQL 18 clients may ask for it).
pub const PROTOCOL_3_2: i32 = 196_610;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

/// Message type bytes, by name.
pub mod tag {
    /// What a client sends.
    pub mod frontend {
        /// `Q`: a simple query.
        pub const QUERY: u8 = b'Q';
        /// `P`: Parse.
        pub const PARSE: u8 = b'P';
        /// `B`: Bind.
        pub const BIND: u8 = b'B';
        /// `D`: Describe.
        pub const DESCRIBE: u8 = b'D';
        /// `E`: Execute.
        pub const EXECUTE: u8 = b'E';
        /// `C`: Close.
        pub const CLOSE: u8 = b'C';
        /// `S`: Sync.
        pub const SYNC: u8 = b'S';
        /// `H`: Flush.
        pub const FLUSH: u8 = b'H';
        /// `X`: Terminate.
        pub const TERMINATE: u8 = b'X';
        /// `d`: CopyData.
        pub const COPY_DATA: u8 = b'd';
        /// `c`: CopyDone.
        pub const COPY_DONE: u8 = b'c';
        /// `f`: CopyFail.
        pub const COPY_FAIL: u8 = b'f';
        /// `F`: FunctionCall.
        pub const FUNCTION_CALL: u8 = b'F';
        /// `p`: a password or SASL message.
        pub const PASSWORD: u8 = b'p';
    }

    /// What a server sends.
    pub mod backend {
        /// `R`: an authentication request.
        pub const AUTHENTICATION: u8 = b'R';
        /// `S`: ParameterStatus.
        pub const PARAMETER_STATUS: u8 = b'S';
        /// `K`: BackendKeyData.
        pub const BACKEND_KEY_DATA: u8 = b'K';
        /// `v`: NegotiateProtocolVersion.
        pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
        /// `Z`: ReadyForQuery.
        pub const READY_FOR_QUERY: u8 = b'Z';
        /// `T`: RowDescription.
        pub const ROW_DESCRIPTION: u8 = b'T';
        /// `D`: DataRow.
        pub const DATA_ROW: u8 = b'D';
        /// `C`: CommandComplete.
        pub const COMMAND_COMPLETE: u8 = b'C';
        /// `I`: EmptyQueryResponse.
        pub const EMPTY_QUERY: u8 = b'I';
        /// `E`: ErrorResponse.
        pub const ERROR_RESPONSE: u8 = b'E';
        /// `N`: NoticeResponse.
        pub const NOTICE_RESPONSE: u8 = b'N';
        /// `A`: NotificationResponse.
        pub const NOTIFICATION_RESPONSE: u8 = b'A';
        /// `1`: ParseComplete.
        pub const PARSE_COMPLETE: u8 = b'1';
        /// `2`: BindComplete.
        pub const BIND_COMPLETE: u8 = b'2';
        /// `3`: CloseComplete.
        pub const CLOSE_COMPLETE: u8 = b'3';
        /// `n`: NoData.
        pub const NO_DATA: u8 = b'n';
        /// `s`: PortalSuspended.
        pub const PORTAL_SUSPENDED: u8 = b's';
        /// `t`: ParameterDescription.
        pub const PARAMETER_DESCRIPTION: u8 = b't';
        /// `G`: CopyInResponse.
        pub const COPY_IN_RESPONSE: u8 = b'G';
        /// `H`: CopyOutResponse.
        pub const COPY_OUT_RESPONSE: u8 = b'H';
        /// `W`: CopyBothResponse.
        pub const COPY_BOTH_RESPONSE: u8 = b'W';
        /// `d`: CopyData.
        pub const COPY_DATA: u8 = b'd';
        /// `c`: CopyDone.
        pub const COPY_DONE: u8 = b'c';
        /// `V`: FunctionCallResponse.
        pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    }
}

/// The type byte and whole length (header included) of the message at the
/// start of `buf`, once its header has arrived (whether or not the rest
/// has): for relaying big messages in pieces.
pub fn peek_header(buf: &[u8]) -> Option<(u8, Result<usize, ProtocolError>)> {
    if buf.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let total = if len < 4 {
        Err(ProtocolError::BadLength(len.into()))
    } else {
        Ok(len as usize + 1)
    };
    Some((buf[0], total))
}

/// Input that breaks the protocol: answered with SQLSTATE 08P01 and a
/// closed connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A length field below its minimum.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A message above [`MAX_MESSAGE`] (or a startup packet above
    /// [`MAX_STARTUP`]).
    #[error("message of {0} bytes is larger than allowed")]
    TooLarge(usize),
    /// A message type that has no meaning here.
    #[error("unexpected message type {0:?}")]
    UnknownType(char),
    /// A message whose body does not hold what its type says.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// A startup packet with an unknown code.
    #[error("unsupported frontend protocol {0}.{1}")]
    Unsupported(u16, u16),
}

/// One whole message: type byte, length, body, as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The type byte.
    pub tag: u8,
    /// The whole message, header included.
    pub raw: Bytes,
}

impl Frame {
    /// The body after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// The length of the complete message at the start of `buf` (header
/// included) once it has arrived, or `None` while it has not. `cap`
/// bounds the size before anything is reserved.
pub fn frame_len(buf: &[u8], cap: usize) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::BadLength(len.into()));
    }
    let total = len as usize + 1;
    if total > cap {
        return Err(ProtocolError::TooLarge(total));
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Splits the next whole message off `buf` (no copy), or reserves room for
/// it and returns `None` while it is incomplete.
pub fn next_frame(buf: &mut BytesMut, cap: usize) -> Result<Option<Frame>, ProtocolError> {
    match frame_len(buf, cap)? {
        Some(n) => {
            let raw = buf.split_to(n).freeze();
            Ok(Some(Frame { tag: raw[0], raw }))
        }
        None => {
            if buf.len() >= 5 {
                let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1;
                buf.reserve(len - buf.len());
            }
            Ok(None)
        }
    }
}

/// A bounds-checked reader of a message body.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `body`, naming `what` in its errors.
    pub fn new(body: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { rest: body, what }
    }

    fn bad(&self) -> ProtocolError {
        ProtocolError::Malformed(self.what)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.rest.split_first().ok_or_else(|| self.bad())?;
        self.rest = rest;
        Ok(b)
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(self.bad());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    /// A NUL-terminated string (UTF-8).
    pub fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.bad())?;
        let s = std::str::from_utf8(&self.rest[..end]).map_err(|_| self.bad())?;
        self.rest = &self.rest[end + 1..];
        Ok(s)
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Fails unless everything was read.
    pub fn finish(self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.bad())
        }
    }
}

/// What a client's first packet asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// `SSLRequest`: answered `S` and a TLS handshake, or `N` with TLS off;
    /// then the real startup (or a cancel request) follows.
    Ssl,
    /// `GSSENCRequest`: answered `N`, then the real startup follows.
    GssEnc,
    /// `CancelRequest` for the session with this process id and key.
    Cancel {
        /// The process id the proxy gave the session.
        pid: i32,
        /// Its secret key.
        key: i32,
    },
    /// `StartupMessage`: the protocol version and the parameters.
    Params {
        /// The protocol version code (3.0 or 3.2).
        version: i32,
        /// Name-value pairs (`user`, `database`, `options`, …).
        params: Vec<(String, String)>,
    },
}

/// The length of the startup packet at the start of `buf` once whole.
pub fn startup_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        return Err(if len > 0 {
            ProtocolError::TooLarge(len as usize)
        } else {
            ProtocolError::BadLength(len.into())
        });
    }
    Ok((buf.len() >= len as usize).then_some(len as usize))
}

/// Decodes a whole startup packet (its length included).
pub fn parse_startup(packet: &[u8]) -> Result<Startup, ProtocolError> {
    let mut r = Reader::new(&packet[4..], "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST => Ok(Startup::Ssl),
        GSSENC_REQUEST => Ok(Startup::GssEnc),
        CANCEL_REQUEST => {
            let pid = r.i32()?;
            let key = r.i32()?;
            // Protocol 3.2 keys may be longer; ours are 4 bytes.
            Ok(Startup::Cancel { pid, key })
        }
        PROTOCOL_3_0 | PROTOCOL_3_2 => {
            let mut params = Vec::new();
            loop {
                let name = r.cstr()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((name.to_owned(), value.to_owned()));
            }
            r.finish()?;
            Ok(Startup::Params {
                version: code,
                params,
            })
        }
        other => Err(ProtocolError::Unsupported(
            (other >> 16) as u16,
            (other & 0xffff) as u16,
        )),
    }
}

/// A client message the proxy reads, decoded; the frame itself is what is
/// relayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client<'a> {
    /// `Q`: one or more statements in the simple protocol.
    Query(&'a str),
    /// `P`: a statement to prepare (`""` is the unnamed one).
    Parse {
        /// Statement name.
        name: &'a str,
        /// Its text.
        query: &'a str,
    },
    /// `B`: a portal from a prepared statement.
    Bind {
        /// Portal name.
        portal: &'a str,
        /// Statement name.
        statement: &'a str,
    },
    /// `D`: describe a statement (`S`) or a portal (`P`).
    Describe {
        /// `b'S'` or `b'P'`.
        kind: u8,
        /// Its name.
        name: &'a str,
    },
    /// `C`: close a statement (`S`) or a portal (`P`).
    Close {
        /// `b'S'` or `b'P'`.
        kind: u8,
        /// Its name.
        name: &'a str,
    },
    /// `E`: run a portal.
    Execute {
        /// Portal name.
        portal: &'a str,
    },
    /// `S`: end of an extended-protocol batch.
    Sync,
    /// `H`: send what is pending, the batch goes on.
    Flush,
    /// `X`: the client leaves.
    Terminate,
    /// `d`: COPY data.
    CopyData,
    /// `c`: COPY done.
    CopyDone,
    /// `f`: COPY failed.
    CopyFail,
    /// `F`: a fast-path function call.
    FunctionCall,
    /// `p`: a password or SASL message (only during authentication).
    Password,
}

/// Decodes a client frame after the startup.
pub fn parse_client(frame: &Frame) -> Result<Client<'_>, ProtocolError> {
    let body = frame.body();
    let empty = |what: &'static str| {
        if body.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed(what))
        }
    };
    Ok(match frame.tag {
        b'Q' => {
            let mut r = Reader::new(body, "Query");
            let q = r.cstr()?;
            r.finish()?;
            Client::Query(q)
        }
        b'P' => {
            let mut r = Reader::new(body, "Parse");
            let name = r.cstr()?;
            let query = r.cstr()?;
            let n = r.i16()?;
            if n < 0 {
                return Err(ProtocolError::Malformed("Parse"));
            }
            r.bytes(4 * n as usize)?;
            r.finish()?;
            Client::Parse { name, query }
        }
        b'B' => {
            // The parameters and formats are relayed, not read.
            let mut r = Reader::new(body, "Bind");
            let portal = r.cstr()?;
            let statement = r.cstr()?;
            Client::Bind { portal, statement }
        }
        b'D' | b'C' => {
            let what = if frame.tag == b'D' {
                "Describe"
            } else {
                "Close"
            };
            let mut r = Reader::new(body, what);
            let kind = r.u8()?;
            if kind != b'S' && kind != b'P' {
                return Err(ProtocolError::Malformed(what));
            }
            let name = r.cstr()?;
            r.finish()?;
            if frame.tag == b'D' {
                Client::Describe { kind, name }
            } else {
                Client::Close { kind, name }
            }
        }
        b'E' => {
            let mut r = Reader::new(body, "Execute");
            let portal = r.cstr()?;
            r.i32()?;
            r.finish()?;
            Client::Execute { portal }
        }
        b'S' => {
            empty("Sync")?;
            Client::Sync
        }
        b'H' => {
            empty("Flush")?;
            Client::Flush
        }
        b'X' => {
            empty("Terminate")?;
            Client::Terminate
        }
        b'd' => Client::CopyData,
        b'c' => {
            empty("CopyDone")?;
            Client::CopyDone
        }
        b'f' => {
            let mut r = Reader::new(body, "CopyFail");
            r.cstr()?;
            r.finish()?;
            Client::CopyFail
        }
        b'F' => Client::FunctionCall,
        b'p' => Client::Password,
        other => return Err(ProtocolError::UnknownType(other as char)),
    })
}

/// One `Bind` parameter: whether it is in text format, and its bytes
/// (`None` for NULL).
pub type BindValue<'a> = (bool, Option<&'a [u8]>);

/// A `Bind`'s parameter values (binary `text` is the same bytes; other
/// binary values are not read here).
pub fn bind_values(body: &[u8]) -> Result<Vec<BindValue<'_>>, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    r.cstr()?;
    r.cstr()?;
    let nformats = r.i16()?;
    if nformats < 0 {
        return Err(ProtocolError::Malformed("Bind"));
    }
    let mut formats = Vec::with_capacity(nformats as usize);
    for _ in 0..nformats {
        formats.push(r.i16()?);
    }
    let nvalues = r.i16()?;
    if nvalues < 0 || (nformats > 1 && nformats != nvalues) {
        return Err(ProtocolError::Malformed("Bind"));
    }
    let mut out = Vec::with_capacity(nvalues as usize);
    for i in 0..nvalues as usize {
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats[i],
        };
        let len = r.i32()?;
        let value = if len < 0 {
            None
        } else {
            Some(r.bytes(len as usize)?)
        };
        out.push((format == 0, value));
    }
    Ok(out)
}

/// The SASL data of a `SASLInitialResponse` (`p`): mechanism and data.
pub fn parse_sasl_initial(frame: &Frame) -> Result<(&str, &[u8]), ProtocolError> {
    let mut r = Reader::new(frame.body(), "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.bytes(len as usize)?
    };
    r.finish()?;
    Ok((mechanism, data))
}

// ---- what servers send: the few fields routing reads ---------------------

/// The transaction status of a `ReadyForQuery` (`Z`): `I`, `T` or `E`.
pub fn ready_status(frame: &[u8]) -> Option<u8> {
    (frame.len() == 6 && frame[0] == b'Z').then(|| frame[5])
}

/// The fields of an `ErrorResponse` or `NoticeResponse` that matter here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S`/`V`: ERROR, FATAL, …
    pub severity: String,
    /// `C`: the SQLSTATE.
    pub code: String,
    /// `M`: the message.
    pub message: String,
}

/// Decodes an `ErrorResponse`/`NoticeResponse` body.
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    let mut r = Reader::new(body, "ErrorResponse");
    while let Ok(kind) = r.u8() {
        if kind == 0 {
            break;
        }
        let Ok(value) = r.cstr() else { break };
        match kind {
            b'V' => f.severity = value.to_owned(),
            b'S' if f.severity.is_empty() => f.severity = value.to_owned(),
            b'C' => f.code = value.to_owned(),
            b'M' => f.message = value.to_owned(),
            _ => {}
        }
    }
    f
}

/// The tag of a `CommandComplete` (`C`) body: `SELECT 1`, `COMMIT`, …
pub fn command_tag(body: &[u8]) -> &str {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    std::str::from_utf8(&body[..end]).unwrap_or("")
}

/// The first column of a `DataRow` (`D`) body, as text (`None` for NULL).
pub fn first_column(body: &[u8]) -> Option<&str> {
    let mut r = Reader::new(body, "DataRow");
    if r.i16().ok()? < 1 {
        return None;
    }
    let len = r.i32().ok()?;
    if len < 0 {
        return None;
    }
    std::str::from_utf8(r.bytes(len as usize).ok()?).ok()
}

/// A `ParameterStatus` (`S`) body: name and value.
pub fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let mut r = Reader::new(body, "ParameterStatus");
    Some((r.cstr().ok()?, r.cstr().ok()?))
}

/// A `BackendKeyData` (`K`) body: process id and key.
pub fn backend_key(body: &[u8]) -> Option<(i32, i32)> {
    let mut r = Reader::new(body, "BackendKeyData");
    Some((r.i32().ok()?, r.i32().ok()?))
}

/// An authentication request (`R`): its code and data.
pub fn auth_request(body: &[u8]) -> Option<(i32, &[u8])> {
    let mut r = Reader::new(body, "Authentication");
    let code = r.i32().ok()?;
    Some((code, r.rest()))
}

// ---- what the proxy answers itself ---------------------------------------

/// Starts a message of type `tag`; [`end`] fills in its length.
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

fn end(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early: none of ours has one.
    buf.put_slice(s.replace('\0', " ").as_bytes());
    buf.put_u8(0);
}

/// `AuthenticationOk`, or another authentication request (`code`, `data`).
pub fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    buf.put_slice(data);
    end(buf, at);
}

/// `ParameterStatus`.
pub fn parameter(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    cstr(buf, name);
    cstr(buf, value);
    end(buf, at);
}

/// `BackendKeyData`.
pub fn key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(key);
    end(buf, at);
}

/// `ReadyForQuery` with a transaction status.
pub fn ready(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    end(buf, at);
}

/// `ErrorResponse` (`severity` ERROR or FATAL) or, with `notice`, a
/// `NoticeResponse`.
pub fn error(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    fields(buf, b'E', severity, code, message);
}

/// `NoticeResponse` (severity NOTICE or WARNING).
pub fn notice(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    fields(buf, b'N', severity, code, message);
}

fn fields(buf: &mut BytesMut, tag: u8, severity: &str, code: &str, message: &str) {
    let at = begin(buf, tag);
    for (kind, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        buf.put_u8(kind);
        cstr(buf, value);
    }
    buf.put_u8(0);
    end(buf, at);
}

/// `CommandComplete`.
pub fn complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    cstr(buf, tag);
    end(buf, at);
}

/// `RowDescription` of text columns.
pub fn row_description(buf: &mut BytesMut, names: &[&str]) {
    let at = begin(buf, b'T');
    buf.put_i16(names.len() as i16);
    for name in names {
        cstr(buf, name);
        buf.put_i32(0); // table oid
        buf.put_i16(0); // column number
        buf.put_i32(25); // text
        buf.put_i16(-1); // variable size
        buf.put_i32(-1); // no type modifier
        buf.put_i16(0); // text format
    }
    end(buf, at);
}

/// `DataRow` of text values (`None` for NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    let at = begin(buf, b'D');
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                buf.put_i32(v.len() as i32);
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    end(buf, at);
}

/// A message with no body: `ParseComplete` (`1`), `BindComplete` (`2`),
/// `CloseComplete` (`3`), `NoData` (`n`), `EmptyQueryResponse` (`I`).
pub fn bare(buf: &mut BytesMut, tag: u8) {
    let at = begin(buf, tag);
    end(buf, at);
}

/// `ParameterDescription` with these type OIDs.
pub fn parameter_types(buf: &mut BytesMut, types: &[u32]) {
    let at = begin(buf, b't');
    buf.put_i16(types.len() as i16);
    for t in types {
        buf.put_u32(*t);
    }
    end(buf, at);
}

/// `NegotiateProtocolVersion`: the newest minor version the proxy speaks,
/// and the protocol options it does not know.
pub fn negotiate_version(buf: &mut BytesMut, minor: i32, unknown: &[&str]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    buf.put_i32(unknown.len() as i32);
    for name in unknown {
        cstr(buf, name);
    }
    end(buf, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        b
    }

    #[test]
    fn frames_split_whole_and_wait_for_the_rest() {
        let mut buf = frame(b'Q', b"SELECT 1\0");
        buf.extend_from_slice(&frame(b'S', b"")[..3]);
        let f = next_frame(&mut buf, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(parse_client(&f).unwrap(), Client::Query("SELECT 1"));
        assert_eq!(
            next_frame(&mut buf, MAX_MESSAGE).unwrap(),
            None,
            "incomplete"
        );
        buf.extend_from_slice(&frame(b'S', b"")[3..]);
        let f = next_frame(&mut buf, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(parse_client(&f).unwrap(), Client::Sync);
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_are_checked_before_anything_is_reserved() {
        let mut neg = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xf0][..]);
        assert_eq!(
            next_frame(&mut neg, MAX_MESSAGE),
            Err(ProtocolError::BadLength(-16))
        );
        let mut huge = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            next_frame(&mut huge, MAX_MESSAGE),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(huge.capacity() < 1 << 20, "nothing reserved for it");
        let mut three = BytesMut::from(&[b'S', 0, 0, 0, 3][..]);
        assert!(next_frame(&mut three, MAX_MESSAGE).is_err());
    }

    #[test]
    fn client_messages_decode_their_routing_fields() {
        let mut parse = BytesMut::new();
        parse.put_slice(b"s1\0SELECT $1\0");
        parse.put_i16(1);
        parse.put_i32(23);
        let f = Frame {
            tag: b'P',
            raw: frame(b'P', &parse).freeze(),
        };
        assert_eq!(
            parse_client(&f).unwrap(),
            Client::Parse {
                name: "s1",
                query: "SELECT $1"
            }
        );
        let bind = Frame {
            tag: b'B',
            raw: frame(b'B', b"p\0s1\0\0\0\0\0\0\0").freeze(),
        };
        assert_eq!(
            parse_client(&bind).unwrap(),
            Client::Bind {
                portal: "p",
                statement: "s1"
            }
        );
        let bad_kind = Frame {
            tag: b'D',
            raw: frame(b'D', b"Xs1\0").freeze(),
        };
        assert!(parse_client(&bad_kind).is_err());
        let unknown = Frame {
            tag: b'?',
            raw: frame(b'?', b"").freeze(),
        };
        assert_eq!(parse_client(&unknown), Err(ProtocolError::UnknownType('?')));
        let unterminated = Frame {
            tag: b'Q',
            raw: frame(b'Q', b"SELECT 1").freeze(),
        };
        assert!(parse_client(&unterminated).is_err());
        let negative_params = Frame {
            tag: b'P',
            raw: frame(b'P', b"\0SELECT 1\0\xff\xff").freeze(),
        };
        assert!(parse_client(&negative_params).is_err());
    }

    #[test]
    fn startup_packets_decode_and_are_capped() {
        let mut p = BytesMut::new();
        p.put_i32(0);
        p.put_i32(PROTOCOL_3_0);
        p.put_slice(b"user\0alice\0database\0app\0\0");
        let len = p.len() as i32;
        p[..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(startup_len(&p).unwrap(), Some(p.len()));
        assert_eq!(
            parse_startup(&p).unwrap(),
            Startup::Params {
                version: PROTOCOL_3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "app".into())
                ]
            }
        );
        let mut ssl = BytesMut::new();
        ssl.put_i32(8);
        ssl.put_i32(SSL_REQUEST);
        assert_eq!(parse_startup(&ssl).unwrap(), Startup::Ssl);
        let mut cancel = BytesMut::new();
        cancel.put_i32(16);
        cancel.put_i32(CANCEL_REQUEST);
        cancel.put_i32(7);
        cancel.put_i32(-9);
        assert_eq!(
            parse_startup(&cancel).unwrap(),
            Startup::Cancel { pid: 7, key: -9 }
        );
        assert!(startup_len(&[0, 1, 0, 0]).is_err(), "65536 bytes");
        assert!(startup_len(&[0, 0, 0, 4]).is_err(), "too short");
        let mut v2 = BytesMut::new();
        v2.put_i32(8);
        v2.put_i32(131_072);
        assert_eq!(parse_startup(&v2), Err(ProtocolError::Unsupported(2, 0)));
    }

    #[test]
    fn what_the_proxy_writes_reads_back() {
        let mut b = BytesMut::new();
        error(&mut b, "ERROR", "22023", "unknown ryw setting");
        let f = next_frame(&mut b, MAX_MESSAGE).unwrap().unwrap();
        let e = error_fields(f.body());
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("22023", "unknown ryw setting")
        );
        ready(&mut b, b'T');
        let z = next_frame(&mut b, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(ready_status(&z.raw), Some(b'T'));
        data_row(&mut b, &[Some("0/16B3748"), None]);
        let d = next_frame(&mut b, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(first_column(d.body()), Some("0/16B3748"));
        complete(&mut b, "SET");
        let c = next_frame(&mut b, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(command_tag(c.body()), "SET");
        parameter(&mut b, "TimeZone", "UTC");
        let s = next_frame(&mut b, MAX_MESSAGE).unwrap().unwrap();
        assert_eq!(parameter_status(s.body()), Some(("TimeZone", "UTC")));
    }
}
