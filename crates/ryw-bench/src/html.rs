//! The `--report DIR` output: `index.html` (tables and SVG charts drawn with
//! plotters' SVG backend, no script, no external file), `report.json` and
//! `history.jsonl` (the raw history, for `ryw bench check`).

use crate::BenchError;
use crate::report::BenchReport;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const W: u32 = 760;
const H: u32 = 340;

fn chart_err(chart: &'static str) -> impl Fn(String) -> BenchError {
    move |detail| BenchError::Chart { chart, detail }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar per strategy, values in percent; an optional dashed reference line.
fn bar_chart(
    title: &str,
    names: &[String],
    values_pct: &[f64],
    reference: Option<(f64, &str)>,
    chart: &'static str,
) -> Result<String, BenchError> {
    let err = chart_err(chart);
    let mut svg = String::new();
    // Names too wide to sit side by side (the demo with its proxy rows has
    // 16) stand upright under their bars, in a taller chart.
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(0) as u32;
    let upright = longest * 6 > (W - 80) / names.len().max(1) as u32;
    let label_area = if upright { longest * 6 + 16 } else { 36 };
    {
        let root = SVGBackend::with_string(&mut svg, (W, H + label_area - 36)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let top = values_pct
            .iter()
            .copied()
            .chain(reference.map(|r| r.0))
            .fold(0.0f64, f64::max);
        // Room above the tallest bar for its label.
        let top = if top <= 0.0 { 1.0 } else { top * 1.12 };
        // `a..b` segmented has a segment for `b` too: end at the last index.
        let n = names.len().max(2) as u32 - 1;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(label_area)
            .y_label_area_size(48)
            .build_cartesian_2d((0u32..n).into_segmented(), 0f64..top)
            .map_err(|e| err(e.to_string()))?;
        c.configure_mesh()
            .disable_x_mesh()
            .y_desc("%")
            .x_labels(names.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if !upright => {
                    names.get(*i as usize).cloned().unwrap_or_default()
                }
                _ => String::new(),
            })
            .draw()
            .map_err(|e| err(e.to_string()))?;
        if upright {
            // The mesh centres a label on its tick, rotated or not: these
            // hang from their ticks instead.
            let style = TextStyle::from(
                ("sans-serif", 12)
                    .into_font()
                    .transform(FontTransform::Rotate90),
            )
            .pos(text_anchor_start());
            for (i, name) in names.iter().enumerate() {
                let (x, y) = c.backend_coord(&(SegmentValue::CenterOf(i as u32), 0.0));
                root.draw(&Text::new(name.clone(), (x + 6, y + 8), style.clone()))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        c.draw_series(values_pct.iter().enumerate().map(|(i, &v)| {
            let i = i as u32;
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v),
                ],
                Palette99::pick(i as usize).filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))
        .map_err(|e| err(e.to_string()))?;
        c.draw_series(values_pct.iter().enumerate().map(|(i, &v)| {
            Text::new(
                format!("{v:.1}%"),
                (SegmentValue::CenterOf(i as u32), v),
                TextStyle::from(("sans-serif", 12).into_font()).pos(text_anchor_bottom()),
            )
        }))
        .map_err(|e| err(e.to_string()))?;
        if let Some((y, label)) = reference {
            let style = ShapeStyle {
                color: BLACK.mix(0.8),
                filled: false,
                stroke_width: 2,
            };
            c.draw_series(std::iter::once(PathElement::new(
                vec![(SegmentValue::Exact(0), y), (SegmentValue::Last, y)],
                style,
            )))
            .map_err(|e| err(e.to_string()))?
            .label(format!("{label}: {y:.1}%"))
            .legend(move |(x, yy)| PathElement::new(vec![(x, yy), (x + 16, yy)], style));
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// A rotated label hangs from its tick: it starts there.
fn text_anchor_start() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Left, VPos::Center)
}

fn text_anchor_bottom() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Bottom)
}

/// One line per strategy over categories `0..labels.len()`; `None` points are skipped.
fn line_chart(
    title: &'static str,
    x_desc: &str,
    y_desc: &str,
    labels: &[String],
    series: &[(String, Vec<Option<f64>>)],
    log_y: bool,
    legend: SeriesLabelPosition,
) -> Result<String, BenchError> {
    let err = chart_err(title);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H + 60)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let values = || series.iter().flat_map(|(_, v)| v.iter().flatten().copied());
        let top = values().fold(0.0f64, f64::max);
        let last = labels.len().saturating_sub(1).max(1) as f64;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .right_y_label_area_size(0);
        let fmt_x = |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        macro_rules! draw {
            ($c:expr) => {{
                let mut c = $c;
                c.configure_mesh()
                    .x_desc(x_desc)
                    .y_desc(y_desc)
                    .x_labels(labels.len())
                    .x_label_formatter(&fmt_x)
                    .draw()
                    .map_err(|e| err(e.to_string()))?;
                for (i, (name, points)) in series.iter().enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    let pts: Vec<(f64, f64)> = points
                        .iter()
                        .enumerate()
                        .filter_map(|(x, y)| y.map(|y| (x as f64, y)))
                        .collect();
                    c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                        .map_err(|e| err(e.to_string()))?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        });
                    c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| err(e.to_string()))?;
                }
                c.configure_series_labels()
                    .position(legend.clone())
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| err(e.to_string()))?;
            }};
        }
        if log_y {
            let low = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
            let low = if low.is_finite() { low / 2.0 } else { 0.01 };
            let top = if top > low { top * 2.0 } else { low * 10.0 };
            draw!(
                builder
                    .build_cartesian_2d(-0.2f64..last + 0.2, (low..top).log_scale())
                    .map_err(|e| err(e.to_string()))?
            );
        } else {
            let top = if top <= 0.0 { 1.0 } else { top * 1.15 };
            draw!(
                builder
                    .build_cartesian_2d(-0.2f64..last + 0.2, 0f64..top)
                    .map_err(|e| err(e.to_string()))?
            );
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Strategies that are Pareto-optimal for (fresh-read p99, leader share),
/// both lower-is-better, among those that kept read-your-writes: the
/// frontier a good default sits on. Sorted by p99.
pub fn frontier(report: &BenchReport) -> Vec<String> {
    let ok: Vec<_> = report
        .strategies
        .iter()
        .filter(|s| s.reads > 0 && s.ryw_violations == 0)
        .collect();
    let mut front: Vec<_> = ok
        .iter()
        .filter(|a| {
            !ok.iter().any(|b| {
                let (bx, by, ax, ay) = (
                    b.latency_ms.p99,
                    b.leader_share,
                    a.latency_ms.p99,
                    a.leader_share,
                );
                bx <= ax && by <= ay && (bx < ax || by < ay)
            })
        })
        .collect();
    front.sort_by(|a, b| a.latency_ms.p99.total_cmp(&b.latency_ms.p99));
    front.iter().map(|s| s.strategy.clone()).collect()
}

/// Leader share (y) against fresh-read p99 (x, log), one point per
/// strategy, the oracle as a line and the frontier of the strategies that
/// kept read-your-writes; strategies that did not are drawn in red.
fn tradeoff_chart(report: &BenchReport) -> Result<String, BenchError> {
    let err = chart_err("trade-off");
    let points: Vec<(&str, f64, f64, bool)> = report
        .strategies
        .iter()
        .filter(|s| s.reads > 0)
        .map(|s| {
            (
                s.strategy.as_str(),
                s.latency_ms.p99.max(0.01),
                100.0 * s.leader_share,
                s.ryw_violations == 0,
            )
        })
        .collect();
    let front = frontier(report);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H + 120)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > 0.0 {
            (lo / 2.0, hi * 2.5)
        } else {
            (0.1, 1000.0)
        };
        let mut c = ChartBuilder::on(&root)
            .caption(
                "leader share against fresh-read p99 (lower left is better)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            // Room above 100% for the legend, clear of the points.
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..128f64)
            .map_err(|e| err(e.to_string()))?;
        c.configure_mesh()
            .x_desc("fresh-read p99 (ms, log scale)")
            .y_desc("fresh reads served by the leader (%)")
            .x_labels(12)
            .x_label_formatter(&|x| {
                if *x >= 10.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.1}")
                }
            })
            .y_label_formatter(&|y| {
                if *y <= 100.0 {
                    format!("{y:.0}")
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| err(e.to_string()))?;
        if let Some(o) = &report.oracle {
            let y = 100.0 * o.share;
            let style = ShapeStyle {
                color: BLACK.mix(0.7),
                filled: false,
                stroke_width: 2,
            };
            c.draw_series(std::iter::once(PathElement::new(vec![(lo, y), (hi, y)], style)))
                .map_err(|e| err(e.to_string()))?
                .label(format!("oracle: {y:.1}% (no strategy that keeps read-your-writes without waiting does better)"))
                .legend(move |(x, yy)| PathElement::new(vec![(x, yy), (x + 16, yy)], style));
        }
        let front_pts: Vec<(f64, f64)> = front
            .iter()
            .filter_map(|name| points.iter().find(|p| p.0 == name))
            .map(|p| (p.1, p.2))
            .collect();
        if front_pts.len() > 1 {
            // A staircase: between two frontier points, better on one axis
            // means worse on the other.
            let mut stairs = Vec::new();
            for w in front_pts.windows(2) {
                stairs.push(w[0]);
                stairs.push((w[1].0, w[0].1));
            }
            stairs.push(*front_pts.last().expect("two or more"));
            let style = BLUE.mix(0.35).stroke_width(2);
            c.draw_series(std::iter::once(PathElement::new(stairs, style)))
                .map_err(|e| err(e.to_string()))?
                .label("frontier of the strategies that kept read-your-writes")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
        // Points first, then their labels, each placed (in pixels) where it
        // overlaps no label placed before it.
        let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
        let (xs, ys) = c.plotting_area().get_pixel_range();
        let mut labels = Vec::new();
        let mut by_x = points.clone();
        by_x.sort_by(|a, b| a.1.total_cmp(&b.1));
        // No label over a point either.
        for &(_, x, y, _) in &by_x {
            let (px, py) = c.backend_coord(&(x, y));
            placed.push((px - 6, py - 6, 12, 12));
        }
        for &(name, x, y, ok) in &by_x {
            let color = if ok { BLUE } else { RED };
            let size = if name == "hybrid" { 7 } else { 4 };
            c.draw_series(std::iter::once(Circle::new((x, y), size, color.filled())))
                .map_err(|e| err(e.to_string()))?;
            let text = if ok {
                name.to_string()
            } else {
                format!("{name} (stale reads)")
            };
            let (px, py) = c.backend_coord(&(x, y));
            let (w, h) = (7 * text.chars().count() as i32, 14);
            let overlaps = |(x0, y0): (i32, i32)| {
                placed
                    .iter()
                    .any(|&(a, b, aw, bh)| x0 < a + aw && a < x0 + w && y0 < b + bh && b < y0 + h)
            };
            let inside = |(x0, y0): (i32, i32)| {
                x0 >= xs.start && x0 + w <= xs.end && y0 >= ys.start && y0 + h <= ys.end
            };
            let candidates = [
                (8, -16),
                (8, 4),
                (-w - 8, -16),
                (-w - 8, 4),
                (8, -30),
                (8, 18),
                (8, -44),
                (8, 32),
            ];
            let at = candidates
                .into_iter()
                .map(|(dx, dy)| (px + dx, py + dy))
                .position(|p| inside(p) && !overlaps(p));
            let at = match candidates.get(at.unwrap_or(0)) {
                Some(&(dx, dy)) => (px + dx, py + dy),
                None => (px + 8, py - 16),
            };
            placed.push((at.0, at.1, w, h));
            if at != (px + 8, py - 16) {
                // Moved away from its point: a thin line shows whose it is.
                let end = if at.0 > px {
                    (at.0, at.1 + h / 2)
                } else {
                    (at.0 + w, at.1 + h / 2)
                };
                root.draw(&PathElement::new(vec![(px, py), end], BLACK.mix(0.3)))
                    .map_err(|e| err(e.to_string()))?;
            }
            labels.push((text, at, color));
        }
        for (text, at, color) in labels {
            root.draw(&Text::new(
                text,
                at,
                TextStyle::from(("sans-serif", 12).into_font()).color(&color),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// The SVG charts of the report: (title, svg).
pub fn charts(report: &BenchReport) -> Result<Vec<(String, String)>, BenchError> {
    let names: Vec<String> = report
        .strategies
        .iter()
        .map(|s| s.strategy.clone())
        .collect();
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(out);
    }
    let stale: Vec<f64> = report
        .strategies
        .iter()
        .map(|s| 100.0 * s.stale_rate)
        .collect();
    out.push((
        "Stale fresh reads (RYW violations) per strategy".to_string(),
        bar_chart("stale-read rate (%)", &names, &stale, None, "stale rate")?,
    ));

    let leader: Vec<f64> = report
        .strategies
        .iter()
        .map(|s| 100.0 * s.leader_share)
        .collect();
    let oracle = report.oracle.as_ref().map(|o| (100.0 * o.share, "oracle"));
    out.push((
        "Fresh reads served by the leader".to_string(),
        bar_chart("leader share (%)", &names, &leader, oracle, "leader share")?,
    ));
    out.push((
        "The trade-off: leader share against fresh-read p99, one point per strategy".to_string(),
        tradeoff_chart(report)?,
    ));

    if let Some(first) = report.strategies.first() {
        let labels: Vec<String> = first.by_gap.iter().map(|b| b.label.clone()).collect();
        let series: Vec<(String, Vec<Option<f64>>)> = report
            .strategies
            .iter()
            .map(|s| {
                (
                    s.strategy.clone(),
                    s.by_gap
                        .iter()
                        .map(|b| (b.reads > 0).then(|| 100.0 * b.stale as f64 / b.reads as f64))
                        .collect(),
                )
            })
            .collect();
        out.push((
            "Stale-read rate by time since the user's own write (think time)".to_string(),
            line_chart(
                "stale-read rate by time since the write",
                "time from the write's acknowledgement to the read",
                "stale %",
                &labels,
                &series,
                false,
                SeriesLabelPosition::UpperRight,
            )?,
        ));

        let labels: Vec<String> = first
            .latency_cdf
            .iter()
            .map(|(p, _)| format!("p{p}"))
            .collect();
        let series: Vec<(String, Vec<Option<f64>>)> = report
            .strategies
            .iter()
            .filter(|s| !s.latency_cdf.is_empty())
            .map(|s| {
                (
                    s.strategy.clone(),
                    s.latency_cdf.iter().map(|(_, ms)| Some(*ms)).collect(),
                )
            })
            .collect();
        if !series.is_empty() {
            out.push((
                "Fresh-read latency distribution".to_string(),
                line_chart(
                    "fresh-read latency by percentile",
                    "percentile",
                    "ms (log)",
                    &labels,
                    &series,
                    true,
                    SeriesLabelPosition::UpperLeft,
                )?,
            ));
        }
    }
    Ok(out)
}

/// The whole HTML page.
pub fn html_page(report: &BenchReport) -> Result<String, BenchError> {
    let mut h = String::new();
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ryw bench report</title>\n<style>\nbody{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\ntable{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\nth{background:#f3f3f3}.bad{color:#b00020;font-weight:bold}.note{color:#555;font-size:90%}figure{margin:1.5em 0}\n</style></head><body>\n<h1>ryw bench report</h1>\n");
    let _ = writeln!(
        h,
        "<p>{} operations over {:.1} s{}; targets: {}; think: {}; load: {}; token echoed: {}.</p>",
        report.operations,
        report.elapsed_s,
        if report.interrupted {
            " (<b>stopped early</b>)"
        } else {
            ""
        },
        if report.targets.is_empty() {
            "(offline check)".to_string()
        } else {
            esc(&report.targets.join(", "))
        },
        esc(report.think.as_deref().unwrap_or("-")),
        esc(report.load.as_deref().unwrap_or("-")),
        report
            .send_token
            .map_or("-", |t| if t { "yes" } else { "no" }),
    );
    h.push_str("<h2>Per strategy</h2>\n<table><tr><th>strategy</th><th>users</th><th>fresh reads</th><th>reads/s</th><th>RYW violations</th><th>stale %</th><th>monotonic violations</th><th>leader share</th><th>oracle share</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>waits</th><th>wasted waits</th><th>mean wait ms</th><th>errors</th></tr>\n");
    for s in &report.strategies {
        let bad = |n: u64| {
            if n > 0 {
                format!("<td class=\"bad\">{n}</td>")
            } else {
                format!("<td>{n}</td>")
            }
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td>{}<td>{}</td>{}<td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
            esc(&s.strategy),
            s.users,
            s.reads,
            s.reads_per_s,
            bad(s.ryw_violations),
            pct(s.stale_rate),
            bad(s.monotonic_violations),
            pct(s.leader_share),
            s.oracle_share.map_or("-".into(), pct),
            s.latency_ms.p50,
            s.latency_ms.p95,
            s.latency_ms.p99,
            s.waits,
            s.wasted_waits,
            s.mean_wait_ms,
            s.errors
        );
    }
    h.push_str("</table>\n");
    match &report.oracle {
        Some(o) => {
            let _ = writeln!(
                h,
                "<p><b>Oracle:</b> {} of the fresh reads ({} of {}) were sent less than {:.1} ms after the user's own acknowledged write, before any follower could have applied it. No strategy that keeps read-your-writes without waiting can serve fewer than that from the leader on this run. <span class=\"note\">(delay: {})</span></p>",
                pct(o.share),
                o.forced,
                o.fresh_reads,
                o.delay_ms,
                esc(&o.source)
            );
        }
        None => h.push_str(
            "<p><b>Oracle:</b> unknown (no follower lag samples and no cluster.json delays).</p>\n",
        ),
    }
    for (title, svg) in charts(report)? {
        let _ = writeln!(
            h,
            "<figure><figcaption><b>{}</b></figcaption>\n{}\n</figure>",
            esc(&title),
            svg
        );
    }
    if !report.followers.is_empty() {
        h.push_str("<h2>Followers' replication lag meanwhile</h2>\n<table><tr><th>follower</th><th>configured delay</th><th>samples</th><th>min ms</th><th>median ms</th><th>max ms</th><th>in rotation</th></tr>\n");
        for f in &report.followers {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
                esc(&f.node),
                f.configured_delay_ms
                    .map_or("-".into(), |d| format!("{d} ms")),
                f.samples,
                f.min_ms,
                f.median_ms,
                f.max_ms,
                f.in_rotation_share.map_or("-".into(), pct)
            );
        }
        h.push_str("</table>\n");
    }
    let _ = writeln!(
        h,
        "<h2>Violations</h2>\n<p>{} read-your-writes, {} monotonic-read.</p>",
        report.ryw_violations, report.monotonic_violations
    );
    if !report.violations.is_empty() {
        h.push_str("<table><tr><th>rule</th><th>op #</th><th>strategy</th><th>read</th><th>user</th><th>client</th><th>sent (s)</th><th>version</th><th>expected ≥</th><th>served by</th></tr>\n");
        for v in &report.violations {
            let _ = writeln!(
                h,
                "<tr><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                v.kind,
                v.op,
                esc(&v.strategy),
                v.read.as_str(),
                esc(&v.user),
                esc(&v.client),
                v.sent_us as f64 / 1e6,
                v.version
                    .map_or_else(|| "nothing (404)".to_string(), |v| v.to_string()),
                v.expected,
                esc(v.served_by.as_deref().unwrap_or("?"))
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<p class=\"note\">A wasted wait is a fresh read that waited for a follower (<code>X-Waited-Ms</code> &gt; 0) and was served by the leader anyway. RYW violation: a fresh read by a user returns a version lower than the highest version of that user's writes acknowledged before the read was sent. Monotonic-read violation: a read by one client returns a version lower than a read by the same client that completed before it was sent. A read answered 404 (no account, no profile: the follower had not replayed its creation) found nothing, lower than every version. Both judged from the versions and the client's clock only, never from served_by.</p>\n</body></html>\n");
    Ok(h)
}

/// Writes `index.html`, `report.json` and `history.jsonl` into `dir`
/// (created if missing). Returns the path of `index.html`.
pub fn write_report_dir(report: &BenchReport, dir: &Path) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(dir).map_err(BenchError::io("creating", dir))?;
    let index = dir.join("index.html");
    std::fs::write(&index, html_page(report)?).map_err(BenchError::io("writing", &index))?;
    let json = dir.join("report.json");
    std::fs::write(&json, report.to_json()?).map_err(BenchError::io("writing", &json))?;
    report.history.save(&dir.join("history.jsonl"))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{LagSample, Op, OpKind, RunHistory};
    use crate::report::ReportMeta;

    fn report() -> BenchReport {
        let mut ops = Vec::new();
        for (s, strategy) in ["leader", "legacy", "sticky:2s"].iter().enumerate() {
            for i in 0..20u64 {
                let user = format!("{strategy}-u");
                let t = i * 100_000;
                let op = |kind, sent: u64, recv: u64, version, served: &str| Op {
                    user: user.clone(),
                    client: user.clone(),
                    strategy: strategy.to_string(),
                    kind,
                    sent_us: sent,
                    recv_us: recv,
                    status: 200,
                    version: Some(version),
                    served_by: Some(served.into()),
                    waited_ms: None,
                    problem: None,
                };
                ops.push(op(OpKind::Pay, t, t + 2000, i + 1, "leader"));
                let stale = s == 1 && i % 3 == 0;
                ops.push(op(
                    OpKind::Balance,
                    t + 3000 + i * 1000,
                    t + 4000 + i * 1500,
                    if stale { i } else { i + 1 },
                    if s == 0 { "leader" } else { "follower1" },
                ));
            }
        }
        let lag = (0..8)
            .map(|i| LagSample {
                t_us: i * 250_000,
                node: "follower1".into(),
                lag_ms: Some(10.0 + i as f64),
                lag_bytes: None,
                in_rotation: Some(true),
            })
            .collect();
        BenchReport::from_history(
            RunHistory { ops, lag },
            ReportMeta {
                strategy_order: vec!["leader".into(), "legacy".into(), "sticky:2s".into()],
                ..ReportMeta::default()
            },
        )
    }

    #[test]
    fn the_report_folder_holds_a_page_with_five_charts_the_json_and_the_history() {
        let r = report();
        assert_eq!(r.strategies[1].ryw_violations, 7);
        let dir = tempfile::tempdir().unwrap();
        let index = write_report_dir(&r, &dir.path().join("out")).unwrap();
        let page = std::fs::read_to_string(&index).unwrap();
        assert_eq!(page.matches("<svg").count(), 5, "five charts");
        assert!(page.contains("leader share against fresh-read p99"));
        assert!(
            page.contains("legacy (stale reads)"),
            "legacy drawn as stale"
        );
        assert!(page.contains("sticky:2s") && page.contains("Oracle:"));
        assert!(page.contains("<td class=\"bad\">7</td>"));
        let back = RunHistory::read(&dir.path().join("out/history.jsonl")).unwrap();
        assert_eq!(back, r.history);
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["strategies"][1]["ryw_violations"], 7);
    }

    #[test]
    fn bar_names_stand_upright_only_when_too_many_to_sit_side_by_side() {
        let few: Vec<String> = ["leader", "legacy", "per-read-check"]
            .map(String::from)
            .to_vec();
        let svg = bar_chart("t", &few, &[1.0, 2.0, 3.0], None, "t").unwrap();
        assert!(!svg.contains("rotate(90,"), "three names fit");
        assert!(svg.contains("per-read-check"));
        let many: Vec<String> = (0..16)
            .map(|i| format!("proxy/per-read-check{i}"))
            .collect();
        let svg = bar_chart("t", &many, &[1.0; 16], None, "t").unwrap();
        assert_eq!(svg.matches("rotate(90,").count(), 16, "every name upright");
        assert!(svg.contains("proxy/per-read-check15"));
    }

    #[test]
    fn the_frontier_holds_the_strategies_no_correct_one_beats_on_both_axes() {
        let mut r = report();
        let template = r.strategies[0].clone();
        let point = |name: &str, p99: f64, leader: f64, stale: u64| {
            let mut s = template.clone();
            s.strategy = name.into();
            s.latency_ms.p99 = p99;
            s.leader_share = leader;
            s.ryw_violations = stale;
            s
        };
        r.strategies = vec![
            point("leader", 0.7, 1.0, 0),
            point("legacy", 0.6, 0.0, 30),
            point("causal:0ms", 0.7, 0.12, 0),
            point("causal:20ms", 20.5, 0.10, 0),
            point("hybrid", 15.0, 0.10, 0),
            point("causal:200ms", 99.0, 0.0, 0),
            point("per-read-check", 1.1, 0.27, 0),
        ];
        assert_eq!(
            frontier(&r),
            ["causal:0ms", "hybrid", "causal:200ms"],
            "legacy is stale; leader, per-read-check and causal:20ms are beaten"
        );
        let page = html_page(&r).unwrap();
        assert!(page.contains("frontier of the strategies"));
    }

    #[test]
    fn an_empty_report_still_renders() {
        let r = BenchReport::from_history(RunHistory::default(), ReportMeta::default());
        let page = html_page(&r).unwrap();
        assert!(page.contains("0 read-your-writes"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
