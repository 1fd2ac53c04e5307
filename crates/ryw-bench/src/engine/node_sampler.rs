//! The followers' lag while a run without an HTTP target goes on (SQL
//! fronts only): sampled from the nodes themselves, found in the run's
//! `cluster.json`, since a proxy has no `GET /api/cluster`.
//!
//! Each sample reads the leader's `pg_current_wal_lsn()`, then on each
//! follower how many bytes its replay is behind that and, when it is
//! behind, how long ago its last replayed commit was made
//! (`now() - pg_last_xact_replay_timestamp()`, its lag under a steady
//! write load). A follower that has replayed the leader's position is 0 ms
//! behind whatever that timestamp says (on an idle cluster it grows
//! forever); one that is behind but has replayed nothing since the first
//! sample has no lag figure yet (its last commit may be from long before
//! the run). Whether a front had it in rotation is not known here.

use super::{RunState, stopped};
use crate::history::LagSample;
use ryw_cluster::ClusterInfo;
use std::sync::Arc;
use tokio::sync::watch;

const FOLLOWER_SQL: &str = "SELECT pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::float8, \
     (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8, \
     pg_last_wal_replay_lsn()::text";

/// Samples every follower of `info` until stopped; nodes that cannot be
/// reached are skipped (and retried at the next sample).
pub(super) async fn sample_nodes(
    sh: Arc<RunState>,
    info: ClusterInfo,
    stop: watch::Receiver<bool>,
) -> Vec<LagSample> {
    let mut samples = Vec::new();
    let leader = info.leader().clone();
    let followers: Vec<_> = info.followers().cloned().collect();
    let mut clients: Vec<Option<tokio_postgres::Client>> =
        (0..=followers.len()).map(|_| None).collect();
    // Each follower's replay position at its first sample.
    let mut at_start: Vec<Option<String>> = vec![None; followers.len()];
    let mut tick = tokio::time::interval(sh.config.cluster_sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sampling = async {
        loop {
            tick.tick().await;
            let t_us = sh.now_us();
            let Some(lsn) = ask(&mut clients[0], &leader.url, &leader.name, async |c| {
                let r = c
                    .query_one("SELECT pg_current_wal_lsn()::text", &[])
                    .await?;
                Ok(r.get::<_, String>(0))
            })
            .await
            else {
                continue;
            };
            for (i, f) in followers.iter().enumerate() {
                let lsn = lsn.clone();
                let got = ask(&mut clients[i + 1], &f.url, &f.name, async move |c| {
                    let r = c.query_one(FOLLOWER_SQL, &[&lsn]).await?;
                    Ok((
                        r.get::<_, Option<f64>>(0),
                        r.get::<_, Option<f64>>(1),
                        r.get::<_, Option<String>>(2),
                    ))
                })
                .await;
                let Some((Some(bytes), since_commit, replay)) = got else {
                    continue;
                };
                let start = at_start[i].get_or_insert_with(|| replay.clone().unwrap_or_default());
                let replayed_since = replay.as_ref() != Some(start);
                let since_commit = since_commit.filter(|_| replayed_since);
                let behind = bytes > 0.0;
                samples.push(LagSample {
                    t_us,
                    node: f.name.clone(),
                    lag_ms: match behind {
                        false => Some(0.0),
                        true => since_commit.map(|ms| ms.max(0.0)),
                    },
                    lag_bytes: Some(bytes.max(0.0) as u64),
                    in_rotation: None,
                });
            }
        }
    };
    tokio::select! {
        _ = sampling => {}
        _ = stopped(stop) => {}
    }
    samples
}

/// Runs `q` on the node's client, connecting first when there is none; a
/// failed query drops the client (reconnect next time).
async fn ask<T>(
    slot: &mut Option<tokio_postgres::Client>,
    url: &str,
    name: &str,
    q: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Option<T> {
    if slot.is_none() {
        *slot = ryw_cluster::ops::connect(url, name).await.ok();
    }
    let c = slot.as_ref()?;
    match q(c).await {
        Ok(v) => Some(v),
        Err(_) => {
            *slot = None;
            None
        }
    }
}
