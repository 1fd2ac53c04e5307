//! The framework recipes (`recipes/` at the repository's root), each tested
//! the way a pooled app uses it: an app in that ecosystem, on its usual
//! pool (3 connections), writes a value through one request and reads it
//! back through the next. The write's request answers the user and only
//! then gives its connection back (a server finishes a request after
//! sending its response), and the read arrives meanwhile, so the pool hands
//! it another connection; the user thinks a little between pairs, longer
//! than the fast follower lags, so what a connection did before does not
//! keep its reads on the leader. Run without the recipe (the control: each
//! client connection is its own session, so the read on the other
//! connection is stale) and with it (0 stale; `SHOW ryw.session` in a
//! request says the user's session, and none for an anonymous one).
//! Staleness is judged by the values the app wrote; a pair is "crossed"
//! when its two requests ran on different client connections (the backend
//! pid the proxy gives each one).
//!
//! Then background jobs on a real RQ queue on the cluster's Redis: a job
//! enqueued right after a write reads it back, with the enqueuer's
//! `SHOW ryw.token` carried in the job (0 stale) and without (stale).
//!
//! The runtimes come from Debian (Ruby with ruby-pg and ActiveRecord,
//! pgjdbc and HikariCP for Java; `scripts/test` installs them when
//! missing), PyPI (a virtual environment in `target/tmp/recipes-venv`) and
//! the npm registry (`target/tmp/recipes-node`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Ctx, Setup};

/// Write-then-read pairs with the recipe, and in the control.
const PAIRS: u64 = 220;
const CONTROL_PAIRS: u64 = 100;
/// Background jobs with the token, and in the control.
const JOBS: u64 = 200;
const CONTROL_JOBS: u64 = 100;
/// The followers' replay delays: short, so that the user's pause between
/// pairs can outlast the fast one and the tests stay quick.
const LAGS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(200)];
/// The user's pause between pairs (and between jobs): longer than the fast
/// follower's lag plus a poll of the tracker. A read on the leader raises a
/// connection's token to the leader's position (monotonic reads), so
/// without pauses every pooled connection would keep reading on the leader
/// while writes go on, and the control could not go stale.
const THINK_MS: u64 = 25;

/// A cluster with the recipes' lags and a proxy on it.
async fn start(redis: bool) -> Ctx {
    Ctx::start(Setup {
        lags: LAGS.to_vec(),
        redis,
        ..Setup::default()
    })
    .await
}

/// The test apps (this folder's `recipes/`).
fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/recipes")
}

/// A recipe's folder (`recipes/<name>` at the repository's root).
fn recipe(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../recipes")
        .join(name);
    dir.canonicalize()
        .unwrap_or_else(|e| panic!("the recipe {} is missing: {e}", dir.display()))
}

/// Where the tests keep what they install.
pub(crate) fn cache(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// One installer at a time in this process (the tests run in parallel).
static INSTALLING: Mutex<()> = Mutex::new(());

/// Runs `cmd` to completion; panics with its output and `fix` when it fails.
pub(crate) fn must(cmd: &mut Command, fix: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start ({e}); {fix}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}); {fix}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dir`, made by `build` (in a folder of its own, moved into place once
/// complete) unless its stamp already says `stamp`.
pub(crate) fn cached(dir: &Path, stamp: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let file = dir.join("ryw-stamp");
    if std::fs::read_to_string(&file).is_ok_and(|s| s == stamp) {
        return dir.to_owned();
    }
    let building = dir.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).expect("making a folder in target/tmp");
    build(&building);
    std::fs::write(building.join("ryw-stamp"), stamp).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&building, dir).expect("moving an installation into place");
    dir.to_owned()
}

/// `target/tmp/recipes-venv`: Django, SQLAlchemy, psycopg with its pool, RQ.
fn venv() -> PathBuf {
    const FIX: &str = "install Python 3 with its venv module: apt-get install -y python3 \
                       python3-venv (scripts/test does it when missing); pip needs PyPI";
    let requirements = std::fs::read_to_string(apps().join("requirements.txt")).unwrap();
    cached(&cache("recipes-venv"), &requirements, |dir| {
        // A venv moved after it was made still runs (`bin/python -m …`).
        let _ = std::fs::remove_dir(dir);
        must(Command::new("python3").args(["-m", "venv"]).arg(dir), FIX);
        must(
            Command::new(dir.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("-r")
                .arg(apps().join("requirements.txt")),
            FIX,
        );
    })
}

/// `target/tmp/recipes-node`: node-postgres at the version the lock file pins.
pub(crate) fn node_modules() -> PathBuf {
    const FIX: &str = "install Node.js and npm (apt-get install -y nodejs npm; scripts/test \
                       does it when missing); npm needs the npm registry";
    let lock = std::fs::read_to_string(apps().join("package-lock.json")).unwrap();
    let dir = cached(&cache("recipes-node"), &lock, |dir| {
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(apps().join(f), dir.join(f)).unwrap();
        }
        must(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(dir),
            FIX,
        );
    });
    dir.join("node_modules")
}

/// Debian's pgjdbc, HikariCP and SLF4J jars.
pub(crate) fn java_classpath() -> Vec<PathBuf> {
    ["postgresql", "HikariCP", "slf4j-api", "slf4j-nop"]
        .iter()
        .map(|jar| {
            let p = Path::new("/usr/share/java").join(format!("{jar}.jar"));
            assert!(
                p.exists(),
                "{} is missing: apt-get install -y libpostgresql-jdbc-java libhikaricp-java \
                 libslf4j-java (scripts/test does it when missing)",
                p.display()
            );
            p
        })
        .collect()
}

/// `target/tmp/recipes-java`: the recipe and the app, compiled.
fn java_classes() -> PathBuf {
    const FIX: &str = "install a JDK: apt-get install -y default-jdk-headless (scripts/test \
                       does it when missing)";
    let sources = [
        recipe("jdbc").join("RywDataSource.java"),
        apps().join("JdbcApp.java"),
    ];
    let stamp: String = sources
        .iter()
        .map(|s| std::fs::read_to_string(s).unwrap())
        .collect();
    let classpath = std::env::join_paths(java_classpath()).unwrap();
    cached(&cache("recipes-java"), &stamp, |dir| {
        must(
            Command::new("javac")
                .arg("-d")
                .arg(dir)
                .arg("-cp")
                .arg(&classpath)
                .args(&sources),
            FIX,
        );
    })
}

/// Ruby with ruby-pg and ActiveRecord.
fn ruby() {
    let ok = Command::new("ruby")
        .args(["-e", "require 'pg'; require 'active_record'"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Ruby with ruby-pg and ActiveRecord is missing: apt-get install -y ruby ruby-pg \
         ruby-activerecord (scripts/test does it when missing)"
    );
}

/// Runs one app; returns the JSON line it printed last.
async fn run(label: &str, mut cmd: tokio::process::Command) -> Value {
    cmd.kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{label} did not finish in 180 s"))
        .unwrap_or_else(|e| panic!("{label} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{label} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    let mut report: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{label} printed no JSON line ({e}):\n{stdout}\n{stderr}"));
    report["wall_seconds"] = ((started.elapsed().as_secs_f64() * 10.0).round() / 10.0).into();
    report
}

/// The leader's share of a run's reads, from the ports that served them.
fn leader_share(ctx: &Ctx, report: &Value) -> f64 {
    let leader = ctx
        .cluster
        .info()
        .nodes
        .iter()
        .find(|n| n.name == ctx.cluster.leader_name())
        .expect("a leader")
        .port
        .to_string();
    let ports = report["ports"].as_object().expect("ports");
    let all: u64 = ports.values().filter_map(Value::as_u64).sum();
    let on_leader = ports.get(&leader).and_then(Value::as_u64).unwrap_or(0);
    on_leader as f64 / all.max(1) as f64
}

/// Runs a pooled app without and with its recipe, and judges the two runs.
/// `app(mode, pairs)` is the app's command. Returns the bound run's report.
async fn control_and_bound(
    ctx: &Ctx,
    framework: &str,
    app: impl Fn(&str, u64) -> tokio::process::Command,
) -> Value {
    let control = run(
        &format!("{framework} (control)"),
        app("control", CONTROL_PAIRS),
    )
    .await;
    let bound = run(&format!("{framework} (bound)"), app("bound", PAIRS)).await;
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    eprintln!(
        "{framework}: bound {}/{} stale ({} crossed, {:.0}% on the leader, {} s); \
         control {}/{} stale ({} of {} crossed, {:.0}% on the leader, {} s)",
        n(&bound, "stale"),
        n(&bound, "pairs"),
        n(&bound, "crossed"),
        leader_share(ctx, &bound) * 100.0,
        bound["wall_seconds"],
        n(&control, "stale"),
        n(&control, "pairs"),
        n(&control, "stale_crossed"),
        n(&control, "crossed"),
        leader_share(ctx, &control) * 100.0,
        control["wall_seconds"],
    );
    for (run, r, pairs) in [
        ("control", &control, CONTROL_PAIRS),
        ("bound", &bound, PAIRS),
    ] {
        assert_eq!(
            r["errors"].as_array().map(Vec::len),
            Some(0),
            "{framework} ({run}): {r}"
        );
        assert_eq!(n(r, "pairs"), pairs, "{framework} ({run}): {r}");
    }
    assert!(
        n(&control, "stale_crossed") > 0,
        "{framework}: without the recipe a read on another pooled connection goes stale: {control}"
    );
    assert!(
        n(&bound, "crossed") >= 200,
        "{framework}: at least 200 pairs must cross connections to show the recipe: {bound}"
    );
    assert_eq!(
        n(&bound, "stale"),
        0,
        "{framework}: with the recipe no read is stale: {bound}"
    );
    // The recipe bound the user's requests to the user's session (not some
    // other way to fresh reads), and an anonymous request to none.
    assert_eq!(bound["sessions"]["user"], "user-1", "{framework}: {bound}");
    assert_eq!(bound["sessions"]["anonymous"], "", "{framework}: {bound}");
    assert_eq!(control["sessions"]["user"], "", "{framework}: {control}");
    bound
}

/// The arguments every pooled app takes: host, port, mode, pairs, pause.
fn app_args(ctx: &Ctx, mode: &str, pairs: u64) -> [String; 5] {
    [
        "127.0.0.1".into(),
        ctx.proxy.addr.port().to_string(),
        mode.into(),
        pairs.to_string(),
        THINK_MS.to_string(),
    ]
}

/// A Python app of this folder run in the recipes' venv, with a recipe's
/// folder on its path.
fn python(
    ctx: &Ctx,
    venv: &Path,
    script: &str,
    recipe_dir: &str,
    mode: &str,
    pairs: u64,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
    cmd.arg(apps().join(script))
        .args(app_args(ctx, mode, pairs))
        .env("PYTHONPATH", recipe(recipe_dir));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_middleware_binds_each_request_so_a_pooled_read_sees_the_users_write() {
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let ctx = start(false).await;
    control_and_bound(&ctx, "Django", |mode, pairs| {
        python(&ctx, &venv, "django_app.py", "django", mode, pairs)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_checkout_event_binds_each_connection_so_a_pooled_read_sees_the_users_write() {
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let ctx = start(false).await;
    let bound = control_and_bound(&ctx, "SQLAlchemy", |mode, pairs| {
        python(&ctx, &venv, "sqlalchemy_app.py", "sqlalchemy", mode, pairs)
    })
    .await;
    // SQLAlchemy's default, a transaction psycopg opens implicitly: the
    // checkout binds inside it, and nothing fails.
    let implicit = &bound["implicit"];
    assert_eq!(
        implicit["errors"].as_array().map(Vec::len),
        Some(0),
        "{implicit}"
    );
    assert_eq!(implicit["stale"], 0, "{implicit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_pool_wrapper_binds_each_client_so_a_pooled_read_sees_the_users_write() {
    let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
    let ctx = start(false).await;
    control_and_bound(&ctx, "node-postgres", |mode, pairs| {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(apps().join("node_app.js"))
            .args(app_args(&ctx, mode, pairs))
            .env("NODE_PATH", &modules)
            .env("RYW_RECIPE", recipe("node-postgres").join("ryw-pool.js"));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_hikari_data_source_binds_each_connection_so_a_pooled_read_sees_the_users_write() {
    let classes = tokio::task::spawn_blocking(java_classes).await.unwrap();
    let mut classpath = java_classpath();
    classpath.push(classes);
    let classpath = std::env::join_paths(classpath).unwrap();
    let ctx = start(false).await;
    control_and_bound(&ctx, "JDBC (HikariCP)", |mode, pairs| {
        let mut cmd = tokio::process::Command::new("java");
        cmd.arg("-cp")
            .arg(&classpath)
            .arg("JdbcApp")
            .args(app_args(&ctx, mode, pairs));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activerecord_checkout_callback_binds_each_connection_so_a_pooled_read_sees_the_users_write()
 {
    ruby();
    let ctx = start(false).await;
    control_and_bound(&ctx, "ActiveRecord", |mode, pairs| {
        let mut cmd = tokio::process::Command::new("ruby");
        cmd.arg("-I")
            .arg(recipe("activerecord"))
            .arg(apps().join("activerecord_app.rb"))
            .args(app_args(&ctx, mode, pairs));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rq_jobs_carrying_the_enqueuers_token_read_what_it_wrote() {
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let ctx = start(true).await;
    let redis = ctx.cluster.redis_url().expect("the cluster's Redis");
    let jobs = |mode: &str, jobs: u64| {
        let mut cmd = tokio::process::Command::new(venv.join("bin/python"));
        cmd.arg(apps().join("rq_app.py"))
            .args([
                "127.0.0.1",
                &ctx.proxy.addr.port().to_string(),
                &redis,
                mode,
                &jobs.to_string(),
                &THINK_MS.to_string(),
            ])
            .env("PYTHONPATH", recipe("rq"));
        cmd
    };
    let without = run("RQ without the token", jobs("without-token", CONTROL_JOBS)).await;
    let with = run("RQ with the token", jobs("with-token", JOBS)).await;
    eprintln!(
        "RQ: with the token {}/{} stale ({:.0}% on the leader, job start p50 {} ms, {} s); \
         without {}/{} stale ({:.0}% on the leader, job start p50 {} ms, {} s)",
        with["stale"],
        with["jobs"],
        leader_share(&ctx, &with) * 100.0,
        with["job_start_ms_p50"],
        with["wall_seconds"],
        without["stale"],
        without["jobs"],
        leader_share(&ctx, &without) * 100.0,
        without["job_start_ms_p50"],
        without["wall_seconds"],
    );
    for (run, r, n) in [("without", &without, CONTROL_JOBS), ("with", &with, JOBS)] {
        assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{run}: {r}");
        assert_eq!(r["jobs"], n, "{run}: {r}");
    }
    assert!(
        without["stale"].as_u64().unwrap() > 0,
        "a job that reads right after its enqueuer's write, without the token, goes stale: \
         {without}"
    );
    assert_eq!(
        with["stale"], 0,
        "with the token no job reads stale: {with}"
    );
}
