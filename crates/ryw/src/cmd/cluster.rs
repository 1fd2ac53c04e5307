//! `ryw cluster up | status | lag | failover | rejoin | down`.

use crate::cli::{ClusterCommand, FailoverArgs, RejoinArgs, UpArgs};
use ryw_cluster::failover::{ChosenBecause, StopKind};
use ryw_cluster::{
    ClusterInfo, FailoverOptions, FailoverReport, NodeState, RejoinOptions, RejoinReport,
    ReplicationInfo, UpOptions,
};
use std::path::Path;
use std::time::Duration;

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Up(args) => {
            let info = ryw_cluster::up(&up_options(&args)?).await?;
            print_info(&info);
            if args.sync {
                println!(
                    "synchronous replication: a commit returns once one follower has flushed it"
                );
            }
            Ok(())
        }
        ClusterCommand::Status(args) => {
            let (info, nodes) = ryw_cluster::status(&args.dir.dir).await?;
            let repl = ReplicationInfo::load(&args.dir.dir)?;
            if args.json {
                let v = serde_json::json!({ "dir": info.dir, "sync": repl.sync, "timeline": repl.timeline,
                    "failovers": repl.failovers, "nodes": nodes, "redis": info.redis.as_ref().map(|r| serde_json::json!({
                    "port": r.port, "pid": r.pid, "url": r.url, "alive": ryw_cluster::ops::is_alive(r.pid),
                })), "redis_cluster": info.redis_cluster.as_ref().map(|rc| serde_json::json!({
                    "url": rc.url, "masters": rc.masters, "replicas": rc.replicas,
                    "nodes": rc.nodes.iter().map(|n| serde_json::json!({
                        "port": n.port, "pid": n.pid, "alive": ryw_cluster::ops::is_alive(n.pid),
                        "role": ryw_cluster::redis_cluster::role(n.port),
                    })).collect::<Vec<_>>(),
                })) });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&info, &repl, &nodes);
            }
            Ok(())
        }
        ClusterCommand::Failover(args) => failover(&args).await,
        ClusterCommand::Rejoin(args) => rejoin(&args).await,
        ClusterCommand::Lag(args) => {
            let delay = args.delay.0;
            let node = ryw_cluster::set_lag(&args.dir.dir, &args.replica, delay).await?;
            println!(
                "{}: recovery_min_apply_delay = {}ms",
                node.name,
                delay.as_millis()
            );
            Ok(())
        }
        ClusterCommand::Down(args) => {
            down(&args.dir.dir, args.purge)?;
            Ok(())
        }
    }
}

pub fn up_options(args: &UpArgs) -> anyhow::Result<UpOptions> {
    Ok(UpOptions {
        dir: args.dir.dir.clone(),
        replicas: args.replicas,
        lags: ryw_cluster::parse_lags(&args.lag)?,
        port: args.port,
        redis: args.redis,
        redis_cluster: args
            .redis_cluster
            .map(|masters| ryw_cluster::RedisClusterSpec::new(masters, args.redis_replicas)),
        pg_bin: args.pg_bin.clone(),
        os_user: Some(args.os_user.clone()),
        shared_buffers: args.shared_buffers.clone(),
        sync: args.sync,
    })
}

async fn failover(args: &FailoverArgs) -> anyhow::Result<()> {
    let opts = FailoverOptions {
        to: args.to.clone(),
        kill: args.kill,
        wait_followers: args.wait.0,
    };
    let report = ryw_cluster::failover(&args.dir.dir, &opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_failover(&report);
    }
    Ok(())
}

async fn rejoin(args: &RejoinArgs) -> anyhow::Result<()> {
    let opts = RejoinOptions {
        delay: args.delay.map(|d| d.0),
        wait_streaming: args.wait.0,
    };
    let report = ryw_cluster::rejoin(&args.dir.dir, &args.name, &opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_rejoin(&report);
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn print_failover(r: &FailoverReport) {
    println!(
        "failover: {} → {} on timeline {} (it starts at {})",
        r.old_leader, r.new_leader, r.timeline, r.switch_lsn
    );
    let stop = match r.stop {
        StopKind::Fast => format!("stop {} (fast shutdown)", r.old_leader),
        StopKind::Killed => format!("kill {} (SIGKILL)", r.old_leader),
        StopKind::AlreadyDown => format!("{} was already down", r.old_leader),
    };
    let why = match r.chosen_because {
        ChosenBecause::Named => "named by --to",
        ChosenBecause::MostWal => "received the most WAL",
        ChosenBecause::AlreadyPromoted => "already promoted; finishing that failover",
    };
    let row = |what: &str, t: Duration| println!("  {what:<52} {:>10}", ms(t));
    row(&stop, r.timings.stop);
    row(&format!("choose {}: {why}", r.new_leader), r.timings.choose);
    for c in &r.candidates {
        let lsn = c
            .received
            .map(|l| l.to_string())
            .unwrap_or_else(|| "-".into());
        let state = if !c.alive {
            "down"
        } else if c.in_recovery {
            "standby"
        } else {
            "promoted"
        };
        println!("      {:<10} {state:<8} {lsn}", c.name);
    }
    row(
        &format!("promote {} (accepts writes)", r.new_leader),
        r.timings.promote,
    );
    let names: Vec<&str> = r.followers.iter().map(|f| f.name.as_str()).collect();
    if names.is_empty() {
        row("no other follower to re-point", r.timings.repoint);
    } else {
        row(
            &format!("re-point {} → {}", names.join(", "), r.new_leader),
            r.timings.repoint,
        );
        for f in &r.followers {
            let s = match (f.alive, f.streaming_after) {
                (false, _) => "down: follows it once started".to_string(),
                (true, Some(t)) => format!("streaming on timeline {} after {}", r.timeline, ms(t)),
                (true, None) => "not streaming yet".to_string(),
            };
            println!("      {:<10} {s}", f.name);
        }
    }
    row("total", r.timings.total);
    if let Some(names) = &r.synchronous_standby_names {
        println!("synchronous_standby_names on {}: '{}'", r.new_leader, names);
    }
    println!("leader URL: {}", r.new_leader_url);
    for n in &r.notes {
        println!("note: {n}");
    }
}

pub fn print_rejoin(r: &RejoinReport) {
    let rewind = if r.rewound {
        match r.diverged_at {
            Some(l) => format!("pg_rewind (its WAL from {l} on discarded)"),
            None => "pg_rewind".into(),
        }
    } else {
        "pg_rewind: nothing to undo".into()
    };
    let delay = match r.delay_from {
        ryw_cluster::failover::DelayFrom::Given => "as given",
        ryw_cluster::failover::DelayFrom::Recorded => "the one it had",
        ryw_cluster::failover::DelayFrom::FormerLeader => "0 for the first leader",
    };
    println!(
        "rejoin: {} follows {} on timeline {} (pid {}, replay delay {} ms: {delay})",
        r.name, r.leader, r.timeline, r.pid, r.delay_ms
    );
    let row = |what: &str, t: Duration| println!("  {what:<52} {:>10}", ms(t));
    row(&format!("CHECKPOINT on {}", r.leader), r.timings.checkpoint);
    row(&rewind, r.timings.rewind);
    row("start as a standby", r.timings.start);
    row("streaming", r.timings.streaming);
    row("total", r.timings.total);
    if let Some(names) = &r.synchronous_standby_names {
        println!("synchronous_standby_names on {}: '{}'", r.leader, names);
    }
    println!("url: {}", r.url);
}

pub fn down(dir: &Path, purge: bool) -> anyhow::Result<()> {
    match ryw_cluster::down(dir, purge) {
        Ok(r) if r.stopped.is_empty() && !r.purged => {
            println!("nothing running in {}", dir.display())
        }
        Ok(r) => {
            if !r.stopped.is_empty() {
                println!("stopped {}", r.stopped.join(", "));
            }
            if r.purged {
                println!("removed the data in {}", dir.display());
            }
        }
        Err(ryw_cluster::ClusterError::NotFound { .. }) => {
            println!("nothing running in {} (no cluster.json)", dir.display())
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub fn print_info(info: &ClusterInfo) {
    println!(
        "cluster up in {:.1} s, saved to {}",
        info.up_secs,
        info.dir.join("cluster.json").display()
    );
    println!(
        "{:<10} {:<8} {:>5} {:>7}  {:<8} url",
        "node", "role", "port", "pid", "delay"
    );
    for n in &info.nodes {
        let delay = n
            .delay_ms
            .map(|d| format!("{d}ms"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<8} {:>5} {:>7}  {:<8} {}",
            n.name, n.role, n.port, n.pid, delay, n.url
        );
    }
    if let Some(r) = &info.redis {
        println!(
            "{:<10} {:<8} {:>5} {:>7}  {:<8} {}",
            "redis", "session", r.port, r.pid, "-", r.url
        );
    }
    if let Some(rc) = &info.redis_cluster {
        for (i, n) in rc.nodes.iter().enumerate() {
            let role = if i < rc.masters { "master" } else { "replica" };
            let url = if i == 0 { rc.url.as_str() } else { "" };
            println!(
                "{:<10} {:<8} {:>5} {:>7}  {:<8} {}",
                format!("redis{}", i + 1),
                role,
                n.port,
                n.pid,
                "-",
                url
            );
        }
    }
}

pub fn print_status(info: &ClusterInfo, repl: &ReplicationInfo, nodes: &[NodeState]) {
    println!(
        "cluster in {} ({} replication, timeline {})",
        info.dir.display(),
        if repl.sync {
            "synchronous"
        } else {
            "asynchronous"
        },
        repl.timeline
    );
    println!(
        "{:<10} {:<8} {:>5} {:>7} {:<5} {:<14} {:>10} {:<9} {:>6} {:>3} {:<10} {:<7}",
        "node",
        "role",
        "port",
        "pid",
        "alive",
        "lsn",
        "lag bytes",
        "streaming",
        "delay",
        "tl",
        "upstream",
        "sync"
    );
    for s in nodes {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<8} {:>5} {:>7} {:<5} {:<14} {:>10} {:<9} {:>6} {:>3} {:<10} {:<7}",
            s.name,
            s.role,
            s.port,
            opt(s.pid.map(|p| p.to_string())),
            if s.alive { "yes" } else { "no" },
            opt(s.lsn.clone()),
            opt(s.lag_bytes.map(|b| b.to_string())),
            opt(s
                .streaming
                .map(|b| if b { "yes".into() } else { "no".into() })),
            opt(s.delay_ms.map(|d| format!("{d}ms"))),
            opt(s.timeline.map(|t| t.to_string())),
            opt(s.upstream.clone()),
            opt(s.sync_state.clone()),
        );
    }
    if let Some(r) = &info.redis {
        let alive = ryw_cluster::ops::is_alive(r.pid);
        println!(
            "redis      session  {:>5} {:>7} {:<5} {}",
            r.port,
            r.pid,
            if alive { "yes" } else { "no" },
            r.url
        );
    }
    if let Some(rc) = &info.redis_cluster {
        for (i, n) in rc.nodes.iter().enumerate() {
            let alive = ryw_cluster::ops::is_alive(n.pid);
            let role = match ryw_cluster::redis_cluster::role(n.port).as_deref() {
                Some("master") => "master",
                Some(_) => "replica",
                None => "-",
            };
            println!(
                "{:<10} {:<8} {:>5} {:>7} {:<5} {}",
                format!("redis{}", i + 1),
                role,
                n.port,
                n.pid,
                if alive { "yes" } else { "no" },
                if i == 0 { rc.url.as_str() } else { "" }
            );
        }
    }
    if let Some(f) = repl.failovers.last() {
        println!(
            "last failover: {} → {} (timeline {} from {})",
            f.from, f.to, f.timeline, f.switch_lsn
        );
    }
}
