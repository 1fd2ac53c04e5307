//! Random request bodies for `POST /api/payments` and `POST /api/me/profile`
//! through the in-process app: the answer is always a 2xx, or a 4xx
//! problem+json — never a 5xx, never a panic. Kept small (a few dozen cases
//! per target, one cluster) so it runs in seconds.

use crate::helpers::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

/// Keys the handlers look at, plus one they do not.
const KEYS: [&str; 6] = [
    "amount_cents",
    "description",
    "email",
    "name",
    "avatarUrl",
    "other",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-5i64..200_000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[a-z]{1,10}@[a-z]{1,10}\\.[a-z]{2,3}".prop_map(Value::String),
        "https?://[a-z]{1,12}\\.[a-z]{2,3}/[a-z]{0,8}".prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(&KEYS[..]), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A body: JSON text, sometimes mangled, or an overflowing number.
fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json().prop_map(|v| v.to_string()),
        1 => json().prop_map(|v| {
            // Half of the characters, not of the bytes: cutting a
            // multi-byte character panicked the generator itself.
            let s = v.to_string();
            s.chars().take(s.chars().count() / 2).collect::<String>()
        }),
        1 => "[0-9]{15,40}".prop_map(|n| format!(r#"{{"amount_cents": {n}}}"#)),
        1 => "-?[0-9]{1,3}(\\.[0-9]{1,3})?(e[+-]?[0-9]{1,4})?"
            .prop_map(|n| format!(r#"{{"amount_cents": {n}}}"#)),
        1 => ".{0,64}",
    ]
}

#[test]
fn random_json_bodies_get_a_2xx_or_a_4xx_problem_never_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let t = rt.block_on(TestApp::start());
    let u = user();
    rt.block_on(t.account(&u));
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    for path in ["/api/payments", "/api/me/profile"] {
        runner
            .run(&body(), |b| {
                let r = rt.block_on(t.call("POST", path, Some(&u), &[], Some(&b)));
                let ok = r.status.is_success()
                    || (r.status.is_client_error()
                        && r.header("content-type") == "application/problem+json");
                prop_assert!(ok, "POST {} {:?} -> {:?}", path, b, r);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
