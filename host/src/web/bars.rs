//! Small inline SVG charts for the dashboard and the status pages: uptime bars (one per hour
//! or day of a rollup [`Report`]) and sparklines. Each chart is an `<svg role="img">` with an
//! `aria-label` saying in words what it shows, a `<title>` per bar (hover, screen readers),
//! and the figures also as text beside it: never colour alone.

use std::fmt::Write;

use super::escape;
use crate::engine::rollup::Report;
use crate::store::RollupSums;

/// Extra style the charts need (appended to the page's style).
pub const BARS_STYLE: &str = ".bars{display:block;width:100%;height:2.2rem}\
.bars .up{fill:#0b6b1d}.bars .part{fill:#7a5b00}.bars .down{fill:#b00020}.bars .none{fill:#d0d0d0}\
.spark{display:inline-block;width:12rem;height:2rem;vertical-align:middle}\
.spark polyline{fill:none;stroke:#1b1b1b;stroke-width:1.5}.spark circle{fill:#1b1b1b}.fig{margin:.2rem 0 1rem}";

/// A figure as text: `99.95 %` or `no data`.
pub fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "no data".to_owned(), |v| format!("{v:.2}\u{a0}%"))
}

/// The class of a bucket: all up, partly down, mostly down, or not known.
fn class(sums: &RollupSums) -> &'static str {
    match sums.uptime_percent() {
        None => "none",
        Some(u) if u >= 99.9 => "up",
        Some(u) if u >= 90.0 => "part",
        Some(_) => "down",
    }
}

/// Uptime bars for `report` (`what`: e.g. "90-day uptime"), with the total as text below.
/// `label` names each bucket from its start (a date, an hour).
pub fn uptime_bars(what: &str, report: &Report, label: &dyn Fn(i64) -> String) -> String {
    let n = report.buckets.len().max(1);
    let width = n * 4;
    let total = figure(report.total.uptime_percent());
    let mut svg = format!(
        "<svg class=\"bars\" role=\"img\" viewBox=\"0 0 {width} 20\" preserveAspectRatio=\"none\" \
         aria-label=\"{what}: {total}\">"
    );
    for (i, b) in report.buckets.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect class=\"{}\" x=\"{}\" y=\"0\" width=\"3\" height=\"20\"><title>{}: {} ({} beats)</title></rect>",
            class(&b.sums),
            i * 4,
            escape(&label(b.start_ms)),
            figure(b.sums.uptime_percent()),
            b.sums.beats,
        );
    }
    svg.push_str("</svg>");
    format!(
        "<figure class=\"fig\">{svg}<figcaption>{}: {total} \u{b7} {} beats \u{b7} {} refused \
         \u{b7} mean quality {}</figcaption></figure>",
        escape(what),
        report.total.beats,
        report.total.rejections,
        report
            .total
            .quality()
            .map_or_else(|| "no data".to_owned(), |q| format!("{q:.1}")),
    )
}

/// A sparkline of `values` (oldest first; `None` gaps are skipped), with `what` and the last,
/// lowest and highest values in words.
pub fn sparkline(what: &str, values: &[Option<f64>]) -> String {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let (Some(first), Some(last)) = (known.first(), known.last()) else {
        return format!("<p>{}: no data yet.</p>", escape(what));
    };
    let lo = known.iter().copied().fold(*first, f64::min);
    let hi = known.iter().copied().fold(*first, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = values.len().max(2) - 1;
    let mut points = String::new();
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v {
            let x = i as f64 * 100.0 / n as f64;
            let y = 19.0 - (v - lo) / span * 18.0;
            let _ = write!(points, "{x:.1},{y:.1} ");
        }
    }
    // A lone point draws no line: mark the last value with a dot as well.
    let dot = points
        .split_whitespace()
        .last()
        .and_then(|p| p.split_once(','))
        .map(|(x, y)| format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"1.5\"/>"))
        .unwrap_or_default();
    let words = format!("last {last:.1}, lowest {lo:.1}, highest {hi:.1}");
    format!(
        "<p>{what}: <svg class=\"spark\" role=\"img\" viewBox=\"0 0 100 20\" \
         preserveAspectRatio=\"none\" aria-label=\"{what}: {words}\"><polyline points=\"{}\"/>{dot}</svg> \
         {words}</p>",
        points.trim_end(),
        what = escape(what),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rollup::{Bucket, Window};

    #[test]
    fn bars_say_each_bucket_and_the_total_in_words() {
        let sums = |observed_ms, online_ms| RollupSums {
            observed_ms,
            online_ms,
            quality_sum: observed_ms * 5_000,
            beats: 2,
            ..RollupSums::default()
        };
        let buckets = vec![
            Bucket {
                start_ms: 0,
                sums: sums(100, 100),
            },
            Bucket {
                start_ms: 1,
                sums: sums(100, 50),
            },
            Bucket {
                start_ms: 2,
                sums: RollupSums::default(),
            },
        ];
        let mut total = RollupSums::default();
        for b in &buckets {
            total.add(&b.sums);
        }
        let report = Report {
            window: Window::Days(90),
            from_ms: 0,
            to_ms: 3,
            buckets,
            total,
        };
        let html = uptime_bars("90-day uptime", &report, &|ms| format!("day {ms}"));
        assert!(
            html.contains("aria-label=\"90-day uptime: 75.00\u{a0}%\""),
            "{html}"
        );
        assert!(html.contains("<rect class=\"up\""));
        assert!(html.contains("<rect class=\"down\""));
        assert!(html.contains("<title>day 2: no data (0 beats)</title>"));
        assert!(html.contains("mean quality 50.0"));
    }

    #[test]
    fn a_sparkline_skips_gaps_and_names_its_range() {
        let html = sparkline("Players", &[Some(1.0), None, Some(3.0)]);
        assert!(html.contains("points=\"0.0,19.0 100.0,1.0\""), "{html}");
        assert!(html.contains("last 3.0, lowest 1.0, highest 3.0"));
        assert_eq!(
            sparkline("Players", &[None]),
            "<p>Players: no data yet.</p>"
        );
    }
}
