//! Server-side SVG line charts: the dashboard's curves are drawn here from already downsampled series, so the browser
//! needs no charting library. Labels are escaped; the plot's data range rides along as `data-*` attributes so the live
//! script can place a point that arrives over SSE before the next redraw.

use std::fmt::Write;

use crate::core::metric::Point;

/// The line colours, in legend order (a colour-blind friendly palette).
pub const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend text (user-visible: escaped when drawn).
    pub label: String,
    /// A stable key for the live script (`train_loss`, `val_acc`, or a session id on the compare page).
    pub key: String,
    /// Ordered by x; at most about a thousand points (see `core::metric::downsample`).
    pub points: Vec<Point>,
    /// Dashed lines tell a second metric of the same run apart (validation next to training).
    pub dashed: bool,
}

/// A chart to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub width: u32,
    pub height: u32,
    /// Fix the y range (accuracies: 0..1) instead of fitting it to the data.
    pub y_range: Option<(f64, f64)>,
    /// The x values are whole numbers (epochs, steps): ticks fall on them only.
    pub integer_x: bool,
    /// A logarithmic y axis (values of zero or less are left out: they have no place on it).
    pub log_y: bool,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            series: Vec::new(),
            width: 640,
            height: 300,
            y_range: None,
            integer_x: matches!(x_label, "epoch" | "step"),
            log_y: false,
        }
    }

    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
}

const LEFT: f64 = 58.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 44.0;
/// About this many steps on the y axis.
const Y_TICKS: usize = 5;

/// The title's baseline; the legend's first row shares it.
const TITLE_Y: f64 = 20.0;
/// Legend text is cut to this many characters.
const LEGEND_CHARS: usize = 40;
/// Generous widths per character (11 px legend text, 14 px bold title), so estimated boxes never underlap the text.
const LEGEND_CHAR_W: f64 = 6.6;
const TITLE_CHAR_W: f64 = 8.6;
/// The colour sample and the space before the text.
const LEGEND_SAMPLE: f64 = 22.0;
const LEGEND_GAP: f64 = 14.0;
const LEGEND_ROW: f64 = 16.0;

/// Where one legend entry goes: its left edge, its text's baseline and its width (sample and text).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegendSlot {
    pub x: f64,
    pub y: f64,
    pub width: f64,
}

/// The legend text of a series label.
fn legend_label(label: &str) -> String {
    label.chars().take(LEGEND_CHARS).collect()
}

/// Lays the legend out in rows, left to right: the first row after the title, then as many rows below it as the
/// entries need, each entry whole on one row and inside the chart. Returns the slots (in series order) and the number
/// of rows (at least one); the plot moves down by the rows beyond the first.
pub fn legend_layout(title: &str, labels: &[String], width: f64) -> (Vec<LegendSlot>, usize) {
    let right = width - RIGHT;
    let title_end = LEFT + title.chars().count() as f64 * TITLE_CHAR_W + LEGEND_GAP;
    let (mut x, mut row) = (title_end, 0usize);
    let mut slots = Vec::with_capacity(labels.len());
    for label in labels {
        let w = LEGEND_SAMPLE + legend_label(label).chars().count() as f64 * LEGEND_CHAR_W;
        if x + w > right && x > LEFT {
            row += 1;
            x = LEFT;
        }
        slots.push(LegendSlot { x, y: TITLE_Y + row as f64 * LEGEND_ROW, width: w });
        x += w + LEGEND_GAP;
    }
    (slots, row + 1)
}

/// Escapes text for XML/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step for `[lo, hi]`: about `target` steps of 1, 2, 2.5 or 5 times a power of ten. On an `integer`
/// axis (epochs, steps) the step is a whole number: 1, 2, 5, 10, 20, ...
pub fn tick_step(lo: f64, hi: f64, target: usize, integer: bool) -> f64 {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return 1.0;
    }
    let raw = (hi - lo) / target.max(1) as f64;
    if integer && raw <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let nice: &[f64] = if integer { &[1.0, 2.0, 5.0, 10.0] } else { &[1.0, 2.0, 2.5, 5.0, 10.0] };
    nice.iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

/// "Nice" tick positions covering `[lo, hi]`: about `target` steps of 1, 2 or 5 times a power of ten.
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    ticks_by(lo, hi, tick_step(lo, hi, target, false))
}

/// The multiples of `step` within `[lo, hi]`.
fn ticks_by(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && step > 0.0) || hi <= lo {
        return vec![lo];
    }
    let first = (lo / step).ceil() * step;
    let mut out = Vec::new();
    let mut v = first;
    while v <= hi + step * 1e-9 && out.len() < 50 {
        // Snap tiny float noise (0.30000000000000004) so labels read cleanly.
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v = first + step * out.len() as f64;
    }
    out
}

/// A short label for a tick: 1.5k, 20k, 1.2M for large values, as few decimals as the step needs otherwise.
pub fn tick_label(v: f64, step: f64) -> String {
    let a = v.abs();
    if a >= 1e6 && step >= 1e5 {
        return trim(format!("{:.1}", v / 1e6)) + "M";
    }
    if a >= 1e4 && step >= 1e3 {
        return trim(format!("{:.1}", v / 1e3)) + "k";
    }
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize + 1 }.min(6);
    trim(format!("{v:.decimals$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// The data range to draw: every point of every series, padded a little in y, the bottom on a y tick (so the axis
/// starts at a labelled value); and the y tick step. `None` without points.
fn bounds(chart: &Chart) -> Option<(f64, f64, f64, f64, f64)> {
    let mut pts = chart.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.x.is_finite() && p.y.is_finite());
    let first = pts.next()?;
    let (mut x0, mut x1, mut y0, mut y1) = (first.x, first.x, first.y, first.y);
    for p in pts {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    if let Some((lo, hi)) = chart.y_range {
        y0 = y0.min(lo);
        y1 = y1.max(hi);
    } else {
        let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { y0.abs().max(1.0) * 0.1 };
        y0 = if y0 >= 0.0 && y0 - pad < 0.0 { 0.0 } else { y0 - pad };
        y1 += pad;
    }
    let ystep = tick_step(y0, y1, Y_TICKS, false);
    if chart.y_range.is_none() {
        y0 = (y0 / ystep).floor() * ystep;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    Some((x0, x1, y0, y1, ystep))
}

/// A tick label on a log axis at `v` = log10 of the value: the value itself, three significant digits at most.
pub fn log_tick_label(v: f64) -> String {
    let value = 10f64.powf(v);
    if !value.is_finite() {
        return String::new();
    }
    // Decided on the exponent, with a little slack: 10^-3 computes as 0.000999...
    if !(-3.0 - 1e-9..5.0).contains(&v) {
        return format!("{value:.0e}");
    }
    let decimals = (2 - (v + 1e-9).floor() as i64).clamp(0, 6) as usize;
    trim(format!("{value:.decimals$}"))
}

/// Draws the chart as a standalone `<svg>` element.
pub fn render(chart: &Chart) -> String {
    if !chart.log_y {
        return draw(chart, false);
    }
    // On a log axis the plot is drawn in log10 of the values; the ticks say the values.
    let mut log = chart.clone();
    log.y_range = None;
    log.y_label = format!("{} (log scale)", chart.y_label);
    for s in &mut log.series {
        s.points =
            s.points.iter().filter(|p| p.y > 0.0 && p.y.is_finite()).map(|p| Point::new(p.x, p.y.log10())).collect();
    }
    draw(&log, true)
}

fn draw(chart: &Chart, log_y: bool) -> String {
    let labels: Vec<String> = chart.series.iter().map(|s| s.label.clone()).collect();
    let (legend, rows) = legend_layout(&chart.title, &labels, chart.width as f64);
    // Legend rows beyond the first push the plot down; the chart grows by as much, so the plot keeps its size.
    let extra = (rows - 1) as f64 * LEGEND_ROW;
    let top = TOP + extra;
    let (w, h) = (chart.width as f64, chart.height as f64 + extra);
    let (pw, ph) = (w - LEFT - RIGHT, h - top - BOTTOM);
    let mut svg = String::with_capacity(4096 + chart.series.iter().map(|s| s.points.len() * 16).sum::<usize>());
    let range = bounds(chart);
    let (x0, x1, y0, y1, ystep) = range.unwrap_or((0.0, 1.0, 0.0, 1.0, 0.2));
    let _ = write!(
        svg,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}" data-x0="{x0}" data-x1="{x1}" data-y0="{y0}" data-y1="{y1}" data-left="{LEFT}" data-top="{top}" data-pw="{pw}" data-ph="{ph}"{log}>"#,
        title = escape(&chart.title),
        log = if log_y { r#" data-log-y="1""# } else { "" },
    );
    let _ = write!(
        svg,
        r##"<text class="title" x="{LEFT}" y="20" font-size="14" font-weight="600" fill="#1f2328">{}</text>"##,
        escape(&chart.title)
    );
    // A clip id unique per chart title on one page (ids are global to the HTML document).
    let clip: String = std::iter::once("clip-".to_string())
        .chain(chart.title.chars().filter(|c| c.is_ascii_alphanumeric()).take(24).map(String::from))
        .chain(std::iter::once(format!("-{}", chart.series.len())))
        .collect();
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;

    // Grid and tick labels.
    let yt = ticks_by(y0, y1, ystep);
    svg.push_str(r##"<g class="grid" stroke="#e5e7eb" stroke-width="1">"##);
    for &t in &yt {
        let y = sy(t);
        let _ = write!(svg, r#"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/>"#, LEFT + pw);
    }
    svg.push_str("</g>");
    svg.push_str(r##"<g class="ticks" font-size="11" fill="#57606a">"##);
    for &t in &yt {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            sy(t) + 4.0,
            escape(&if log_y { log_tick_label(t) } else { tick_label(t, ystep) })
        );
    }
    let xstep = tick_step(x0, x1, 6, chart.integer_x);
    let xt = ticks_by(x0, x1, xstep);
    for &t in &xt {
        let x = sx(t);
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + ph + 16.0,
            escape(&tick_label(t, xstep))
        );
    }
    svg.push_str("</g>");
    // Axes and their names.
    let _ = write!(
        svg,
        r##"<path class="axes" d="M{LEFT} {top}V{:.1}H{:.1}" fill="none" stroke="#8c959f" stroke-width="1"/>"##,
        top + ph,
        LEFT + pw
    );
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#57606a" text-anchor="middle">{}</text>"##,
        LEFT + pw / 2.0,
        h - 8.0,
        escape(&chart.x_label)
    );
    let _ = write!(
        svg,
        r##"<text transform="translate(14 {:.1}) rotate(-90)" font-size="11" fill="#57606a" text-anchor="middle">{}</text>"##,
        top + ph / 2.0,
        escape(&chart.y_label)
    );

    if range.is_none() {
        let _ = write!(
            svg,
            r##"<text class="empty" x="{:.1}" y="{:.1}" font-size="12" fill="#8c959f" text-anchor="middle">no data yet</text>"##,
            LEFT + pw / 2.0,
            top + ph / 2.0
        );
    }

    // The lines (clipped to the plot so a live point out of range cannot spill over the axes).
    let _ = write!(
        svg,
        r#"<clipPath id="{clip}"><rect x="{LEFT}" y="{top}" width="{pw}" height="{ph}"/></clipPath><g clip-path="url(#{clip})">"#
    );
    for (i, s) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if s.dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(
            svg,
            r#"<polyline class="line" data-key="{}" fill="none" stroke="{color}" stroke-width="1.6" stroke-linejoin="round"{dash} points=""#,
            escape(&s.key)
        );
        for (j, p) in s.points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).enumerate() {
            if j > 0 {
                svg.push(' ');
            }
            let _ = write!(svg, "{:.1},{:.1}", sx(p.x), sy(p.y));
        }
        svg.push_str(r#""/>"#);
        // Few points (per-epoch metrics): mark them so a single epoch is visible at all.
        if s.points.len() <= 60 {
            for p in s.points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()) {
                let _ = write!(
                    svg,
                    r#"<circle class="dot" data-key="{}" cx="{:.1}" cy="{:.1}" r="2.6" fill="{color}"/>"#,
                    escape(&s.key),
                    sx(p.x),
                    sy(p.y)
                );
            }
        }
    }
    svg.push_str("</g>");

    // Legend: one entry per series, in rows after the title (see `legend_layout`).
    svg.push_str(r##"<g class="legend" font-size="11" fill="#1f2328">"##);
    for (i, (s, slot)) in chart.series.iter().zip(&legend).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if s.dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(
            svg,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            slot.x,
            slot.x + 16.0,
            slot.y - 4.0,
            slot.y - 4.0,
            slot.x + 20.0,
            slot.y,
            escape(&legend_label(&s.label))
        );
    }
    svg.push_str("</g></svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(label: &str, n: usize) -> Series {
        Series {
            label: label.to_string(),
            key: label.to_string(),
            points: (0..n).map(|i| Point::new(i as f64, 1.0 / (1.0 + i as f64))).collect(),
            dashed: false,
        }
    }

    fn polyline_points(svg: &str) -> Vec<usize> {
        svg.match_indices(r#"points=""#)
            .map(|(i, m)| {
                let rest = &svg[i + m.len()..];
                let end = rest.find('"').unwrap();
                rest[..end].split(' ').filter(|s| !s.is_empty()).count()
            })
            .collect()
    }

    #[test]
    fn draws_every_series_with_its_points_and_a_legend() {
        let chart = Chart::new("loss", "step", "loss").series(line("train", 500)).series(line("valid", 20));
        let svg = render(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(polyline_points(&svg), vec![500, 20]);
        assert!(svg.contains(">train</text>") && svg.contains(">valid</text>"));
        assert_eq!(svg.matches(r#"class="dot""#).count(), 20, "few-point lines get markers");
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
    }

    #[test]
    fn labels_are_escaped() {
        let hostile = r#"<script>alert("x")</script> & 'q'"#;
        let chart = Chart::new(hostile, hostile, hostile).series(Series {
            label: hostile.into(),
            key: hostile.into(),
            points: vec![Point::new(0.0, 1.0)],
            dashed: true,
        });
        let svg = render(&chart);
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let svg = render(&Chart::new("acc", "epoch", "accuracy"));
        assert!(svg.contains("no data yet"));
        assert_eq!(polyline_points(&svg), Vec::<usize>::new());
    }

    #[test]
    fn points_stay_inside_the_plot() {
        let mut s = line("a", 100);
        s.points[50].y = 1e9;
        let svg = render(&Chart::new("t", "x", "y").series(s));
        let start = svg.find(r#"points=""#).unwrap() + 8;
        let pts = &svg[start..start + svg[start..].find('"').unwrap()];
        for pair in pts.split(' ') {
            let (x, y) = pair.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((LEFT - 0.1..=640.0 - RIGHT + 0.1).contains(&x), "{x}");
            assert!((TOP - 0.1..=300.0 - BOTTOM + 0.1).contains(&y), "{y}");
        }
    }

    #[test]
    fn the_legend_wraps_so_every_entry_is_visible_and_nothing_overlaps() {
        for n in 1..=14 {
            for stem in ["alice/synth/", "a-very-long-user-name/a-long-dataset-name/"] {
                let labels: Vec<String> = (1..=n).map(|i| format!("{stem}{i} baseline_cnn")).collect();
                let title = "Validation accuracy";
                let (slots, rows) = legend_layout(title, &labels, 640.0);
                assert_eq!(slots.len(), n);
                let title_end = LEFT + title.len() as f64 * TITLE_CHAR_W;
                for (i, a) in slots.iter().enumerate() {
                    assert!(a.x >= LEFT && a.x + a.width <= 640.0 - RIGHT, "{n} entries: {i} at {a:?} is cut off");
                    if a.y == TITLE_Y {
                        assert!(a.x >= title_end, "{n} entries: {i} at {a:?} overlaps the title");
                    }
                    for b in &slots[i + 1..] {
                        assert!(a.y != b.y || a.x + a.width <= b.x || b.x + b.width <= a.x, "{a:?} overlaps {b:?}");
                    }
                }
                let last_row = slots.iter().map(|s| s.y).fold(0.0, f64::max);
                assert_eq!(last_row, TITLE_Y + (rows - 1) as f64 * LEGEND_ROW);
                // The plot starts below the last row.
                let chart = Chart {
                    series: labels.iter().map(|l| line(l, 3)).collect(),
                    ..Chart::new(title, "epoch", "accuracy")
                };
                let svg = render(&chart);
                let top: f64 = svg.split("data-top=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
                assert!(top >= last_row + 12.0, "{n} entries: the plot at {top} under a legend row at {last_row}");
                let legend = svg.split("class=\"legend\"").nth(1).unwrap();
                assert_eq!(legend.matches("<text x=").count(), n);
                for x in legend.split("<text x=\"").skip(1).map(|t| t.split('"').next().unwrap()) {
                    assert!(x.parse::<f64>().unwrap() >= LEFT, "{n} entries: a legend text at x = {x}");
                }
            }
        }
        // Two short series share the title's row.
        let (_, rows) = legend_layout("Loss", &["train loss".into(), "val loss (epoch end)".into()], 640.0);
        assert_eq!(rows, 1);
    }

    #[test]
    fn epoch_ticks_are_whole_numbers_and_the_y_axis_starts_on_a_tick() {
        for epochs in 1..=40 {
            let mut chart = Chart::new("Accuracy", "epoch", "accuracy").series(line("val", epochs));
            chart.series[0].points.iter_mut().for_each(|p| p.x += 1.0);
            let svg = render(&chart);
            let axis_y = format!("{:.1}", 300.0 - BOTTOM + 16.0);
            let marker = format!("y=\"{axis_y}\" text-anchor=\"middle\">");
            let labels: Vec<&str> = svg
                .split("<text ")
                .filter_map(|t| t.split_once(marker.as_str()))
                .map(|(_, rest)| rest.split('<').next().unwrap())
                .collect();
            assert!(!labels.is_empty(), "{epochs} epochs: no x ticks");
            for l in &labels {
                assert!(l.parse::<u64>().is_ok(), "{epochs} epochs: tick {l:?} is not a whole epoch");
            }
        }
        // A fitted y axis (losses far from zero) has a tick on its bottom edge.
        let mut loss = line("loss", 200);
        loss.points.iter_mut().for_each(|p| p.y += 0.93);
        let svg = render(&Chart::new("Loss", "step", "loss").series(loss));
        let bottom = format!("y=\"{:.1}\"", 300.0 - BOTTOM + 4.0);
        let ticks = svg.split("class=\"ticks\"").nth(1).unwrap();
        assert!(ticks.contains(&bottom), "no tick label at the bottom of the y axis: {ticks}");
    }

    #[test]
    fn a_log_axis_spans_decades_and_labels_the_values() {
        let mut chart = Chart::new("Learning rate", "step", "lr");
        chart.log_y = true;
        chart.series.push(Series {
            label: "lr".into(),
            key: "lr".into(),
            points: (0..100)
                .map(|i| Point::new(i as f64, 0.1 * 0.9f64.powi(i)))
                .chain([Point::new(100.0, 0.0)])
                .collect(),
            dashed: false,
        });
        let svg = render(&chart);
        assert!(svg.contains("data-log-y=\"1\"") && svg.contains("lr (log scale)"), "{svg}");
        assert_eq!(polyline_points(&svg), vec![100], "the zero has no place on a log axis");
        let ticks = svg.split("class=\"ticks\"").nth(1).unwrap();
        for label in ["0.001", "0.01", "0.1"] {
            assert!(ticks.contains(&format!(">{label}</text>")), "{label}: {ticks}");
        }
        assert_eq!(log_tick_label(0.0), "1");
        assert_eq!(log_tick_label(-4.0), "1e-4");
        assert_eq!(log_tick_label(1.5), "31.6");
        assert_eq!(log_tick_label(6.0), "1e6");
    }

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        let want = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
        assert_eq!(t.len(), want.len(), "{t:?}");
        assert!(t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9), "{t:?}");
        let t = ticks(3.0, 997.0, 6);
        assert_eq!(t.first(), Some(&200.0));
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 200.0).abs() < 1e-9));
        assert_eq!(tick_label(0.6000000000000001, 0.2), "0.6");
        assert_eq!(tick_label(20_000.0, 5_000.0), "20k");
        assert_eq!(tick_label(1_500_000.0, 500_000.0), "1.5M");
        assert_eq!(tick_label(0.025, 0.005), "0.025");
        assert_eq!(tick_label(3.0, 1.0), "3");
    }
}
