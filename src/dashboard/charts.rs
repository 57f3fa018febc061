//! Line charts of the metrics history, drawn on the server as SVG (no script, nothing fetched).
//!
//! A [`Chart`] is plain numbers and labels that the overview template turns into `<polyline>`,
//! `<line>` and `<text>` elements (escaped like everything else): the last hour on the x axis,
//! zero to a rounded maximum on the y axis.

use beepmyphone_actors::history::Sample;

/// The drawing's size (the SVG's `viewBox`); it scales to its container.
pub const WIDTH: f64 = 600.0;
/// Its height.
pub const HEIGHT: f64 = 160.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 592.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 136.0;
/// The span drawn: the last hour.
pub const SPAN_MS: i64 = 3_600_000;

/// One line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its CSS class (`s1`, `s2`, `s3`: colour).
    pub class: &'static str,
    /// Its name in the legend.
    pub name: &'static str,
    /// The polyline's points.
    pub points: String,
    /// Its latest value, formatted.
    pub latest: String,
}

/// A tick: its position and label.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// The coordinate (y for value ticks, x for time ticks).
    pub at: f64,
    /// The label.
    pub label: String,
}

/// One chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Its caption.
    pub title: &'static str,
    /// The unit of its values.
    pub unit: &'static str,
    /// The lines.
    pub series: Vec<Series>,
    /// Value ticks (horizontal grid lines).
    pub y_ticks: Vec<Tick>,
    /// Time ticks.
    pub x_ticks: Vec<Tick>,
    /// Whether there is nothing to draw yet.
    pub empty: bool,
    /// The plot's edges, for the template's axis lines.
    pub left: f64,
    /// Right edge.
    pub right: f64,
    /// Bottom edge.
    pub bottom: f64,
}

impl Chart {
    /// A text alternative: each line's latest value.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .series
            .iter()
            .map(|s| format!("{} {}", s.name, s.latest))
            .collect();
        format!(
            "{} over the last hour; latest: {}",
            self.title,
            parts.join(", ")
        )
    }
}

/// The smallest of 1, 2, 5 × 10ⁿ at least `value` (the axis' top).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|v| *v >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A figure with at most two decimals, trailing zeros dropped.
pub fn figure(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

type Pick = fn(&Sample) -> Option<f64>;

/// A chart of `lines` (class, name, value) over `samples`, ending at `now_ms`.
pub fn chart(
    title: &'static str,
    unit: &'static str,
    samples: &[Sample],
    now_ms: i64,
    lines: &[(&'static str, &'static str, Pick)],
) -> Chart {
    let start = now_ms - SPAN_MS;
    let shown: Vec<&Sample> = samples.iter().filter(|s| s.at_ms >= start).collect();
    let max = shown
        .iter()
        .flat_map(|s| lines.iter().filter_map(move |(_, _, pick)| pick(s)))
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let x =
        |at: i64| LEFT + (at - start).clamp(0, SPAN_MS) as f64 / SPAN_MS as f64 * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v / top).clamp(0.0, 1.0) * (BOTTOM - TOP);
    let series = lines
        .iter()
        .map(|(class, name, pick)| {
            let points: Vec<String> = shown
                .iter()
                .filter_map(|s| pick(s).map(|v| format!("{:.1},{:.1}", x(s.at_ms), y(v))))
                .collect();
            let latest = shown
                .last()
                .and_then(|s| pick(s))
                .map_or_else(|| "–".to_owned(), |v| format!("{} {unit}", figure(v)));
            Series {
                class,
                name,
                points: points.join(" "),
                latest,
            }
        })
        .collect();
    let y_ticks = (0..=4)
        .map(|i| {
            let value = top * f64::from(i) / 4.0;
            Tick {
                at: y(value),
                label: figure(value),
            }
        })
        .collect();
    let x_ticks = [60, 45, 30, 15, 0]
        .iter()
        .map(|minutes| Tick {
            at: x(now_ms - minutes * 60_000),
            label: if *minutes == 0 {
                "now".to_owned()
            } else {
                format!("−{minutes} min")
            },
        })
        .collect();
    Chart {
        title,
        unit,
        series,
        y_ticks,
        x_ticks,
        empty: shown.is_empty(),
        left: LEFT,
        right: RIGHT,
        bottom: BOTTOM,
    }
}

/// The overview's four charts.
pub fn overview(samples: &[Sample], now_ms: i64) -> Vec<Chart> {
    vec![
        chart(
            "Throughput",
            "/s",
            samples,
            now_ms,
            &[
                ("s1", "published", |s| Some(s.published_per_second)),
                ("s2", "delivered", |s| Some(s.delivered_per_second)),
                ("s3", "acked", |s| Some(s.acked_per_second)),
            ],
        ),
        chart(
            "Publish to delivery latency",
            "ms",
            samples,
            now_ms,
            &[
                ("s1", "p50", |s| s.latency_p50_ms),
                ("s2", "p95", |s| s.latency_p95_ms),
                ("s3", "p99", |s| s.latency_p99_ms),
            ],
        ),
        chart(
            "Queue depth",
            "",
            samples,
            now_ms,
            &[
                ("s1", "waiting", |s| Some(s.queue_depth as f64)),
                ("s2", "in flight", |s| Some(s.in_flight as f64)),
            ],
        ),
        chart(
            "Sockets",
            "",
            samples,
            now_ms,
            &[("s1", "open", |s| Some(s.sockets as f64))],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, published: f64) -> Sample {
        Sample {
            at_ms,
            interval_ms: 30_000,
            published_per_second: published,
            delivered_per_second: published / 2.0,
            acked_per_second: 0.0,
            latency_p50_ms: None,
            latency_p95_ms: None,
            latency_p99_ms: None,
            queue_depth: 3,
            in_flight: 1,
            sockets: 2,
        }
    }

    #[test]
    fn axes_round_up_and_points_span_the_hour() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(figure(2.50), "2.5");
        assert_eq!(figure(40.0), "40");
        let now = 10 * SPAN_MS;
        let samples = [
            sample(now - 2 * SPAN_MS, 1_000.0), // older than the hour: not drawn, not scaled for
            sample(now - SPAN_MS, 10.0),
            sample(now, 40.0),
        ];
        let charts = overview(&samples, now);
        let throughput = &charts[0];
        assert!(!throughput.empty);
        assert_eq!(throughput.y_ticks.last().unwrap().label, "50");
        assert_eq!(throughput.series[0].points, "48.0,110.8 592.0,35.2");
        assert_eq!(throughput.series[0].latest, "40 /s");
        assert!(throughput.summary().contains("published 40 /s"));
        // No latency observed: no points, a dash.
        assert_eq!(charts[1].series[0].points, "");
        assert_eq!(charts[1].series[0].latest, "–");
        assert!(overview(&[], now)[0].empty);
    }
}
