//! The OpenAPI document tells the truth: schemathesis (`--checks all`)
//! drives a real listening service on a real cluster from its own
//! `/openapi.json` and finds no answer that breaks it: no undocumented
//! status or content type, no body off its schema, no valid request refused
//! and no invalid one accepted, no 5xx.
//!
//! schemathesis comes from PyPI, pinned (with everything it pulls in) by
//! `tests/schemathesis-requirements.txt`, into a private virtual environment
//! under `target/tmp/` that later runs reuse. It needs `python3` with the
//! `venv` module; `scripts/test` installs them when missing. The run is
//! bounded (a fixed number of cases per operation, a fixed seed, so every
//! run tries the same cases) and prints its operations and cases.

use crate::helpers::*;
use ryw_cluster::harness::TestCluster;
use ryw_service::Service;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The pinned environment, as `pip freeze` wrote it.
const REQUIREMENTS: &str = include_str!("../schemathesis-requirements.txt");

/// Cases per operation and phase, and the seed: bounded and repeatable.
const MAX_EXAMPLES: &str = "150";
const SEED: &str = "20261130";

/// Longest the run may take before the test fails (it takes well under a
/// minute on two cores).
const RUN_LIMIT: Duration = Duration::from_secs(240);

const FIX: &str = "install Python 3 with its venv module: \
                   apt-get install -y python3 python3-venv (scripts/test does it when missing)";

/// `target/tmp/schemathesis-venv`, made (once) with the pinned packages.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let stamp = dir.join("ryw-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return dir;
    }
    // Built beside it and renamed into place, so that a run interrupted
    // half-way never leaves a broken environment that looks finished.
    let building = dir.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .status()
        .unwrap_or_else(|e| panic!("python3 not found ({e}); {FIX}"));
    assert!(
        made.success(),
        "python3 -m venv {} failed ({made}); {FIX}",
        building.display()
    );
    let requirements = building.join("ryw-requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).unwrap();
    let installed = Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("running pip");
    assert!(
        installed.success(),
        "pip could not install schemathesis from PyPI ({installed}); is PyPI reachable?"
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&building, &dir).expect("moving the virtual environment into place");
    dir
}

/// The number after `label` on the summary line that has it.
fn count_after(text: &str, label: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?;
        rest.trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_service_answering_as_its_openapi_document_says() {
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();

    init_logs();
    let cluster = TestCluster::start(&LAGS).await;
    let mut cfg = config(&cluster);
    // Rich enough that no generated payment meets "insufficient funds".
    cfg.opening_balance_cents = 1_000_000_000_000_000;
    let service = Service::build(cfg).await.expect("service starts");
    wait_followers_in_rotation(&service.state()).await;
    let addr = service.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    // A genuine token, as a client holds one (only signed tokens are valid:
    // a schema can give their shape, not their signature). And a payment is
    // refused for the state it meets, which no schema can express: a key
    // already used for another payment (422), no account (404).
    let token = ryw_router::TokenKey::from_secret(KEY)
        .unwrap()
        .sign(ryw_router::Lsn::ZERO);
    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(
        &config_file,
        format!(
            "[parameters]\n\"header.X-Consistency-Token\" = \"{token}\"\n\n\
             [[operations]]\ninclude-operation-id = \"pay\"\n\
             checks.positive_data_acceptance.expected-statuses = [\"2xx\", \"404\", \"422\"]\n"
        ),
    )
    .unwrap();

    let run = tokio::process::Command::new(venv.join("bin/python"))
        .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(&config_file)
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        .current_dir(work.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_LIMIT:?}"))
        .expect("running schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), server).await;

    let operations = count_after(&text, "Tested:");
    // "Test cases:" then, on the next line, "1226 generated, 1226 passed".
    let cases: Option<u64> = text
        .lines()
        .find(|l| l.contains(" generated"))
        .and_then(|l| l.trim().split(' ').next()?.parse().ok());
    eprintln!(
        "schemathesis {MAX_EXAMPLES} examples, seed {SEED}: operations {operations:?}, cases {cases:?}, exit {}",
        out.status
    );
    assert!(
        out.status.success() && text.contains("No issues found"),
        "schemathesis found the service breaking its OpenAPI document:\n{text}"
    );
    assert_eq!(operations, Some(12), "every operation was tested:\n{text}");
    assert!(cases.is_some_and(|n| n >= 100), "too few cases:\n{text}");
    let summary = text.find("SUMMARY").map_or(&text[..], |at| &text[at..]);
    eprintln!("{summary}");
}
