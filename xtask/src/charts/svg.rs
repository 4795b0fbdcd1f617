//! The SVG.

use super::*;

pub(super) const MARGIN: f64 = 12.0;
pub(super) const ROW: f64 = 20.0;
pub(super) const BAR: f64 = 13.0;
pub(super) const LABEL_FONT: f64 = 12.0;
pub(super) const TITLE_FONT: f64 = 15.0;
/// Room right of the plot for the value labels.
pub(super) const VALUE_ROOM: f64 = 58.0;
pub(super) const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// A rough width of `text` in pixels at `font` px of a sans-serif font.
pub(super) fn text_width(text: &str, font: f64) -> f64 {
    text.chars().count() as f64 * font * 0.56
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number as the charts print it: as recorded, with thousands separators.
pub(super) fn format_value(text: &str) -> String {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut grouped = String::new();
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if frac.is_empty() {
        grouped
    } else {
        format!("{grouped}.{frac}")
    }
}

/// Words of `text` in lines of at most `width` characters.
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The value axis: where a figure lands, and the ticks.
pub(super) struct Axis {
    pub(super) log: bool,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) x0: f64,
    pub(super) x1: f64,
}

impl Axis {
    pub(super) fn new(chart: &Chart, x0: f64, x1: f64) -> Axis {
        let top = chart
            .rows
            .iter()
            .map(|r| r.high)
            .fold(chart.goal.unwrap_or(0.0), f64::max);
        if chart.log {
            let bottom = chart
                .rows
                .iter()
                .map(|r| r.low)
                .fold(f64::INFINITY, f64::min);
            let mut low = bottom.log10().floor();
            // Room for the shortest bar to show.
            if bottom / 10f64.powf(low) < 2.0 {
                low -= 1.0;
            }
            let high = top.log10().ceil().max(low + 1.0);
            Axis {
                log: true,
                min: 10f64.powf(low),
                max: 10f64.powf(high),
                x0,
                x1,
            }
        } else {
            let step = Self::step(top);
            Axis {
                log: false,
                min: 0.0,
                max: ((top / step).ceil() * step).max(step),
                x0,
                x1,
            }
        }
    }

    /// A round tick step giving about five ticks up to `top`.
    pub(super) fn step(top: f64) -> f64 {
        if top <= 0.0 {
            return 1.0;
        }
        let raw = top / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let norm = raw / magnitude;
        let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
            .into_iter()
            .find(|n| *n >= norm - 1e-9)
            .unwrap_or(10.0);
        nice * magnitude
    }

    pub(super) fn x(&self, value: f64) -> f64 {
        let fraction = if self.log {
            let value = value.max(self.min);
            (value.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            value / self.max
        };
        self.x0 + fraction.clamp(0.0, 1.0) * (self.x1 - self.x0)
    }

    pub(super) fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (low, high) = (
                self.min.log10().round() as i32,
                self.max.log10().round() as i32,
            );
            (low..=high).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = Self::step(self.max);
            let count = (self.max / step).round() as usize;
            (0..=count).map(|i| i as f64 * step).collect()
        }
    }
}

/// One line of the chart body: a group heading or a bar.
pub(super) enum Line<'a> {
    Heading(&'a str),
    Bar {
        row: &'a Row,
        label: &'a str,
        colour: &'a str,
    },
}

/// The chart as an SVG 1.1 document.
pub(super) fn render(chart: &Chart) -> Result<String> {
    // `group: series` labels: headings per group, colours per series.
    let grouped = chart.rows.iter().all(|row| row.label.contains(": "));
    let mut series: Vec<&str> = Vec::new();
    let mut lines: Vec<Line<'_>> = Vec::new();
    let mut group = None;
    for row in &chart.rows {
        if grouped {
            let (heading, name) = row.label.split_once(": ").unwrap_or(("", &row.label));
            if group != Some(heading) {
                group = Some(heading);
                lines.push(Line::Heading(heading));
            }
            let index = series.iter().position(|s| *s == name).unwrap_or_else(|| {
                series.push(name);
                series.len() - 1
            });
            lines.push(Line::Bar {
                row,
                label: name,
                colour: PALETTE[index % PALETTE.len()],
            });
        } else {
            lines.push(Line::Bar {
                row,
                label: &row.label,
                colour: PALETTE[0],
            });
        }
    }

    let label_width = lines
        .iter()
        .map(|line| match line {
            Line::Bar { label, .. } => text_width(label, LABEL_FONT),
            Line::Heading(_) => 0.0,
        })
        .fold(0.0, f64::max)
        .ceil();
    let label_right = MARGIN + label_width;
    let plot_left = label_right + 10.0;
    let plot_right = WIDTH - MARGIN - VALUE_ROOM;
    if plot_right - plot_left < 200.0 {
        return Err(format!(
            "chart `{}`: labels too long for the width ({label_width:.0} px)",
            chart.title
        ));
    }
    let axis = Axis::new(chart, plot_left, plot_right);
    let unit = &chart.rows[0].unit;

    let title_lines = wrap(
        &chart.title,
        ((WIDTH - 2.0 * MARGIN) / (TITLE_FONT * 0.6)) as usize,
    );
    let whiskers = chart.rows.iter().any(|row| row.high > row.low);
    let mut y = MARGIN + TITLE_FONT;
    let mut body = String::new();
    for line in &title_lines {
        let _ = writeln!(
            body,
            r##"<text x="{MARGIN}" y="{y}" font-size="{TITLE_FONT}" font-weight="bold" fill="#1a1a1a">{}</text>"##,
            escape(line)
        );
        y += TITLE_FONT + 4.0;
    }
    let mut note = if whiskers {
        format!("bar: median, whisker: low – high; {unit}")
    } else {
        unit.clone()
    };
    if let Some(goal) = chart.goal {
        let _ = write!(
            note,
            "; dashed: the goal, {} {unit}",
            format_value(&format!("{goal}"))
        );
    }
    let _ = writeln!(
        body,
        r##"<text x="{MARGIN}" y="{y}" font-size="11" fill="#555555">{}</text>"##,
        escape(&note)
    );
    let plot_top = y + 10.0;
    let mut y = plot_top;
    let mut bars = String::new();
    for line in &lines {
        match line {
            Line::Heading(heading) => {
                if y > plot_top {
                    y += 6.0;
                }
                let _ = writeln!(
                    bars,
                    r##"<text x="{MARGIN}" y="{:.1}" font-size="{LABEL_FONT}" font-weight="bold" fill="#1a1a1a">{}</text>"##,
                    y + ROW - 6.0,
                    escape(heading)
                );
            }
            Line::Bar { row, label, colour } => {
                let centre = y + ROW / 2.0;
                let start = axis.x(axis.min);
                let end = axis.x(row.median);
                let _ = writeln!(
                    bars,
                    r##"<text x="{label_right:.1}" y="{:.1}" font-size="{LABEL_FONT}" text-anchor="end" fill="#1a1a1a">{}</text>"##,
                    centre + 4.0,
                    escape(label)
                );
                let _ = writeln!(
                    bars,
                    r##"<rect x="{start:.1}" y="{:.1}" width="{:.1}" height="{BAR}" fill="{colour}"/>"##,
                    centre - BAR / 2.0,
                    (end - start).max(1.0)
                );
                let (low, high) = (axis.x(row.low), axis.x(row.high));
                if row.high > row.low {
                    let (cap_top, cap_bottom) = (centre - 4.5, centre + 4.5);
                    let _ = writeln!(
                        bars,
                        r##"<path d="M{low:.1} {centre:.1}H{high:.1}M{low:.1} {cap_top:.1}V{cap_bottom:.1}M{high:.1} {cap_top:.1}V{cap_bottom:.1}" stroke="#1a1a1a" stroke-width="1.2" fill="none"/>"##
                    );
                }
                let _ = writeln!(
                    bars,
                    r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#1a1a1a">{}</text>"##,
                    high.max(end) + 5.0,
                    centre + 4.0,
                    escape(&format_value(&row.text[1]))
                );
            }
        }
        y += ROW;
    }
    let plot_bottom = y + 4.0;

    let mut grid = String::new();
    for tick in axis.ticks() {
        let x = axis.x(tick);
        let _ = writeln!(
            grid,
            r##"<line x1="{x:.1}" y1="{plot_top:.1}" x2="{x:.1}" y2="{plot_bottom:.1}" stroke="{}" stroke-width="1"/>"##,
            if tick == axis.min {
                "#999999"
            } else {
                "#e3e3e3"
            }
        );
        let _ = writeln!(
            grid,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#555555">{}</text>"##,
            plot_bottom + 14.0,
            format_value(&format!("{tick}"))
        );
    }
    let _ = writeln!(
        grid,
        r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#1a1a1a">{}</text>"##,
        (plot_left + plot_right) / 2.0,
        plot_bottom + 32.0,
        escape(&if chart.log {
            format!("{unit} (log scale)")
        } else {
            unit.clone()
        })
    );
    let height = (plot_bottom + 44.0).ceil();
    let mut goal = String::new();
    if let Some(value) = chart.goal {
        let x = axis.x(value);
        let _ = writeln!(
            goal,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{plot_bottom:.1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="5,3"/>"##,
            plot_top - 2.0
        );
        let _ = writeln!(
            goal,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#c0392b">goal {}</text>"##,
            x - 3.0,
            plot_top + 1.0,
            escape(&format_value(&format!("{value}")))
        );
    }

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(&chart.title));
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    svg.push_str(&body);
    svg.push_str(&grid);
    svg.push_str(&bars);
    svg.push_str(&goal);
    svg.push_str("</svg>\n");
    Ok(svg)
}
