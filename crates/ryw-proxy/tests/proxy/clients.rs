//! Real clients through the proxy: psql (with COPY), pgbench in its three
//! protocols (read-only and TPC-B-like, whose balances must still add up),
//! psycopg 3 with server-side prepared statements, and tokio-postgres
//! (every other test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Ctx, Setup, direct};

/// A PostgreSQL client program of the cluster's installation.
pub(crate) fn program(ctx: &Ctx, name: &str) -> PathBuf {
    ryw_cluster::ops::pg_binary(&ctx.cluster.info(), name)
}

/// Runs a client program against the proxy; panics with its output when it
/// fails. Returns stdout.
pub(crate) async fn run(ctx: &Ctx, name: &str, args: &[&str]) -> String {
    run_in(ctx, name, args, None).await
}

/// [`run`], with every connection of the program bound to the named
/// `session` (libpq's `PGOPTIONS`: the startup option `-c ryw.session=…`),
/// so one program's reads see another's writes.
pub(crate) async fn run_in(ctx: &Ctx, name: &str, args: &[&str], session: Option<&str>) -> String {
    let port = ctx.proxy.addr.port().to_string();
    let mut cmd = tokio::process::Command::new(program(ctx, name));
    cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "5")
        .kill_on_drop(true);
    if let Some(s) = session {
        cmd.env("PGOPTIONS", format!("-c ryw.session={s}"));
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} did not finish in 120 s"))
        .unwrap_or_else(|e| panic!("{name} not runnable: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// The number after `label` in pgbench's report.
pub(crate) fn figure(report: &str, label: &str) -> Option<f64> {
    report.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?;
        rest.trim()
            .trim_start_matches('=')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_in_all_three_protocols_work_through_the_proxy() {
    let ctx = Ctx::start(Setup::default()).await;

    // psql: DDL, a write, COPY FROM STDIN (psql's \copy), a fresh read of
    // all of it, the proxy's own settings.
    let data = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(data.path(), "2\ttwo\n3\tthree\n").unwrap();
    let copy = format!("\\copy notes FROM '{}'", data.path().display());
    let out = run(
        &ctx,
        "psql",
        &[
            "-d",
            ryw_cluster::DATABASE,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            "CREATE TABLE notes (id int PRIMARY KEY, body text)",
            "-c",
            "INSERT INTO notes VALUES (1, 'one')",
            "-c",
            &copy,
            "-c",
            "SELECT count(*), string_agg(body, ',' ORDER BY id) FROM notes",
            "-c",
            "SHOW ryw.served_by",
        ],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"3|one,two,three"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| *l == "leader" || l.starts_with("follower")),
        "SHOW ryw.served_by names a node: {out}"
    );

    // pgbench -i through the proxy: DDL, COPY of 100,000 rows, VACUUM;
    // then psql, another program, reads it in the same named session (a
    // connection of its own has no token: any follower may serve it, and
    // the 400 ms one may not have the table yet).
    run_in(
        &ctx,
        "pgbench",
        &["-i", "-q", "-s", "1", ryw_cluster::DATABASE],
        Some("pgbench-init"),
    )
    .await;
    let count = run_in(
        &ctx,
        "psql",
        &[
            "-d",
            ryw_cluster::DATABASE,
            "-At",
            "-c",
            "SELECT count(*) FROM pgbench_accounts",
        ],
        Some("pgbench-init"),
    )
    .await;
    assert_eq!(
        count.trim(),
        "100000",
        "a fresh read of the session sees the COPY"
    );

    for mode in ["simple", "extended", "prepared"] {
        for script in [&["-S"][..], &[][..]] {
            let mut args = vec!["-n", "-T", "2", "-c", "4", "-j", "2", "-M", mode];
            args.extend_from_slice(script);
            args.push(ryw_cluster::DATABASE);
            let report = run_in(&ctx, "pgbench", &args, Some("pgbench-init")).await;
            let done = figure(&report, "number of transactions actually processed:").unwrap_or(0.0);
            let failed = figure(&report, "number of failed transactions:").unwrap_or(0.0);
            eprintln!("pgbench -M {mode} {script:?}: {done} transactions, {failed} failed");
            assert!(done > 10.0, "{report}");
            assert_eq!(failed, 0.0, "{report}");
        }
    }
    // TPC-B-like runs moved money between accounts, tellers and branches:
    // the three sums agree only if every transaction was all-or-nothing on
    // the leader.
    let leader = direct(&ctx.cluster.leader_url()).await;
    let sums = leader
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, \
                    (SELECT sum(bbalance) FROM pgbench_branches)::int8, \
                    (SELECT sum(tbalance) FROM pgbench_tellers)::int8, \
                    (SELECT count(*) FROM pgbench_history)::int8",
            &[],
        )
        .await
        .unwrap();
    let (a, b, t, h): (i64, i64, i64, i64) = (sums.get(0), sums.get(1), sums.get(2), sums.get(3));
    eprintln!("balances: accounts {a}, branches {b}, tellers {t}; {h} history rows");
    assert!(h > 0, "the TPC-B-like runs wrote");
    assert_eq!((a, a), (b, t), "the balances add up");
}

/// `target/tmp/psycopg-venv` with the pinned packages, made once.
pub(crate) fn venv() -> PathBuf {
    const REQUIREMENTS: &str = include_str!("python/requirements.txt");
    const FIX: &str = "install Python 3 with its venv module: apt-get install -y python3 python3-venv \
                       (scripts/test does it when missing)";
    // Tests of this binary (one process) call this at once on a clean
    // checkout: one builds, the others wait for it.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("psycopg-venv");
    let stamp = dir.join("ryw-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return dir;
    }
    let building = dir.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .status()
        .unwrap_or_else(|e| panic!("python3 not found ({e}); {FIX}"));
    assert!(made.success(), "python3 -m venv failed ({made}); {FIX}");
    std::fs::write(building.join("ryw-requirements.txt"), REQUIREMENTS).unwrap();
    let installed = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(building.join("ryw-requirements.txt"))
        .status()
        .expect("running pip");
    assert!(
        installed.success(),
        "pip could not install the drivers from PyPI ({installed}); is PyPI reachable?"
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&building, &dir).expect("moving the virtual environment into place");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_with_server_side_prepared_statements_reads_its_writes_across_connections() {
    let ctx = Ctx::start(Setup::default()).await;
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/python/pairs.py");
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .args([
            "127.0.0.1",
            &ctx.proxy.addr.port().to_string(),
            "psycopg-session",
            "60",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("psycopg finished in 120 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psycopg failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("psycopg: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["stale"], 0, "{report}");
    assert_eq!(report["strategy"], "causal");
    let key = ctx.key.clone();
    assert!(
        key.verify(report["token"].as_str().unwrap()).is_ok(),
        "{report}"
    );
    let on_followers: u64 = ctx
        .cluster
        .follower_urls()
        .iter()
        .filter_map(|(name, _)| {
            let port = ctx
                .cluster
                .info()
                .nodes
                .iter()
                .find(|n| &n.name == name)?
                .port;
            report["ports"][port.to_string()].as_u64()
        })
        .sum();
    assert!(on_followers > 30, "followers served most reads: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_with_their_defaults_read_their_writes_and_are_never_pinned_for_good() {
    let ctx = Ctx::start(Setup::default()).await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute("INSERT INTO kv VALUES ('old', 7)")
        .await
        .unwrap();
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/python/drivers.py");
    let leader_port = ctx
        .cluster
        .info()
        .nodes
        .iter()
        .find(|n| n.name == "leader")
        .unwrap()
        .port;
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .args([
            "127.0.0.1",
            &ctx.proxy.addr.port().to_string(),
            &leader_port.to_string(),
            "60",
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the drivers finished in 240 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the drivers failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("drivers: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    for driver in ["psycopg", "sqlalchemy", "asyncpg"] {
        let r = &report[driver];
        assert!(r["pairs"].as_u64().unwrap() >= 120, "{driver}: {r}");
        assert_eq!(r["stale"].as_array().unwrap().len(), 0, "{driver}: {r}");
        assert_eq!(r["errors"].as_array().unwrap().len(), 0, "{driver}: {r}");
        assert!(
            r["followers"].as_u64().unwrap() >= 10,
            "{driver}: nothing may pin the connection to the leader for good: {r}"
        );
    }
    assert_eq!(report["asyncpg"]["copied"], 100, "{report}");
    assert!(
        report["asyncpg"]["notify_ms"].as_f64().unwrap() < 100.0,
        "an idle listener hears a notification at once: {report}"
    );
}
