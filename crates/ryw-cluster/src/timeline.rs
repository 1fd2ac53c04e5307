//! Timelines: which one a node is on, and the history file a promotion
//! writes (`pg_wal/0000000N.history`), whose lines say where each earlier
//! timeline ended. A position on timeline `t` past `t`'s end in the current
//! history names WAL that the current history does not have: a write the
//! old leader acknowledged and no follower received.

use crate::ClusterError;
use serde::Serialize;
use tokio_postgres::types::PgLsn;

/// One line of a timeline history file: `timeline` ended at `end`, where
/// the next timeline of this history begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineSwitch {
    /// The timeline that ended (the parent of the next one).
    pub timeline: u32,
    /// The first position that belongs to the next timeline: WAL of
    /// `timeline` before it is shared, at or after it is not.
    #[serde(serialize_with = "ser_lsn")]
    pub end: PgLsn,
    /// PostgreSQL's note (`no recovery target specified` for a promotion).
    pub reason: String,
}

/// Parses a history file (`parentTLI<TAB>X/Y<TAB>reason` lines; `#`
/// comments and blank lines skipped). Oldest first.
pub fn parse_history(text: &str) -> Result<Vec<TimelineSwitch>, ClusterError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, char::is_whitespace);
        let bad = || ClusterError::BadArgument(format!("timeline history line {line:?}"));
        let timeline = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(bad)?;
        let end = parts
            .next()
            .and_then(|l| l.trim().parse::<PgLsn>().ok())
            .ok_or_else(bad)?;
        let reason = parts.next().unwrap_or("").trim().to_string();
        out.push(TimelineSwitch {
            timeline,
            end,
            reason,
        });
    }
    Ok(out)
}

/// The history of `timeline` as the node behind `client` has it (every
/// ancestor and where it ended); empty for timeline 1. Reads the file with
/// `pg_read_file`, so it needs a superuser (or `pg_read_server_files`).
pub async fn history(
    client: &tokio_postgres::Client,
    timeline: u32,
) -> Result<Vec<TimelineSwitch>, tokio_postgres::Error> {
    if timeline <= 1 {
        return Ok(Vec::new());
    }
    let text: String = client
        .query_one(
            "SELECT pg_read_file('pg_wal/' || $1 || '.history')",
            &[&format!("{timeline:08X}")],
        )
        .await?
        .get(0);
    Ok(parse_history(&text).unwrap_or_default())
}

/// The timeline a node writes (a leader) or receives (a follower):
/// the leader's from the name of its current WAL file, a follower's from
/// its WAL receiver, else from its last restartpoint.
pub async fn current(client: &tokio_postgres::Client) -> Result<u32, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() \
               THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                             (SELECT timeline_id FROM pg_control_checkpoint())) \
               ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
            &[],
        )
        .await?;
    Ok(row.get::<_, i32>(0) as u32)
}

/// Where `timeline` began in `history`: the end of its parent.
pub fn switch_point(history: &[TimelineSwitch], timeline: u32) -> Option<PgLsn> {
    history
        .iter()
        .rev()
        .find(|s| s.timeline < timeline)
        .map(|s| s.end)
}

pub(crate) fn ser_lsn<S: serde::Serializer>(l: &PgLsn, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(l)
}

pub(crate) fn ser_opt_lsn<S: serde::Serializer>(
    l: &Option<PgLsn>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match l {
        Some(l) => s.collect_str(l),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_file_parses_oldest_first() {
        let text = "1\t0/4027AF0\tno recovery target specified\n\n\
                    # a comment\n\
                    2\t0/5000148\tno recovery target specified\n";
        let h = parse_history(text).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].timeline, 1);
        assert_eq!(u64::from(h[0].end), 0x4027AF0);
        assert_eq!(h[1].end.to_string(), "0/5000148");
        assert_eq!(h[1].reason, "no recovery target specified");
        assert_eq!(switch_point(&h, 3), Some(h[1].end));
        assert_eq!(switch_point(&h, 2), Some(h[0].end));
        assert_eq!(switch_point(&h, 1), None);
    }

    #[test]
    fn a_malformed_history_line_is_an_error() {
        assert!(parse_history("one\t0/1\tx").is_err());
        assert!(parse_history("1\tnot-an-lsn\tx").is_err());
    }
}
