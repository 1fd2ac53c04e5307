//! A real-browser test of the dashboard (issues 4 and 14).
//!
//! A real cluster with the story's lags (100 ms and 400 ms), a real listening
//! `ryw serve`, and headless Chromium driven over WebDriver (`chromedriver`,
//! through `fantoccini`). Opened cold, the page runs a live comparison (two
//! demo users paying and reading, one on `legacy`, one on the default): a
//! stale read shows in red on the legacy side within seconds, none on the
//! default's, whose last wait is explained; the default is explained in one
//! sentence; the replay-delay inputs show each follower's delay; the lag
//! column does not wrap. Then: pay and see the new balance from the write
//! response; under `legacy`, "Pay, then read at once" shows a STALE read
//! within a few tries; under `causal` it never does. Screenshots land in
//! `target/browser-test/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test
//! fails with the command that installs them.

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use ryw_router::{NodeUrls, TokenKey};
use ryw_service::{AppState, Service, ServiceConfig};
use serde_json::{Value, json};
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = "apt-get update && apt-get install -y chromium chromium-driver";

/// The story's lags: 100 ms and 400 ms.
const LAGS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// Enough money for every click below ($100 each).
const OPENING_CENTS: i64 = 10_000_000;

/// How many "Pay, then read at once" under `legacy` may pass before a STALE mark.
const LEGACY_TRIES: usize = 30;

/// How many "Pay, then read at once" under `causal` must all be fresh.
const CAUSAL_TRIES: usize = 10;

/// The service's sticky window, which the strategy menu must show.
const STICKY_WINDOW: Duration = Duration::from_millis(2500);

/// How long one page update may take before the test fails.
const STEP: Duration = Duration::from_secs(10);

/// How long the live comparison may take to show a stale read under
/// `legacy` (a round every 1.2–2 s, each stale with a chance of about five
/// in six at these lags: follower2 always, follower1 two times in three).
const LIVE_STALE: Duration = Duration::from_secs(15);

/// The colours of the marks (style.css `--bad`, `--good`).
const RED: &str = "rgb(198, 40, 40)";
const GREEN: &str = "rgb(46, 125, 50)";

// ---------------------------------------------------------------------------
// Tools and folders

/// The executable `name` on `PATH`, or a failure that says how to install it.
fn tool(names: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "{} not found on PATH; this test needs Debian's chromium and chromium-driver: {INSTALL}",
        names.join(" or ")
    );
}

/// `target/browser-test/`, created: the test's screenshots and driver log.
fn output_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/browser-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives under target/<profile>/deps");
    let dir = target.join("browser-test");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

// ---------------------------------------------------------------------------
// chromedriver, stopped on drop (also when the test panics)

/// A running `chromedriver` in its own process group; the group (driver and
/// every browser process it started) is killed on drop.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    /// Starts `chromedriver` on a free loopback port below 32768 and waits
    /// until it accepts connections.
    fn start(binary: &Path, log: &Path) -> Chromedriver {
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64;
        let mut last = String::new();
        for attempt in 0..20u64 {
            let port = 20_000 + ((seed.wrapping_mul(7919) + attempt * 577) % 12_000) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let log_file = std::fs::File::create(log).unwrap();
            let child = Command::new(binary)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .process_group(0) // its own group: Drop kills the browser too
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", binary.display()));
            let mut driver = Chromedriver { child, port };
            match driver.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return driver,
                Err(e) => last = e, // dropped: killed; try another port
            }
        }
        panic!(
            "chromedriver did not start: {last}; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("chromedriver exited with {status}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on port {} after {limit:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        // The process group is the driver's pid (process_group(0)).
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The service on a real socket

fn config(cluster: &TestCluster) -> ServiceConfig {
    let nodes = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    };
    let key = TokenKey::from_secret("browser test key, sixteen bytes or more").unwrap();
    let mut cfg = ServiceConfig::new(nodes, key);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.allow_strategy_header = true;
    cfg.cluster_dir = Some(cluster.dir());
    cfg.lag_control = true;
    cfg.opening_balance_cents = OPENING_CENTS;
    // Not the default 5 s, so the page shows the configured window.
    cfg.router.sticky_window = STICKY_WINDOW;
    cfg
}

async fn wait_followers_in_rotation(state: &AppState) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = state.router.cluster_view();
        if view.leader.in_rotation && view.followers().all(|f| f.in_rotation) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "followers never entered rotation: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// The browser

async fn connect_browser(driver: &Chromedriver, chromium: &Path, profile: &Path) -> Client {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,1000".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let caps = match caps {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps);
    builder
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session with {}: {e}", chromium.display()))
}

/// What the page shows now, read in one script so that it is consistent.
#[derive(Debug, Clone)]
struct Page {
    balance: String,
    version: String,
    read_result: String,
    mark: Option<String>,
    mark_color: Option<String>,
    message: String,
    pay_refresh_enabled: bool,
    reads: u64,
    nodes: Vec<Vec<String>>,
    sticky_option: String,
    read_wait: String,
    live: [Lane; 2],
    default_explained: String,
    default_wait: String,
    delays: Vec<String>,
    lag_white_space: Vec<String>,
}

/// One side of the live comparison.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Lane {
    name: String,
    stale: u64,
    stale_red: bool,
    reads: u64,
    /// The last reads, newest first: (text, class, background colour).
    recent: Vec<(String, String, String)>,
}

async fn page(client: &Client) -> Page {
    const SCRIPT: &str = r##"
        const q = (s) => document.querySelector(s);
        const text = (s) => (q(s) ? q(s).textContent.trim() : null);
        const mark = q("#read-result #stale-mark");
        return {
            balance: text("#balance"),
            version: text("#version"),
            read_result: text("#read-result"),
            mark: mark ? mark.textContent.trim() : null,
            mark_color: mark ? getComputedStyle(mark).backgroundColor : null,
            message: text("#message"),
            pay_refresh_enabled: !q("#pay-refresh").disabled,
            reads: document.querySelectorAll("#reads tbody tr").length,
            nodes: [...document.querySelectorAll("#nodes tbody tr")].map(
                (tr) => [...tr.cells].map((td) => td.textContent.trim())),
            sticky_option: text("#strategy option[value=sticky]"),
            read_wait: text("#read-wait"),
            live: ["#lane-legacy", "#lane-default"].map((id) => ({
                name: text(`${id} .lane-name`),
                stale: Number(text(`${id} .stale-count`)),
                stale_red: getComputedStyle(q(`${id} .stale-count`)).color === "rgb(198, 40, 40)",
                reads: Number(text(`${id} .read-count`)),
                recent: [...document.querySelectorAll(`${id} ol.recent li`)].map(
                    (li) => [li.textContent.trim(), li.className, getComputedStyle(li).backgroundColor]),
            })),
            default_explained: text("#default-explained"),
            default_wait: text("#default-wait"),
            delays: [...document.querySelectorAll("#nodes input[data-follower]")].map((i) => i.value),
            lag_white_space: [...document.querySelectorAll("#nodes td.lag")].map(
                (td) => getComputedStyle(td).whiteSpace),
        };
    "##;
    let v = client
        .execute(SCRIPT, vec![])
        .await
        .expect("reading the page");
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Page {
        balance: s("balance"),
        version: s("version"),
        read_result: s("read_result"),
        mark: v["mark"].as_str().map(str::to_owned),
        mark_color: v["mark_color"].as_str().map(str::to_owned),
        message: s("message"),
        pay_refresh_enabled: v["pay_refresh_enabled"].as_bool().unwrap_or(false),
        reads: v["reads"].as_u64().unwrap_or(0),
        nodes: serde_json::from_value(v["nodes"].clone()).unwrap_or_default(),
        sticky_option: s("sticky_option"),
        read_wait: s("read_wait"),
        live: serde_json::from_value(v["live"].clone()).expect("the live lanes"),
        default_explained: s("default_explained"),
        default_wait: s("default_wait"),
        delays: serde_json::from_value(v["delays"].clone()).unwrap_or_default(),
        lag_white_space: serde_json::from_value(v["lag_white_space"].clone()).unwrap_or_default(),
    }
}

/// Polls the page until `ready` accepts it, for at most `limit`.
async fn until_within(
    client: &Client,
    limit: Duration,
    what: &str,
    ready: impl Fn(&Page) -> bool,
) -> Page {
    let deadline = Instant::now() + limit;
    loop {
        let p = page(client).await;
        if ready(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} the page still does not show {what}: {p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the live comparison's default side must show, whatever it read: no
/// stale read, every mark green, and the last read's wait explained in
/// words that agree with the last mark (who served it).
fn check_default_lane(p: &Page) {
    let lane = &p.live[1];
    assert_eq!(lane.name, "hybrid", "the default's side is named: {p:#?}");
    assert_eq!(lane.stale, 0, "the default never reads stale: {p:#?}");
    assert!(!lane.stale_red, "{p:#?}");
    for (text, class, colour) in &lane.recent {
        assert_eq!(
            (class.as_str(), colour.as_str()),
            ("fresh", GREEN),
            "{text}: {p:#?}"
        );
    }
    let (last, _, _) = lane.recent.first().expect("a read on the default's side");
    let served_by = last.rsplit(' ').next().unwrap();
    let wait = p
        .default_wait
        .strip_prefix("Last fresh read: ")
        .unwrap_or_else(|| panic!("the last wait is explained: {p:#?}"));
    let agrees = if let Some(rest) = wait.strip_prefix("waited ") {
        // "waited 9 ms for follower1, which then served it", or wasted.
        let ms: u64 = rest
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("a wait in ms");
        (1..=200).contains(&ms)
            && if served_by == "leader" {
                wait.contains("the leader served it (a wasted wait)")
            } else {
                wait.contains(&format!("for {served_by}, which then served it"))
            }
    } else if served_by == "leader" {
        wait == "did not wait: no follower was about to have the write, so the leader served it at once."
    } else {
        wait == format!("did not wait: {served_by} already had the write.")
    };
    assert!(
        agrees,
        "the wait and the last read disagree ({last}): {p:#?}"
    );
}

/// Polls the page until `ready` accepts it, for at most [`STEP`].
async fn until(client: &Client, what: &str, ready: impl Fn(&Page) -> bool) -> Page {
    let deadline = Instant::now() + STEP;
    loop {
        let p = page(client).await;
        if ready(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "after {STEP:?} the page still does not show {what}: {p:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn choose_strategy(client: &Client, name: &str) {
    client
        .find(Locator::Css("#strategy"))
        .await
        .unwrap()
        .select_by_value(name)
        .await
        .unwrap_or_else(|e| panic!("choosing {name}: {e}"));
    let v = client
        .execute("return document.querySelector('#strategy').value", vec![])
        .await
        .unwrap();
    assert_eq!(v, json!(name), "the strategy select did not change");
}

/// Clicks "Pay, then read at once" and waits for the read's result.
async fn pay_then_read(client: &Client) -> Page {
    let before = page(client).await;
    click(client, "#pay-refresh").await;
    until(client, "the result of a new read", |p| {
        p.pay_refresh_enabled && p.read_result != before.read_result && p.mark.is_some()
    })
    .await
}

async fn screenshot(client: &Client, file: &Path) {
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(file, png).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    eprintln!("screenshot: {}", file.display());
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// The user's story, in the browser.
async fn scenario(client: &Client, base: &str, out: &Path) {
    let opened = Instant::now();
    client.goto(base).await.expect("opening the dashboard");

    // Cold, before any click: the live comparison shows a stale read on the
    // legacy side, in red, and none on the default's.
    let p = until_within(client, LIVE_STALE, "a stale read on the legacy side", |p| {
        p.live[0].stale >= 1 && p.live[1].reads >= 2
    })
    .await;
    eprintln!(
        "live comparison: first legacy stale read shown {:?} after opening: {:?}",
        opened.elapsed(),
        p.live
    );
    let default_reads_at_open = p.live[1].reads;
    let legacy = &p.live[0];
    assert_eq!(legacy.name, "legacy");
    assert!(
        legacy.stale_red,
        "the legacy side's stale count is red: {p:#?}"
    );
    assert!(
        legacy
            .recent
            .iter()
            .any(|(text, class, colour)| text.starts_with("stale v")
                && class == "stale"
                && colour == RED),
        "a red mark for the stale read: {p:#?}"
    );
    check_default_lane(&p);
    assert!(
        p.default_explained.starts_with("The default, hybrid: ")
            && p.default_explained.contains("at most 20 ms"),
        "the default explained in one sentence, with the server's budget: {p:#?}"
    );
    // The replay-delay inputs show each follower's current delay, and the
    // lag column stays on one line.
    assert_eq!(p.delays, ["100", "400"], "{p:#?}");
    assert_eq!(p.lag_white_space, ["nowrap", "nowrap"], "{p:#?}");
    screenshot(client, &out.join("dashboard-live.png")).await;

    // The account is created and the cluster table is filled.
    let p = until(client, "the opening balance and three nodes", |p| {
        p.balance == money(OPENING_CENTS)
            && p.nodes.len() == 3
            && p.nodes
                .iter()
                .all(|row| row.len() >= 5 && row[2] != "unknown")
    })
    .await;
    assert_eq!(p.version, "0");
    assert_eq!(p.nodes[0][1], "leader", "{:?}", p.nodes);
    // The strategy menu names the server's sticky window (2.5 s here).
    assert_eq!(
        p.sticky_option, "sticky — leader for 2.5 s after a write",
        "{p:#?}"
    );
    assert!(
        p.nodes[1..]
            .iter()
            .all(|r| r[1] == "follower" && r[4] == "in")
    );

    // Pay: the new balance comes from the write response at once, with no read.
    click(client, "#pay").await;
    let p = until(client, "the balance after one payment", |p| {
        p.balance == money(OPENING_CENTS - 10_000) && p.version == "1"
    })
    .await;
    assert_eq!(p.read_result, "No read yet.", "pay must not read: {p:#?}");
    assert_eq!(p.reads, 0, "pay must not read: {p:#?}");
    assert!(p.message.contains("payment response"), "{p:#?}");

    // Legacy: a random follower, hundreds of ms behind: STALE within a few tries.
    choose_strategy(client, "legacy").await;
    let mut stale = None;
    for try_no in 1..=LEGACY_TRIES {
        let p = pay_then_read(client).await;
        assert!(p.read_result.contains("via legacy"), "{p:#?}");
        if p.mark.as_deref() == Some("STALE") {
            eprintln!("legacy: STALE on try {try_no}: {}", p.read_result);
            stale = Some(p);
            break;
        }
        assert_eq!(p.mark.as_deref(), Some("fresh"), "{p:#?}");
    }
    let p = stale.unwrap_or_else(|| {
        panic!("{LEGACY_TRIES} legacy reads after a payment never showed STALE")
    });
    assert_eq!(
        p.mark_color.as_deref(),
        Some("rgb(198, 40, 40)"),
        "the STALE mark is red: {p:#?}"
    );
    assert!(
        p.read_result.contains("your last payment made version"),
        "{p:#?}"
    );
    screenshot(client, &out.join("dashboard-stale.png")).await;

    // Causal: never stale.
    choose_strategy(client, "causal").await;
    for i in 0..CAUSAL_TRIES {
        let p = pay_then_read(client).await;
        assert!(p.read_result.contains("via causal"), "{p:#?}");
        // The last fresh read's wait, in words: "waited … for followerN" or
        // "did not wait …".
        assert!(
            p.read_wait.starts_with("Last fresh read: waited ")
                || p.read_wait.starts_with("Last fresh read: did not wait"),
            "{p:#?}"
        );
        assert_eq!(
            p.mark.as_deref(),
            Some("fresh"),
            "causal read {i} was stale: {p:#?}"
        );
        assert_eq!(
            p.balance,
            money(OPENING_CENTS - 10_000 * (p.version.parse::<i64>().unwrap())),
            "{p:#?}"
        );
    }
    screenshot(client, &out.join("dashboard.png")).await;

    // The live comparison kept going all along: still no stale read on the
    // default's side.
    let p = page(client).await;
    assert!(p.live[1].reads > default_reads_at_open, "{p:#?}");
    check_default_lane(&p);
    eprintln!("live comparison at the end: {:?}", p.live);

    // A phone-sized window: the cards fit, nothing scrolls sideways.
    client.set_window_size(390, 1000).await.expect("resizing");
    let deadline = Instant::now() + STEP;
    loop {
        let v = client
            .execute(
                "return [window.innerWidth, document.documentElement.scrollWidth]",
                vec![],
            )
            .await
            .unwrap();
        let (inner, scroll) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
        if inner < 500 && scroll <= inner {
            break;
        }
        if Instant::now() > deadline {
            screenshot(client, &out.join("dashboard-narrow.png")).await;
            panic!("in a {inner} px wide window the page is {scroll} px wide");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Even there, each follower's lag ("12 ms / 400 B") is one line.
    let lines = client
        .execute(
            r##"return [...document.querySelectorAll("#nodes td.lag")].map((td) => {
                   const r = document.createRange(); r.selectNodeContents(td);
                   return new Set([...r.getClientRects()].map((b) => Math.round(b.top))).size;
               })"##,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        lines,
        json!([1, 1]),
        "the lag column wraps in a narrow window"
    );
    screenshot(client, &out.join("dashboard-narrow.png")).await;
}

/// Runs `fut`, catching a panic so that cleanup can run before it goes on.
async fn catching<F: Future<Output = ()>>(fut: F) -> std::thread::Result<()> {
    std::panic::AssertUnwindSafe(fut).catch_unwind().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_stale_reads_under_legacy_and_none_under_causal_or_the_default()
 {
    let chromium = tool(&["chromium", "chromium-browser"]);
    let chromedriver_bin = tool(&["chromedriver"]);
    let out = output_dir();
    let started = Instant::now();

    let cluster = TestCluster::start_with(TestClusterOptions {
        lags: LAGS.to_vec(),
        redis: false,
    })
    .await;
    let service = Service::build(config(&cluster))
        .await
        .expect("service starts");
    wait_followers_in_rotation(&service.state()).await;
    let base = format!("http://{}/", service.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    // Declared before the driver so that it is removed after the browser died.
    let profile = tempfile::Builder::new()
        .prefix("ryw-chromium-")
        .tempdir()
        .unwrap();
    let driver = Chromedriver::start(&chromedriver_bin, &out.join("chromedriver.log"));
    let client = connect_browser(&driver, &chromium, profile.path()).await;

    let outcome = catching(scenario(&client, &base, &out)).await;

    let _ = client.close().await;
    drop(driver);
    let _ = stop.send(());
    let served = tokio::time::timeout(Duration::from_secs(10), server).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    served
        .expect("the service stops within 10 s")
        .unwrap()
        .expect("the service ran cleanly");
    eprintln!("browser test took {:?}", started.elapsed());
}
