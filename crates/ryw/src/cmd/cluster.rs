//! `ryw cluster up | status | lag | down`.

use crate::cli::{ClusterCommand, UpArgs};
use ryw_cluster::{ClusterInfo, NodeStatus, UpOptions};
use std::path::Path;

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Up(args) => {
            let info = ryw_cluster::up(&up_options(&args)?).await?;
            print_info(&info);
            Ok(())
        }
        ClusterCommand::Status(args) => {
            let (info, nodes) = ryw_cluster::status(&args.dir.dir).await?;
            if args.json {
                let v = serde_json::json!({ "dir": info.dir, "nodes": nodes, "redis": info.redis.as_ref().map(|r| serde_json::json!({
                    "port": r.port, "pid": r.pid, "url": r.url, "alive": ryw_cluster::ops::is_alive(r.pid),
                })) });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&info, &nodes);
            }
            Ok(())
        }
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
        pg_bin: args.pg_bin.clone(),
        os_user: Some(args.os_user.clone()),
        shared_buffers: args.shared_buffers.clone(),
    })
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
}

pub fn print_status(info: &ClusterInfo, nodes: &[NodeStatus]) {
    println!("cluster in {}", info.dir.display());
    println!(
        "{:<10} {:<8} {:>5} {:>7} {:<5} {:<14} {:>10} {:<9} {:>6}",
        "node", "role", "port", "pid", "alive", "lsn", "lag bytes", "streaming", "delay"
    );
    for s in nodes {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<8} {:>5} {:>7} {:<5} {:<14} {:>10} {:<9} {:>6}",
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
}
