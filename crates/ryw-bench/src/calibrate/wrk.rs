//! Which load generator measures: `wrk` in a process of its own when
//! installed, else the built-in one; and `wrk`'s output read back.

use super::http::{LoadResult, LoadSpec, http_load, parse_target};
use crate::BenchError;
use crate::report::Latency;

/// The load generator of a calibration run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Generator {
    /// `wrk` when it is on `PATH`, else [`Generator::Builtin`].
    #[default]
    Auto,
    /// `wrk -t1` in a process of its own, of the generators tried it
    /// spends the least CPU per request, so the figure is most the server's.
    Wrk,
    /// [`http_load`] in this process (no install needed; it shares the
    /// process, and with an in-process service its runtime, with the
    /// server, which costs the server some of its throughput).
    Builtin,
}

impl std::str::FromStr for Generator {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Generator, BenchError> {
        match s {
            "auto" => Ok(Generator::Auto),
            "wrk" => Ok(Generator::Wrk),
            "builtin" => Ok(Generator::Builtin),
            other => Err(BenchError::config(
                "generator",
                format!("{other:?}: expected auto, wrk or builtin"),
            )),
        }
    }
}

impl Generator {
    /// What `Auto` means on this machine.
    pub fn resolve(self) -> Generator {
        match self {
            Generator::Auto if wrk_available() => Generator::Wrk,
            Generator::Auto => Generator::Builtin,
            g => g,
        }
    }
}

fn wrk_available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Runs `spec` with the generator `generator` resolves to.
pub async fn load(generator: Generator, spec: &LoadSpec) -> Result<LoadResult, BenchError> {
    match generator.resolve() {
        Generator::Wrk => wrk_load(spec).await,
        _ => http_load(spec).await,
    }
}

/// Runs `spec` with `wrk -t1 -c<connections> --latency` (install: `apt-get
/// install wrk`).
pub async fn wrk_load(spec: &LoadSpec) -> Result<LoadResult, BenchError> {
    parse_target(spec)?;
    let secs = spec.duration.as_secs().max(1);
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args(["-t1", "--latency"])
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{secs}s"))
        .arg(format!("--timeout={}s", spec.timeout.as_secs().max(1)));
    for (name, value) in &spec.headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    // A rotating header needs wrk's Lua: a script that sets it per request.
    let script = if spec.rotate.1.is_empty() {
        None
    } else {
        let file = tempfile::Builder::new()
            .prefix("ryw-wrk-")
            .suffix(".lua")
            .tempfile()
            .map_err(|e| BenchError::config("generator", format!("wrk script: {e}")))?;
        std::fs::write(file.path(), rotate_script(&spec.rotate.0, &spec.rotate.1))
            .map_err(|e| BenchError::config("generator", format!("wrk script: {e}")))?;
        cmd.arg("-s").arg(file.path());
        Some(file)
    };
    cmd.arg(&spec.url);
    let out = cmd.output().await.map_err(|e| {
        BenchError::config(
            "generator",
            format!("cannot run wrk ({e}); install it with `apt-get install wrk` or use --generator builtin"),
        )
    })?;
    drop(script);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::config(
            "generator",
            format!(
                "wrk failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    parse_wrk(&text)
        .ok_or_else(|| BenchError::config("generator", format!("unexpected wrk output:\n{text}")))
}

/// A wrk Lua script that sets header `name` to the next of `values` on
/// every request (values are quoted as Lua long strings).
fn rotate_script(name: &str, values: &[String]) -> String {
    let list: Vec<String> = values.iter().map(|v| format!("[==[{v}]==]")).collect();
    format!(
        "local values = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  wrk.headers[ [==[{name}]==] ] = values[(i % #values) + 1]\n  return wrk.format()\nend\n",
        list.join(", ")
    )
}

/// The figures of `wrk --latency` output (it gives no p95: left at 0).
fn parse_wrk(text: &str) -> Option<LoadResult> {
    let mut r = LoadResult {
        requests: 0,
        non_2xx: 0,
        errors: 0,
        elapsed_s: 0.0,
        requests_per_s: 0.0,
        latency_ms: Latency::default(),
    };
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", "Distribution"] => in_distribution = true,
            ["Latency", avg, _, max, ..] if !in_distribution => {
                r.latency_ms.mean = wrk_ms(avg)?;
                r.latency_ms.max = wrk_ms(max)?;
            }
            [q, v] if in_distribution && q.ends_with('%') => match *q {
                "50%" => r.latency_ms.p50 = wrk_ms(v)?,
                "99%" => r.latency_ms.p99 = wrk_ms(v)?,
                _ => {}
            },
            [n, "requests", "in", t, ..] => {
                in_distribution = false;
                r.requests = n.parse().ok()?;
                r.elapsed_s = t.trim_end_matches(',').trim_end_matches('s').parse().ok()?;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["Requests/sec:", v] => r.requests_per_s = v.parse().ok()?,
            _ => {}
        }
    }
    (r.requests > 0 || r.requests_per_s > 0.0).then_some(r)
}

/// `870.00us`, `1.10ms`, `2.00s` in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8089/api/balance
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.91ms  310.12us   12.40ms   88.10%
    Req/Sec    35.61k     1.02k   37.20k    71.00%
  Latency Distribution
     50%  870.00us
     75%    1.01ms
     90%    1.20ms
     99%    2.10ms
  354321 requests in 10.00s, 92.43MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  35407.80
Transfer/sec:      9.24MB
";

    #[test]
    fn wrk_output_is_read_into_a_load_result() {
        let r = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(r.requests, 354_321);
        assert_eq!((r.non_2xx, r.errors), (3, 3));
        assert!((r.requests_per_s - 35_407.80).abs() < 1e-6);
        assert!((r.elapsed_s - 10.0).abs() < 1e-9);
        assert!((r.latency_ms.p50 - 0.87).abs() < 1e-9);
        assert!((r.latency_ms.p99 - 2.10).abs() < 1e-9);
        assert!((r.latency_ms.mean - 0.91).abs() < 1e-9);
        assert!((r.latency_ms.max - 12.40).abs() < 1e-9);
        assert!(parse_wrk("wrk: connection refused").is_none());
        assert_eq!(wrk_ms("2.00s"), Some(2000.0));
        assert_eq!("wrk".parse::<Generator>().unwrap(), Generator::Wrk);
        let script = rotate_script("X-Demo-UserId", &["a".into(), "b".into()]);
        assert!(
            script.contains("local values = {[==[a]==], [==[b]==]}"),
            "{script}"
        );
        assert!(
            script.contains("wrk.headers[ [==[X-Demo-UserId]==] ]"),
            "{script}"
        );
        assert!("ab".parse::<Generator>().is_err());
    }
}
