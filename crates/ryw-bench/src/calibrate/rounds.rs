//! The interleaved comparison: one row per round, the medians, the ratios.

use crate::report::Latency;
use serde::Serialize;
use std::fmt::Write as _;

/// One contender of an interleaved run (pgbench, ryw, the minimal server,
/// a `--compare` service) and its figure in every round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Short name, used to name ratios (`ryw/minimal`).
    pub name: String,
    /// Column header of the table (`ryw req/s`).
    pub label: String,
    /// What was measured, in words.
    pub what: String,
    /// The figure of each round, in order.
    pub rounds: Vec<f64>,
    /// Latency of each round, for contenders measured over HTTP.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_ms: Vec<Latency>,
    /// The median of `rounds` (set by [`Rounds::new`]).
    pub median: Option<f64>,
}

impl Series {
    /// A contender with no round measured yet.
    pub fn new(name: impl Into<String>, label: impl Into<String>, what: impl Into<String>) -> Self {
        Series {
            name: name.into(),
            label: label.into(),
            what: what.into(),
            rounds: Vec::new(),
            latency_ms: Vec::new(),
            median: None,
        }
    }
}

/// One contender's figure divided by another's, round by round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// `of/to` (`ryw/minimal`).
    pub name: String,
    /// The dividend's [`Series::name`].
    pub of: String,
    /// The divisor's [`Series::name`].
    pub to: String,
    /// Per round; `None` where a figure is missing or the divisor is 0.
    pub rounds: Vec<Option<f64>>,
    /// The median of the per-round ratios: the figure to quote, as it
    /// cancels the drift between rounds on a noisy machine.
    pub median: Option<f64>,
    /// The ratio of the two medians.
    pub of_medians: Option<f64>,
}

/// An interleaved comparison: every contender measured once per round, in
/// the same order each round (A B C A B C …), so that they share the
/// machine's ups and downs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rounds {
    /// The contenders, in the order of the table.
    pub series: Vec<Series>,
    /// The ratios, in the order of the table.
    pub ratios: Vec<Ratio>,
}

impl Rounds {
    /// The comparison of `series` (their medians computed), no ratio yet.
    pub fn new(mut series: Vec<Series>) -> Rounds {
        for s in &mut series {
            s.median = median(&s.rounds);
        }
        Rounds {
            series,
            ratios: Vec::new(),
        }
    }

    /// Adds the ratio `of/to` (by [`Series::name`]); names not among the
    /// series give a ratio without figures.
    pub fn add_ratio(&mut self, of: &str, to: &str) {
        self.add_named_ratio(format!("{of}/{to}"), of, to);
    }

    fn add_named_ratio(&mut self, name: String, of: &str, to: &str) {
        let find = |n: &str| self.series.iter().find(|s| s.name == n);
        let (a, b) = (find(of), find(to));
        let at = |s: Option<&Series>, i: usize| s.and_then(|s| s.rounds.get(i).copied());
        let rounds: Vec<Option<f64>> = (0..self.len())
            .map(|i| divide(at(a, i), at(b, i)))
            .collect();
        let per_round: Vec<f64> = rounds.iter().flatten().copied().collect();
        self.ratios.push(Ratio {
            name,
            of: of.to_string(),
            to: to.to_string(),
            median: median(&per_round),
            of_medians: divide(a.and_then(|s| s.median), b.and_then(|s| s.median)),
            rounds,
        });
    }

    /// The number of rounds (of the longest series).
    pub fn len(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.rounds.len())
            .max()
            .unwrap_or(0)
    }

    /// No round measured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The terminal table: one row per round (every figure, every ratio),
    /// the medians with the ratios of the medians, then the medians of the
    /// per-round ratios.
    pub fn table(&self) -> String {
        self.table_with(0)
    }

    /// [`Rounds::table`] with the figures to `decimals` places (the
    /// ratios always to two).
    pub fn table_with(&self, decimals: usize) -> String {
        let figure = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.decimals$}"));
        let ratio = |x: Option<f64>| x.map_or("-".to_string(), |r| format!("{r:.2}"));
        let header: Vec<String> = std::iter::once("round".to_string())
            .chain(self.series.iter().map(|s| s.label.clone()))
            .chain(self.ratios.iter().map(|r| r.name.clone()))
            .collect();
        let mut rows: Vec<Vec<String>> = (0..self.len())
            .map(|i| {
                std::iter::once(format!("{}", i + 1))
                    .chain(self.series.iter().map(|s| figure(s.rounds.get(i).copied())))
                    .chain(self.ratios.iter().map(|r| ratio(r.rounds[i])))
                    .collect()
            })
            .collect();
        rows.push(
            std::iter::once("median".to_string())
                .chain(self.series.iter().map(|s| figure(s.median)))
                .chain(self.ratios.iter().map(|r| ratio(r.of_medians)))
                .collect(),
        );
        let mut width = vec![0usize; header.len()];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut s = String::new();
        for row in std::iter::once(&header).chain(&rows) {
            for (i, c) in row.iter().enumerate() {
                let pad = " ".repeat(width[i] - c.chars().count());
                if i == 0 {
                    let _ = write!(s, "{c}{pad}");
                } else {
                    let _ = write!(s, "  {pad}{c}");
                }
            }
            s.push('\n');
        }
        // (ratio, its median, rounds it has a figure in)
        let medians: Vec<(&Ratio, f64, usize)> = self
            .ratios
            .iter()
            .filter_map(|r| Some((r, r.median?, r.rounds.iter().flatten().count())))
            .collect();
        match medians.as_slice() {
            [] => {}
            // One ratio: its column header says which.
            [(_, m, n)] if self.ratios.len() == 1 => {
                let _ = writeln!(s, "median of the per-round ratios: {m:.2} ({n} rounds)");
            }
            [(_, _, n), rest @ ..] => {
                let same = rest.iter().all(|(_, _, k)| k == n);
                let parts: Vec<String> = medians
                    .iter()
                    .map(|(r, m, k)| match same {
                        true => format!("{} {m:.2}", r.name),
                        false => format!("{} {m:.2} ({k} rounds)", r.name),
                    })
                    .collect();
                let _ = write!(s, "median of the per-round ratios: {}", parts.join(", "));
                let _ = match same {
                    true => writeln!(s, " ({n} rounds)"),
                    false => writeln!(s),
                };
            }
        }
        s
    }
}

/// `a / b`, when both are known and `b` is not 0.
fn divide(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Formats an "A B A B" comparison: one row per round (A's figure, B's
/// figure, B/A), then the medians, the ratio of the medians and the median
/// of the per-round ratios (the figure to quote: it cancels the drift
/// between rounds on a noisy machine). [`Rounds`] does the same for any
/// number of contenders and ratios.
pub fn ab_table(a_label: &str, a: &[f64], b_label: &str, b: &[f64]) -> String {
    let series = |label: &str, values: &[f64]| Series {
        rounds: values.to_vec(),
        ..Series::new(label, label, label)
    };
    let mut rounds = Rounds::new(vec![series(a_label, a), series(b_label, b)]);
    rounds.add_named_ratio(format!("{b_label} / {a_label}"), b_label, a_label);
    rounds.table()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ab_table_lines_up_rounds_medians_and_ratios() {
        let t = ab_table(
            "pgbench TPS",
            &[40000.0, 44000.0, 42000.0],
            "ryw req/s",
            &[20000.0, 23100.0, 21000.0],
        );
        let lines: Vec<&str> = t.lines().collect();
        let fields = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            fields(0),
            "round pgbench TPS ryw req/s ryw req/s / pgbench TPS"
        );
        assert_eq!(fields(1), "1 40000 20000 0.50");
        assert_eq!(fields(2), "2 44000 23100 0.53");
        assert_eq!(fields(3), "3 42000 21000 0.50");
        assert_eq!(fields(4), "median 42000 21000 0.50");
        assert!(
            lines[..5]
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "columns line up:\n{t}"
        );
        assert!(
            lines[1].ends_with(" 0.50") && lines[1].starts_with("1 "),
            "numbers are right-aligned:\n{t}"
        );
        assert_eq!(lines[5], "median of the per-round ratios: 0.50 (3 rounds)");
    }

    #[test]
    fn the_ab_table_copes_with_uneven_series() {
        let t = ab_table("A", &[10.0, 20.0], "B", &[5.0]);
        assert!(t.lines().nth(2).unwrap().ends_with('-'), "{t}");
        assert!(t.contains("(1 rounds)"), "{t}");
        let empty = ab_table("A", &[], "B", &[]);
        assert_eq!(empty.lines().count(), 2, "{empty}");
    }

    fn series(name: &str, label: &str, rounds: &[f64]) -> Series {
        Series {
            rounds: rounds.to_vec(),
            ..Series::new(name, label, "what")
        }
    }

    #[test]
    fn a_b_c_rounds_with_a_compared_service_give_every_ratio_per_round_and_in_the_medians() {
        let mut r = Rounds::new(vec![
            series("pgbench", "pgbench TPS", &[90000.0, 80000.0, 100000.0]),
            series("ryw", "ryw req/s", &[45000.0, 44000.0, 50000.0]),
            series("minimal", "minimal req/s", &[50000.0, 56000.0, 50000.0]),
            series("before", "before req/s", &[40500.0, 44000.0, 55000.0]),
        ]);
        r.add_ratio("ryw", "minimal");
        r.add_ratio("minimal", "pgbench");
        r.add_ratio("ryw", "pgbench");
        r.add_ratio("before", "ryw");
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        let fields = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            fields(0),
            "round pgbench TPS ryw req/s minimal req/s before req/s \
             ryw/minimal minimal/pgbench ryw/pgbench before/ryw"
        );
        assert_eq!(fields(1), "1 90000 45000 50000 40500 0.90 0.56 0.50 0.90");
        assert_eq!(fields(2), "2 80000 44000 56000 44000 0.79 0.70 0.55 1.00");
        assert_eq!(fields(3), "3 100000 50000 50000 55000 1.00 0.50 0.50 1.10");
        // The medians of the figures, and the ratios of those medians.
        assert_eq!(
            fields(4),
            "median 90000 45000 50000 44000 0.90 0.56 0.50 0.98"
        );
        assert_eq!(
            lines[5],
            "median of the per-round ratios: ryw/minimal 0.90, minimal/pgbench 0.56, \
             ryw/pgbench 0.50, before/ryw 1.00 (3 rounds)"
        );
        assert!(
            lines[..5]
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "columns line up:\n{t}"
        );

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["series"][2]["name"], "minimal");
        assert_eq!(json["series"][2]["median"], 50000.0);
        assert_eq!(json["ratios"][3]["name"], "before/ryw");
        assert_eq!(
            (&json["ratios"][3]["of"], &json["ratios"][3]["to"]),
            (&serde_json::json!("before"), &serde_json::json!("ryw"))
        );
        assert_eq!(json["ratios"][3]["median"], 1.0);
        assert_eq!(json["ratios"][1]["rounds"][1], 0.7);
    }

    #[test]
    fn a_ratio_with_fewer_rounds_says_how_many() {
        let mut r = Rounds::new(vec![
            series("a", "A", &[10.0, 20.0]),
            series("b", "B", &[5.0, 10.0]),
            series("c", "C", &[1.0]),
        ]);
        r.add_ratio("b", "a");
        r.add_ratio("c", "a");
        r.add_ratio("nobody", "a");
        let t = r.table();
        assert_eq!(
            t.lines().last().unwrap(),
            "median of the per-round ratios: b/a 0.50 (2 rounds), c/a 0.10 (1 rounds)",
            "{t}"
        );
        assert_eq!(r.ratios[2].rounds, [None, None]);
        assert_eq!(r.len(), 2);
    }
}
