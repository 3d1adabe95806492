//! The SVG plot: server CPU and loss against players, every ramp of the run on one chart,
//! and an earlier run's ramps as dashed "before" curves. Plain SVG text, no plotting crate.

use std::fmt::Write as _;

use super::Kind;

/// One curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Which server (picks the colour family).
    pub kind: Kind,
    /// Steps in order.
    pub points: Vec<Point>,
}

/// One step of a curve.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Players connected.
    pub players: f64,
    /// Server CPU, cores.
    pub cpu: Option<f64>,
    /// Loss, as a fraction.
    pub loss: f64,
}

const W: f64 = 960.0;
const H: f64 = 660.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 260.0;
const CPU_TOP: f64 = 50.0;
const CPU_BOTTOM: f64 = 300.0;
const LOSS_TOP: f64 = 360.0;
const LOSS_BOTTOM: f64 = 600.0;

const STRATA: [&str; 4] = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf"];
const JANUS: [&str; 2] = ["#ff7f0e", "#d62728"];

/// The smallest 1, 2 or 5 × 10^k at or above `x`.
fn nice_ceil(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|v| *v >= x * 0.999_999)
        .unwrap_or(10.0 * p)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Axes {
    x_max: f64,
    cpu_max: f64,
    loss_max: f64,
}

impl Axes {
    fn x(&self, players: f64) -> f64 {
        LEFT + players / self.x_max * (W - LEFT - RIGHT)
    }

    fn y_cpu(&self, cores: f64) -> f64 {
        CPU_BOTTOM - cores.min(self.cpu_max) / self.cpu_max * (CPU_BOTTOM - CPU_TOP)
    }

    fn y_loss(&self, loss_pct: f64) -> f64 {
        LOSS_BOTTOM - loss_pct.min(self.loss_max) / self.loss_max * (LOSS_BOTTOM - LOSS_TOP)
    }
}

/// The chart. `max_loss` (a fraction) is drawn as the pass line on the loss panel.
pub fn render(title: &str, after: &[Series], before: &[Series], max_loss: f64) -> String {
    let all = || after.iter().chain(before).flat_map(|s| &s.points);
    let x_max = nice_ceil(all().map(|p| p.players).fold(10.0, f64::max));
    let cpu_max = (all().filter_map(|p| p.cpu).fold(1.0, f64::max) * 2.0).ceil() / 2.0;
    // Loss panel: up to 4× the pass line, more if loss was higher, but never above 20 %:
    // past that the shape no longer matters, and points there are drawn at the top.
    let worst = all().map(|p| p.loss * 100.0).fold(0.0, f64::max);
    let loss_max = nice_ceil(worst.clamp(max_loss * 400.0, 20.0));
    let ax = Axes {
        x_max,
        cpu_max,
        loss_max,
    };
    let mut o = String::new();
    frame(&mut o, &ax, title, max_loss);
    let mut legend = 0usize;
    for (set, dashed) in [(before, true), (after, false)] {
        let (mut si, mut ji) = (0, 0);
        for s in set {
            let colour = match s.kind {
                Kind::Strata => {
                    si += 1;
                    STRATA[(si - 1) % STRATA.len()]
                }
                Kind::Janus => {
                    ji += 1;
                    JANUS[(ji - 1) % JANUS.len()]
                }
            };
            curve(&mut o, &ax, s, colour, dashed);
            legend_entry(&mut o, legend, s, colour, dashed);
            legend += 1;
        }
    }
    o.push_str("</svg>\n");
    o
}

/// Entry `n` of the legend, right of the panels: the curve's line style and its label.
fn legend_entry(o: &mut String, n: usize, s: &Series, colour: &str, dashed: bool) {
    let y = CPU_TOP + 8.0 + n as f64 * 20.0;
    let x = W - RIGHT + 20.0;
    let dash = if dashed {
        r#" stroke-dasharray="6,4" opacity="0.6""#
    } else {
        ""
    };
    let label = match dashed {
        true => format!("{} (before)", s.label),
        false => s.label.clone(),
    };
    let _ = writeln!(
        o,
        r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
        x + 28.0,
        x + 34.0,
        y + 4.0,
        escape(&label)
    );
}

/// The picture's frame: title, both panels with their axes, the x label and the pass line.
fn frame(o: &mut String, ax: &Axes, title: &str, max_loss: f64) {
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    panel(
        o,
        ax,
        CPU_TOP,
        CPU_BOTTOM,
        ax.cpu_max,
        "server CPU (cores)",
        |v| format!("{v:.1}"),
    );
    panel(o, ax, LOSS_TOP, LOSS_BOTTOM, ax.loss_max, "loss (%)", |v| {
        format!("{v}")
    });
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">players</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        LOSS_BOTTOM + 38.0
    );
    // The pass line.
    let y = ax.y_loss(max_loss * 100.0);
    let _ = writeln!(
        o,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#666" text-anchor="end">pass ≤ {:.1} %</text>"##,
        W - RIGHT,
        W - RIGHT - 4.0,
        y - 4.0,
        max_loss * 100.0
    );
}

/// Frame, grid and y ticks of one panel; x ticks along its bottom.
fn panel(
    o: &mut String,
    ax: &Axes,
    top: f64,
    bottom: f64,
    y_max: f64,
    name: &str,
    fmt: impl Fn(f64) -> String,
) {
    let right = W - RIGHT;
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        right - LEFT,
        bottom - top
    );
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let y = bottom - (bottom - top) * i as f64 / 5.0;
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            fmt(v)
        );
    }
    for i in 0..=5 {
        let v = ax.x_max * i as f64 / 5.0;
        let x = ax.x(v);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{v:.0}</text>"##,
            bottom + 16.0
        );
    }
    let _ = writeln!(
        o,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{name}</text>"#,
        LEFT - 48.0,
        (top + bottom) / 2.0
    );
}

/// One series on both panels.
fn curve(o: &mut String, ax: &Axes, s: &Series, colour: &str, dashed: bool) {
    let dash = if dashed {
        r#" stroke-dasharray="6,4" opacity="0.6""#
    } else {
        ""
    };
    let cpu: Vec<(f64, f64)> = s
        .points
        .iter()
        .filter_map(|p| Some((ax.x(p.players), ax.y_cpu(p.cpu?))))
        .collect();
    let loss: Vec<(f64, f64)> = s
        .points
        .iter()
        .map(|p| (ax.x(p.players), ax.y_loss(p.loss * 100.0)))
        .collect();
    for pts in [cpu, loss] {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for (x, y) in pts {
            let _ = writeln!(
                o,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"{dash}/>"#
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(3.0), 5.0);
        assert_eq!(nice_ceil(1000.0), 1000.0);
        assert_eq!(nice_ceil(1001.0), 2000.0);
        assert_eq!(nice_ceil(0.04), 0.05);
    }

    #[test]
    fn draws_every_series_and_escapes_labels() {
        let s = |label: &str, kind| Series {
            label: label.into(),
            kind,
            points: vec![
                Point {
                    players: 25.0,
                    cpu: Some(0.1),
                    loss: 0.0,
                },
                Point {
                    players: 400.0,
                    cpu: Some(1.0),
                    loss: 0.5,
                },
            ],
        };
        let svg = render(
            "a <b> & c",
            &[s("Strata", Kind::Strata), s("Janus", Kind::Janus)],
            &[s("Strata", Kind::Strata)],
            0.01,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        // Two panels per series.
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert!(svg.contains("Strata (before)"));
    }
}
