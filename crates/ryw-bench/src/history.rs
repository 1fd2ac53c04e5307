//! The history: every operation the bench made, as the checker sees it, and
//! the replication-lag samples taken meanwhile. Saved and read back as JSON
//! lines so `ryw bench check FILE` can judge a history recorded elsewhere.
//!
//! # Line format (one JSON object per line)
//!
//! An **operation** line:
//!
//! ```json
//! {"user":"5b0c…","client":"u3","strategy":"causal","kind":"balance","sent_us":1200345,"recv_us":1201012,"status":200,"version":7,"served_by":"follower1","waited_ms":0}
//! ```
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `user` | string | the account owner (`X-Demo-UserId`); versions are per user |
//! | `client` | string | one browser/device of that user; monotonic reads are judged per client |
//! | `strategy` | string | the strategy the request asked for (`sticky:2s`), or a SQL front's group label (`proxy/causal`, `pgpool/other`); groups the report |
//! | `kind` | string | `account` (`POST /api/account`), `pay` (`POST /api/payments`), `balance` (`GET /api/balance`), `profile` (`POST /api/me/profile`), `me` (`GET /api/me`), `products` (`GET /api/products`) |
//! | `sent_us` | integer | when the request was sent, µs on one clock shared by the whole history (any origin) |
//! | `recv_us` | integer | when the whole response was received, same clock |
//! | `status` | integer | HTTP status; `0` = no response (transport error or timeout); a SQL front's operations use the same codes (see `crate::sql`) |
//! | `version` | integer, optional | the `version` in the response body: the account's for `account`/`pay`/`balance`, the profile's for `profile`/`me` |
//! | `served_by` | string, optional | `leader` or a follower name (reported, never used to judge) |
//! | `waited_ms` | number, optional | time the server waited for a follower (`waited_ms` / `X-Waited-Ms`) |
//! | `problem` | string, optional | for a problem+json answer, the last segment of its `type` (`no-account`) |
//!
//! A write is *acknowledged* when its status is 2xx and it carries a
//! `version`; a read is *checked* under the same condition. A fresh read
//! answered `404` with `problem` `no-account` (`balance`) or `no-profile`
//! (`me`) and no `version` *found nothing*: it saw the object not exist,
//! below every version, and is checked too:
//!
//! ```json
//! {"user":"5b0c…","client":"u3","strategy":"legacy","kind":"me","sent_us":1300100,"recv_us":1300900,"status":404,"served_by":"follower2","waited_ms":0,"problem":"no-profile"}
//! ```
//!
//! Other lines count as errors (so does such a 404 without `problem`, as
//! written by older versions of the bench). Unknown fields are ignored.
//!
//! A **lag sample** line (a follower's lag seen in `GET /api/cluster`):
//!
//! ```json
//! {"kind":"lag","t_us":1250000,"node":"follower2","lag_ms":401,"lag_bytes":0,"in_rotation":true}
//! ```
//!
//! `lag_ms`, `lag_bytes` and `in_rotation` may be null or absent.

use crate::BenchError;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// What an operation did (the endpoint it called).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /api/account` (a write: version 0 of the account).
    Account,
    /// `POST /api/payments` (a write: bumps the account version).
    Pay,
    /// `GET /api/balance` (a fresh read of the account).
    Balance,
    /// `POST /api/me/profile` (a write: bumps the profile version).
    Profile,
    /// `GET /api/me` (a fresh read of the profile).
    Me,
    /// `GET /api/products` (a stale-ok read; not judged).
    Products,
}

/// The versioned thing an operation writes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    /// The account (balance, payments): `version` rises by one per payment.
    Account,
    /// The profile: `version` rises by one per update.
    Profile,
}

impl OpKind {
    /// The object this kind writes or reads, if it is versioned.
    pub fn object(self) -> Option<Object> {
        match self {
            OpKind::Account | OpKind::Pay | OpKind::Balance => Some(Object::Account),
            OpKind::Profile | OpKind::Me => Some(Object::Profile),
            OpKind::Products => None,
        }
    }

    /// Writes (go to the leader; their acknowledged versions must be seen).
    pub fn is_write(self) -> bool {
        matches!(self, OpKind::Account | OpKind::Pay | OpKind::Profile)
    }

    /// Fresh reads (must reflect the caller's own writes).
    pub fn is_fresh_read(self) -> bool {
        matches!(self, OpKind::Balance | OpKind::Me)
    }

    /// The problem a fresh read answers when its object does not exist
    /// (on the node that served it): `no-account`, `no-profile`.
    pub fn not_found_problem(self) -> Option<&'static str> {
        match self {
            OpKind::Balance => Some("no-account"),
            OpKind::Me => Some("no-profile"),
            _ => None,
        }
    }

    /// The name used in history lines.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Account => "account",
            OpKind::Pay => "pay",
            OpKind::Balance => "balance",
            OpKind::Profile => "profile",
            OpKind::Me => "me",
            OpKind::Products => "products",
        }
    }
}

/// One request and its outcome: one line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The account owner (`X-Demo-UserId`).
    pub user: String,
    /// The browser/device that sent it (monotonic reads are per client).
    pub client: String,
    /// The strategy asked for (`X-Read-Strategy` value).
    pub strategy: String,
    /// Which endpoint.
    pub kind: OpKind,
    /// Send time, µs since the start of the run (any shared origin offline).
    pub sent_us: u64,
    /// Time the full response was received, same clock.
    pub recv_us: u64,
    /// HTTP status; 0 when no response came (error or timeout).
    pub status: u16,
    /// The `version` in the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `X-Served-By` (or the body's `served_by`): for the report only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// How long the server waited for a follower, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<f64>,
    /// For a problem+json answer, the slug of its `type` (`no-account`):
    /// tells "this object does not exist" from any other 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What a checked fresh read saw of its object. `Nothing` (a 404: the
/// object did not exist on the node that answered) orders below every
/// version, so "older than the write" covers both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seen {
    /// The object was not found (`no-account`, `no-profile`).
    Nothing,
    /// The object at this version.
    Version(u64),
}

impl Op {
    /// 2xx with a version: an acknowledged write or a checkable read.
    pub fn ok_with_version(&self) -> bool {
        (200..300).contains(&self.status) && self.version.is_some()
    }

    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A fresh read answered 404 with its kind's not-found problem
    /// (`no-account` for `balance`, `no-profile` for `me`) and no version:
    /// it found nothing, which is an observation, not an error.
    pub fn found_nothing(&self) -> bool {
        self.status == 404
            && self.version.is_none()
            && self.problem.is_some()
            && self.problem.as_deref() == self.kind.not_found_problem()
    }

    /// What a fresh read saw, if it is checked: a version (2xx) or nothing
    /// (see [`Op::found_nothing`]). `None` for writes, stale-ok reads and
    /// failed reads.
    pub fn seen(&self) -> Option<Seen> {
        if !self.kind.is_fresh_read() {
            None
        } else if self.ok_with_version() {
            self.version.map(Seen::Version)
        } else if self.found_nothing() {
            Some(Seen::Nothing)
        } else {
            None
        }
    }

    /// Failed: neither 2xx nor a read that found nothing.
    pub fn is_error(&self) -> bool {
        !self.ok() && !self.found_nothing()
    }

    /// Response time in µs.
    pub fn latency_us(&self) -> u64 {
        self.recv_us.saturating_sub(self.sent_us)
    }
}

/// A follower's replication lag at one moment, from `GET /api/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagSample {
    /// When it was taken, µs on the history's clock.
    pub t_us: u64,
    /// The follower's name (`follower1`).
    pub node: String,
    /// Its lag in milliseconds, as the service reported it.
    #[serde(default)]
    pub lag_ms: Option<f64>,
    /// Its lag in WAL bytes.
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Whether it was serving reads.
    #[serde(default)]
    pub in_rotation: Option<bool>,
}

/// A whole run as recorded: operations (in completion order) and lag samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunHistory {
    /// Every request and its outcome.
    pub ops: Vec<Op>,
    /// Followers' lag, sampled meanwhile.
    pub lag: Vec<LagSample>,
}

#[derive(Serialize)]
struct LagLine<'a> {
    kind: &'static str,
    #[serde(flatten)]
    sample: &'a LagSample,
}

impl RunHistory {
    /// Reads a JSON-lines history file (see the module docs for the format).
    pub fn read(path: &Path) -> Result<RunHistory, BenchError> {
        let file = std::fs::File::open(path).map_err(BenchError::io("reading", path))?;
        RunHistory::parse(std::io::BufReader::new(file), path)
    }

    /// Parses JSON lines from any reader; `path` only names it in errors.
    /// Blank lines are skipped.
    pub fn parse(reader: impl BufRead, path: &Path) -> Result<RunHistory, BenchError> {
        let mut h = RunHistory::default();
        for (i, line) in reader.lines().enumerate() {
            let bad = |detail: String| BenchError::HistoryLine {
                path: path.to_path_buf(),
                line: i + 1,
                detail,
            };
            let line = line.map_err(|e| bad(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if value.get("kind").and_then(|k| k.as_str()) == Some("lag") {
                h.lag
                    .push(serde_json::from_value(value).map_err(|e| bad(e.to_string()))?);
            } else {
                let op: Op = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
                if op.recv_us < op.sent_us {
                    return Err(bad(format!(
                        "recv_us {} is before sent_us {}",
                        op.recv_us, op.sent_us
                    )));
                }
                h.ops.push(op);
            }
        }
        Ok(h)
    }

    /// Writes the history as JSON lines (operations, then lag samples).
    pub fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        let mut w = BufWriter::new(w);
        for op in &self.ops {
            serde_json::to_writer(&mut w, op)?;
            w.write_all(b"\n")?;
        }
        for sample in &self.lag {
            serde_json::to_writer(
                &mut w,
                &LagLine {
                    kind: "lag",
                    sample,
                },
            )?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Writes the history to a file.
    pub fn save(&self, path: &Path) -> Result<(), BenchError> {
        let file = std::fs::File::create(path).map_err(BenchError::io("creating", path))?;
        self.write_to(file).map_err(BenchError::io("writing", path))
    }

    /// Time from the first send to the last receive, in seconds.
    pub fn span_s(&self) -> f64 {
        let first = self.ops.iter().map(|o| o.sent_us).min();
        let last = self.ops.iter().map(|o| o.recv_us).max();
        match (first, last) {
            (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / 1e6,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, version: Option<u64>) -> Op {
        Op {
            user: "u".into(),
            client: "c".into(),
            strategy: "causal".into(),
            kind,
            sent_us: 10,
            recv_us: 20,
            status: 200,
            version,
            served_by: Some("leader".into()),
            waited_ms: None,
            problem: None,
        }
    }

    #[test]
    fn a_history_survives_writing_and_reading_back() {
        let h = RunHistory {
            ops: vec![op(OpKind::Pay, Some(1)), op(OpKind::Products, None)],
            lag: vec![LagSample {
                t_us: 5,
                node: "follower1".into(),
                lag_ms: Some(101.5),
                lag_bytes: None,
                in_rotation: Some(true),
            }],
        };
        let mut buf = Vec::new();
        h.write_to(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .starts_with(r#"{"kind":"lag","#),
            "{text}"
        );
        assert_eq!(
            RunHistory::parse(&buf[..], Path::new("h.jsonl")).unwrap(),
            h
        );
    }

    #[test]
    fn a_404_with_its_not_found_problem_is_a_read_that_found_nothing() {
        let line = r#"{"user":"u","client":"c","strategy":"legacy","kind":"me","sent_us":1,"recv_us":2,"status":404,"served_by":"follower2","problem":"no-profile"}"#;
        let h = RunHistory::parse(line.as_bytes(), Path::new("h")).unwrap();
        let me = &h.ops[0];
        assert_eq!((me.seen(), me.is_error()), (Some(Seen::Nothing), false));
        let mut buf = Vec::new();
        h.write_to(&mut buf).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap().trim_end(), line);

        let with = |kind, status, problem: Option<&str>| Op {
            status,
            version: None,
            problem: problem.map(String::from),
            ..op(kind, None)
        };
        // Only the kind's own problem, on a 404 of a fresh read, counts.
        assert_eq!(
            with(OpKind::Balance, 404, Some("no-account")).seen(),
            Some(Seen::Nothing)
        );
        for not in [
            with(OpKind::Balance, 404, Some("no-profile")),
            with(OpKind::Balance, 404, Some("not-available")),
            with(OpKind::Balance, 404, None),
            with(OpKind::Balance, 503, Some("no-account")),
            with(OpKind::Pay, 404, Some("no-account")),
        ] {
            assert_eq!(not.seen(), None, "{not:?}");
            assert!(not.is_error(), "{not:?}");
        }
        assert_eq!(op(OpKind::Balance, Some(3)).seen(), Some(Seen::Version(3)));
        assert!(Seen::Nothing < Seen::Version(0));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let text = "{\"user\":\"u\",\"client\":\"c\",\"strategy\":\"s\",\"kind\":\"me\",\"sent_us\":1,\"recv_us\":2,\"status\":200}\n\n{\"kind\":\"teleport\"}\n";
        let err = RunHistory::parse(text.as_bytes(), Path::new("h.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("h.jsonl:3:"), "{err}");
        let backwards = "{\"user\":\"u\",\"client\":\"c\",\"strategy\":\"s\",\"kind\":\"me\",\"sent_us\":5,\"recv_us\":2,\"status\":200}";
        assert!(
            RunHistory::parse(backwards.as_bytes(), Path::new("h"))
                .unwrap_err()
                .to_string()
                .contains("before sent_us")
        );
    }
}
