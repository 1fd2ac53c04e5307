//! The interleaved comparison: one row per round, the medians, the ratios.

use std::fmt::Write as _;

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
/// between rounds on a noisy machine).
pub fn ab_table(a_label: &str, a: &[f64], b_label: &str, b: &[f64]) -> String {
    let rounds = a.len().max(b.len());
    let cell = |x: Option<&f64>| x.map_or("-".to_string(), |v| format!("{v:.0}"));
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x != 0.0 => Some(y / x),
        _ => None,
    };
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut ratios = Vec::new();
    for i in 0..rounds {
        let r = ratio(a.get(i).copied(), b.get(i).copied());
        ratios.extend(r);
        rows.push([
            format!("{}", i + 1),
            cell(a.get(i)),
            cell(b.get(i)),
            r.map_or("-".into(), |r| format!("{r:.2}")),
        ]);
    }
    let (ma, mb) = (median(a), median(b));
    rows.push([
        "median".into(),
        cell(ma.as_ref()),
        cell(mb.as_ref()),
        ratio(ma, mb).map_or("-".into(), |r| format!("{r:.2}")),
    ]);
    let header = [
        "round".to_string(),
        a_label.to_string(),
        b_label.to_string(),
        format!("{b_label} / {a_label}"),
    ];
    let mut width = [0usize; 4];
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
    if let Some(m) = median(&ratios) {
        let _ = writeln!(
            s,
            "median of the per-round ratios: {m:.2} ({} rounds)",
            ratios.len()
        );
    }
    s
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
}
