//! The relay as a state machine, driven at random: the same sequence of
//! client actions (36 kinds: DISCARD, DEALLOCATE, PREPARE/EXECUTE of any
//! name including the proxy's old one, SET/RESET of search_path, role and
//! ryw.*, temp tables, LISTEN/NOTIFY, transactions that commit, roll back
//! or fail, savepoints, holdable cursors, COPY in and out, several
//! statements in one Query, extended batches with and without Sync,
//! pipelined batches, named statements, advisory locks, cancels, writes
//! and the reads of them) goes to a connection through the proxy and to
//! one straight to the leader, and every answer must be the same (each
//! side on rows of its own). A stale read through the proxy answers an
//! older value than the leader does, so it shows as a difference too.
//!
//! A fixed seed in the default run (`RYW_MACHINE_SEED` to replay another,
//! `RYW_MACHINE_ACTIONS` for a longer run, `RYW_MACHINE_TRACE` to print
//! every action; the seed is printed).

use std::time::Duration;

use bytes::BytesMut;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::raw::{
    Msg, Raw, Reply, put_bind, put_describe, put_execute, put_flush, put_parse, put_sync,
};
use crate::support::{Ctx, Setup, direct};

/// One kind of client action.
#[derive(Clone, Copy, Debug)]
enum Action {
    DiscardAll,
    DiscardPlans,
    DeallocateAll,
    Deallocate(u8),
    SqlPrepare(u8),
    SqlExecute(u8),
    PrepareProxysName,
    DeallocateProxysName,
    SetSearchPath,
    ResetSearchPath,
    SetRole,
    ResetRole,
    ResetAll,
    SetRywStrategy,
    SetRywSession,
    SetConfigTimeZone,
    ShowTimeZone,
    TempCreate,
    TempInsert,
    TempCount,
    TempDrop,
    Listen,
    Unlisten,
    Notify,
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackToSavepoint,
    Release,
    Fail,
    DeclareHold,
    Fetch,
    CloseAll,
    CopyOut,
    CopyIn,
    MultiStatement,
    Extended,
    FlushThenSync,
    Pipelined,
    NamedParse(u8),
    NamedBind(u8),
    NamedClose(u8),
    Write,
    Read,
    AdvisoryLock,
    AdvisoryUnlockAll,
    Nextval,
    ShowPrepared,
    ShowSession,
    Cancel,
}

impl Action {
    fn random(rng: &mut StdRng) -> Action {
        use Action::*;
        let n = rng.random_range(0..4u8);
        // Writes and reads often: they are what the guarantee is about.
        match rng.random_range(0..64) {
            0 => DiscardAll,
            1 => DiscardPlans,
            2 => DeallocateAll,
            3 => Deallocate(n),
            4 | 5 => SqlPrepare(n),
            6 => SqlExecute(n),
            7 => PrepareProxysName,
            8 => DeallocateProxysName,
            9 => SetSearchPath,
            10 => ResetSearchPath,
            11 => SetRole,
            12 => ResetRole,
            13 => ResetAll,
            14 => SetRywStrategy,
            15 => SetRywSession,
            16 => SetConfigTimeZone,
            17 => ShowTimeZone,
            18 => TempCreate,
            19 => TempInsert,
            20 => TempCount,
            21 => TempDrop,
            22 => Listen,
            23 => Unlisten,
            24 => Notify,
            25 | 26 => Begin,
            27 | 28 => Commit,
            29 => Rollback,
            30 => Savepoint,
            31 => RollbackToSavepoint,
            32 => Release,
            33 => Fail,
            34 => DeclareHold,
            35 => Fetch,
            36 => CloseAll,
            37 => CopyOut,
            38 => CopyIn,
            39 => MultiStatement,
            40 | 41 => Extended,
            42 => FlushThenSync,
            43 => Pipelined,
            44 => NamedParse(n),
            45 | 46 => NamedBind(n),
            47 => NamedClose(n),
            48..=53 => Write,
            54..=59 => Read,
            60 => AdvisoryLock,
            61 => AdvisoryUnlockAll,
            62 => Nextval,
            _ => match rng.random_range(0..8) {
                0 => Cancel,
                1 | 2 => ShowSession,
                _ => ShowPrepared,
            },
        }
    }
}

/// One side: a connection, and the prefix of its own objects.
struct Side {
    raw: Raw,
    prefix: &'static str,
    /// The value of its next write.
    next: i64,
    /// Its advisory lock key (the two sides' must not collide).
    lock: i64,
    /// The names of its SQL `PREPARE`s: `ps` as its protocol statements
    /// (one namespace on a server), or `sq` under transaction pooling
    /// (where the two are apart: README, "Transaction pooling").
    sql_names: &'static str,
}

impl Side {
    /// `{t}` in a template becomes this side's prefix.
    fn sql(&self, template: &str) -> String {
        template.replace("{t}", self.prefix)
    }

    async fn q(&mut self, template: &str) -> Reply {
        let sql = self.sql(template);
        self.raw.query(&sql).await
    }

    async fn act(&mut self, a: Action, row: &str) -> Reply {
        use Action::*;
        match a {
            DiscardAll => self.q("DISCARD ALL").await,
            DiscardPlans => self.q("DISCARD PLANS").await,
            DeallocateAll => self.q("DEALLOCATE ALL").await,
            Deallocate(n) => {
                let sql = if n % 2 == 1 { self.sql_names } else { "ps" };
                self.q(&format!("DEALLOCATE {sql}{n}")).await
            }
            SqlPrepare(n) => {
                self.q(&format!(
                    "PREPARE {}{n} AS SELECT v FROM kv WHERE k = '{{t}}row'",
                    self.sql_names
                ))
                .await
            }
            SqlExecute(n) => self.q(&format!("EXECUTE {}{n}", self.sql_names)).await,
            PrepareProxysName => {
                self.q("PREPARE ryw_position AS SELECT 'FFFFFFFF/FFFFFF00'::text")
                    .await
            }
            DeallocateProxysName => self.q("DEALLOCATE ryw_position").await,
            SetSearchPath => self.q("SET search_path = {t}s, public").await,
            ResetSearchPath => self.q("RESET search_path").await,
            SetRole => self.q("SET ROLE {t}role").await,
            ResetRole => self.q("RESET ROLE").await,
            ResetAll => self.q("RESET ALL").await,
            SetRywStrategy => self.q("SET ryw.strategy = 'causal'").await,
            SetRywSession => {
                let session = self.sql("{t}sess");
                self.raw
                    .extended(
                        "SELECT set_config('ryw.session', $1, false)",
                        &[Some(&session)],
                    )
                    .await
            }
            SetConfigTimeZone => {
                self.q("SELECT set_config('TimeZone', 'America/New_York', false)")
                    .await
            }
            ShowTimeZone => self.q("SHOW TimeZone").await,
            TempCreate => self.q("CREATE TEMP TABLE IF NOT EXISTS tt (a int)").await,
            TempInsert => self.q("INSERT INTO tt VALUES (1)").await,
            TempCount => self.q("SELECT count(*) FROM tt").await,
            TempDrop => self.q("DROP TABLE IF EXISTS tt").await,
            Listen => self.q("LISTEN {t}ch").await,
            Unlisten => self.q("UNLISTEN *").await,
            Notify => self.q("NOTIFY {t}ch, 'hello'").await,
            Begin => self.q("BEGIN").await,
            Commit => self.q("COMMIT").await,
            Rollback => self.q("ROLLBACK").await,
            Savepoint => self.q("SAVEPOINT sp").await,
            RollbackToSavepoint => self.q("ROLLBACK TO SAVEPOINT sp").await,
            Release => self.q("RELEASE SAVEPOINT sp").await,
            Fail => self.q("SELECT 1/0").await,
            DeclareHold => {
                self.q("DECLARE cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 5) g")
                    .await
            }
            Fetch => self.q("FETCH 2 FROM cur").await,
            CloseAll => self.q("CLOSE ALL").await,
            CopyOut => {
                self.q("COPY (SELECT k, v FROM kv WHERE k LIKE '{t}%' ORDER BY k) TO STDOUT")
                    .await
            }
            CopyIn => {
                let rows: Vec<String> = (0..5).map(|i| format!("{i}\t{}", self.prefix)).collect();
                let sql = self.sql("COPY {t}copy (a, b) FROM STDIN");
                self.raw.copy_in(&sql, &rows).await
            }
            MultiStatement => {
                self.q("SELECT 1; SELECT v FROM kv WHERE k = '{t}row'; SHOW search_path")
                    .await
            }
            Extended => {
                let sql = "SELECT v FROM kv WHERE k = $1";
                let k = self.sql("{t}row");
                self.raw.extended(sql, &[Some(&k)]).await
            }
            FlushThenSync => {
                let mut out = BytesMut::new();
                put_parse(&mut out, "", "SELECT $1::int * 2");
                put_describe(&mut out, b'S', "");
                put_flush(&mut out);
                self.raw.send(&out).await;
                let mut r = Reply::default();
                // ParseComplete, ParameterDescription, RowDescription; or
                // an error, after which the server waits for a Sync.
                while r.msgs.len() < 3 && !r.msgs.iter().any(|m| m.tag == b'E') {
                    match self.raw.next_within(Duration::from_secs(10)).await {
                        Some(m) => r.msgs.push(m),
                        None => break,
                    }
                }
                let mut out = BytesMut::new();
                put_bind(&mut out, "", "", &[Some("21")]);
                put_execute(&mut out, "");
                put_sync(&mut out);
                self.raw.send(&out).await;
                r.msgs.extend(self.raw.reply().await.msgs);
                r
            }
            Pipelined => {
                let mut out = BytesMut::new();
                let k = self.sql("{t}row");
                for _ in 0..2 {
                    put_parse(&mut out, "", "SELECT v FROM kv WHERE k = $1");
                    put_bind(&mut out, "", "", &[Some(&k)]);
                    put_execute(&mut out, "");
                    put_sync(&mut out);
                }
                self.raw.send(&out).await;
                let mut r = self.raw.reply().await;
                r.msgs.extend(self.raw.reply().await.msgs);
                r
            }
            NamedParse(n) => {
                let mut out = BytesMut::new();
                put_parse(&mut out, &format!("ps{n}"), "SELECT v FROM kv WHERE k = $1");
                put_sync(&mut out);
                self.raw.send(&out).await;
                self.raw.reply().await
            }
            NamedBind(n) => {
                let mut out = BytesMut::new();
                let k = self.sql("{t}row");
                put_bind(&mut out, "", &format!("ps{n}"), &[Some(&k)]);
                put_execute(&mut out, "");
                put_sync(&mut out);
                self.raw.send(&out).await;
                self.raw.reply().await
            }
            NamedClose(n) => {
                let mut out = BytesMut::new();
                postgres_protocol::message::frontend::close(b'S', &format!("ps{n}"), &mut out)
                    .unwrap();
                put_sync(&mut out);
                self.raw.send(&out).await;
                self.raw.reply().await
            }
            Write => {
                self.next += 1;
                let sql = format!(
                    "INSERT INTO kv VALUES ('{row}', {}) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    self.next
                );
                self.raw.query(&sql).await
            }
            Read => {
                self.raw
                    .query(&format!("SELECT v FROM kv WHERE k = '{row}'"))
                    .await
            }
            AdvisoryLock => {
                self.q(&format!("SELECT pg_advisory_lock({})", self.lock))
                    .await
            }
            AdvisoryUnlockAll => self.q("SELECT pg_advisory_unlock_all()").await,
            Nextval => self.q("SELECT nextval('{t}seq')").await,
            ShowPrepared => {
                self.q("SELECT name FROM pg_prepared_statements WHERE from_sql ORDER BY name")
                    .await
            }
            ShowSession => {
                self.q("SELECT current_user, current_setting('search_path')")
                    .await
            }
            Cancel => {
                let sql = "SELECT pg_sleep(0.4)";
                let mut out = BytesMut::new();
                postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
                self.raw.send(&out).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.raw.cancel().await;
                let r = self.raw.reply().await;
                // A cancel that arrives late must not hit the next action.
                tokio::time::sleep(Duration::from_millis(100)).await;
                r
            }
        }
    }
}

/// What a reply says, without what differs between two servers (process
/// ids, parameter reports) and with each side's names made alike.
fn normalized(r: &Reply, prefix: &str) -> Vec<String> {
    let same = |s: String| s.replace(prefix, "X_");
    r.msgs
        .iter()
        .filter(|m| m.tag != b'S')
        .map(|m: &Msg| match m.tag {
            b'E' | b'N' => format!("{} {}", m.tag as char, m.field(b'C').unwrap_or_default()),
            b'D' => same(format!("D {:?}", m.columns())),
            b'A' => {
                // pid, channel, payload
                let rest = &m.body[4..];
                same(format!("A {}", String::from_utf8_lossy(rest)))
            }
            b'C' | b'T' | b'd' => same(format!(
                "{} {}",
                m.tag as char,
                String::from_utf8_lossy(&m.body).replace('\0', "|")
            )),
            b'Z' => format!("Z {}", m.body[0] as char),
            other => format!("{}", other as char),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_client_actions_answer_as_the_leader_answers_and_never_read_stale() {
    run_machine(Setup::default(), 1, 2000, false).await;
}

/// Transaction pooling: the same, on a pool of two server connections per
/// node that another client shares meanwhile (the same statement texts
/// prepared under its own names, settings of its own, transactions), so
/// the machine's batches land on connections the other client used last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_client_actions_answer_as_the_leader_answers_under_transaction_pooling() {
    let setup = Setup {
        pool_mode: ryw_proxy::PoolMode::Transaction,
        pool_size: 2,
        ..Setup::default()
    };
    run_machine(setup, 2, 1500, true).await;
}

/// Another client of the proxy, until `stop`: named statements with the
/// machine's texts, a session setting, short transactions.
async fn neighbour(addr: std::net::SocketAddr, stop: tokio::sync::watch::Receiver<bool>) -> usize {
    let mut raw = Raw::connect(addr, "postgres", "").await;
    let mut rounds = 0;
    while !*stop.borrow() {
        let mut out = BytesMut::new();
        let name = format!("n{}", rounds % 3);
        put_parse(&mut out, &name, "SELECT v FROM kv WHERE k = $1");
        put_bind(&mut out, "", &name, &[Some("n_row")]);
        put_execute(&mut out, "");
        put_sync(&mut out);
        raw.send(&out).await;
        let r = raw.reply().await;
        assert!(
            !r.msgs.iter().any(|m| m.tag == b'E'),
            "the neighbour failed: {r:?}"
        );
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::close(b'S', &name, &mut out).unwrap();
        put_sync(&mut out);
        raw.send(&out).await;
        raw.reply().await;
        let sql = match rounds % 4 {
            0 => "SET search_path = pg_catalog, public",
            1 => "BEGIN; SELECT count(*) FROM kv; COMMIT",
            2 => "RESET search_path",
            _ => "SELECT 1",
        };
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(sql, &mut out).unwrap();
        raw.send(&out).await;
        let r = raw.reply().await;
        assert!(
            !r.msgs.iter().any(|m| m.tag == b'E'),
            "the neighbour failed: {sql}: {r:?}"
        );
        rounds += 1;
    }
    rounds
}

async fn run_machine(setup: Setup, default_seed: u64, default_actions: usize, neighbours: bool) {
    let seed: u64 = std::env::var("RYW_MACHINE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let actions: usize = std::env::var("RYW_MACHINE_ACTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_actions);
    eprintln!(
        "state machine ({:?} pooling): seed {seed}, {actions} actions (RYW_MACHINE_SEED, RYW_MACHINE_ACTIONS)",
        setup.pool_mode
    );
    let sql_names = match setup.pool_mode {
        ryw_proxy::PoolMode::Session => "ps",
        ryw_proxy::PoolMode::Transaction => "sq",
    };
    let ctx = Ctx::start(setup).await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    for t in ["p_", "d_"] {
        leader
            .batch_execute(&format!(
                "CREATE SCHEMA {t}s; CREATE TABLE {t}copy (a int, b text); CREATE SEQUENCE {t}seq; \
                 CREATE ROLE {t}role; GRANT ALL ON kv, {t}copy TO {t}role; \
                 GRANT USAGE ON SCHEMA {t}s TO {t}role; GRANT ALL ON SEQUENCE {t}seq TO {t}role; \
                 INSERT INTO kv VALUES ('{t}row', 0)"
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let leader_addr = {
        let port = ctx
            .cluster
            .info()
            .nodes
            .iter()
            .find(|n| n.name == "leader")
            .unwrap()
            .port;
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    let mut proxied = Side {
        raw: Raw::connect(ctx.proxy.addr, "postgres", "").await,
        prefix: "p_",
        next: 0,
        lock: 1001,
        sql_names,
    };
    let mut direct_side = Side {
        raw: Raw::connect(leader_addr, "postgres", "").await,
        prefix: "d_",
        next: 0,
        lock: 2001,
        sql_names,
    };
    let (stop_neighbours, stopped) = tokio::sync::watch::channel(false);
    let neighbour_tasks: Vec<_> = (0..if neighbours { 2 } else { 0 })
        .map(|_| tokio::spawn(neighbour(ctx.proxy.addr, stopped.clone())))
        .collect();
    let trace = std::env::var_os("RYW_MACHINE_TRACE").is_some();
    if trace {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("ryw_proxy=debug,ryw_router=debug")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut differences = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    // The last actions, shown with the first difference (to replay it).
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for i in 0..actions {
        let a = Action::random(&mut rng);
        kinds.insert(format!("{a:?}").split('(').next().unwrap().to_owned());
        if trace {
            eprintln!("#{i} {a:?}");
        }
        let p = proxied.act(a, "p_row").await;
        if trace {
            eprintln!("   proxy {:?}", normalized(&p, "p_"));
        }
        let d = direct_side.act(a, "d_row").await;
        let (mut np, mut nd) = (normalized(&p, "p_"), normalized(&d, "d_"));
        if matches!(a, Action::Cancel) {
            // A statement cancelled before it started running (the proxy
            // was still routing it) has no row description: a server that
            // gets the cancel while it plans answers the same way.
            np.retain(|m| !m.starts_with('T'));
            nd.retain(|m| !m.starts_with('T'));
        }
        recent.push_back(format!("#{i} {a:?} -> {nd:?}"));
        if recent.len() > 40 {
            recent.pop_front();
        }
        if np != nd && differences.is_empty() {
            differences.push(format!(
                "the actions before the first difference:\n  {}",
                recent.iter().cloned().collect::<Vec<_>>().join("\n  ")
            ));
        }
        if np != nd {
            differences.push(format!("#{i} {a:?}:\n  proxy  {np:?}\n  leader {nd:?}"));
            if differences.len() >= 10 {
                break;
            }
        }
    }
    let _ = stop_neighbours.send(true);
    for t in neighbour_tasks {
        let rounds = t.await.expect("the neighbour");
        eprintln!("a neighbour ran {rounds} rounds meanwhile");
        assert!(rounds > 10, "the neighbour barely ran ({rounds} rounds)");
    }
    eprintln!("{} kinds of action used", kinds.len());
    assert!(kinds.len() >= 30, "only {} kinds: {kinds:?}", kinds.len());
    assert!(
        differences.is_empty(),
        "seed {seed}: the proxy answered differently from the leader:\n{}",
        differences.join("\n")
    );
}
