//! `cargo xtask charts [--collect]`: the SVG bar charts of the docs' throughput tables.
//!
//! Every `docs/charts/data/<name>.csv` becomes `docs/charts/<name>.svg`: a horizontal bar chart,
//! one bar per row at the median with a whisker from low to high. A CSV starts with comment
//! lines, `# title: …` (the chart's title), `# command: …` (what reproduces the figures) and,
//! optionally, `# scale: log`; then the header `label,low,median,high,unit` and one row per bar.
//! Every row of a chart has the same unit. A label of the form `group: series` puts the row
//! under a heading `group`, coloured by its series.
//!
//! With `--collect` the CSVs are first refreshed from the benches' latest output:
//! criterion's `target/criterion/**/new/{benchmark.json,estimates.json}` (throughput from the
//! median's point estimate and its confidence interval) and the end-to-end bench's
//! `target/bench-results/end_to_end.csv`. [`sources`] maps bench ids to rows; rows without
//! fresh output keep their recorded figures, and a CSV with none is left as it is.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::Result;

/// The chart's width in pixels.
const WIDTH: f64 = 760.0;

/// `cargo xtask charts [--collect]`.
pub(crate) fn charts(args: &[String]) -> Result {
    let mut collect = false;
    for arg in args {
        match arg.as_str() {
            "--collect" => collect = true,
            other => return Err(format!("charts: unknown argument `{other}`")),
        }
    }
    let root = crate::workspace_root();
    let charts_dir = root.join("docs/charts");
    let data_dir = charts_dir.join("data");
    if collect {
        let target = target_dir(&root);
        let figures = Figures {
            criterion: criterion_figures(&target.join("criterion"))?,
            end_to_end: end_to_end_figures(&target.join("bench-results/end_to_end.csv"))?,
        };
        for path in collect_into(&data_dir, &figures)? {
            eprintln!("xtask: refreshed {}", path.display());
        }
    }
    for path in render_all(&data_dir, &charts_dir)? {
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace root) or `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Renders every `<data>/<name>.csv` into `<out>/<name>.svg`; returns the files written.
fn render_all(data: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for csv in csv_files(data)? {
        let chart = read_chart(&csv)?;
        let name = csv
            .file_stem()
            .ok_or_else(|| format!("{}: no file name", csv.display()))?;
        let svg = out.join(name).with_extension("svg");
        fs::write(&svg, render(&chart)?).map_err(|error| format!("{}: {error}", svg.display()))?;
        written.push(svg);
    }
    Ok(written)
}

fn csv_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "csv"))
        .collect();
    files.sort();
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// The data files.

/// One chart: its CSV file, parsed.
#[derive(Debug, Clone, PartialEq)]
struct Chart {
    title: String,
    command: String,
    log: bool,
    /// A target to mark with a dashed line, in the chart's unit.
    goal: Option<f64>,
    rows: Vec<Row>,
}

/// One bar.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    label: String,
    low: f64,
    median: f64,
    high: f64,
    unit: String,
    /// low, median and high as written (`5.0` stays `5.0`).
    text: [String; 3],
}

impl Row {
    fn new(label: String, [low, median, high]: [f64; 3], unit: String) -> Row {
        Row {
            label,
            low,
            median,
            high,
            unit,
            text: [low, median, high].map(format_figure),
        }
    }
}

const HEADER: &str = "label,low,median,high,unit";

fn read_chart(path: &Path) -> Result<Chart> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    parse_chart(&path.display().to_string(), &text)
}

/// Parses a chart's CSV; `name` is only used in the error messages (`name:line: what`).
fn parse_chart(name: &str, text: &str) -> Result<Chart> {
    let mut title = None;
    let mut command = None;
    let mut log = false;
    let mut goal = None;
    let mut header = false;
    let mut rows: Vec<Row> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let error = |what: String| format!("{name}:{}: {what}", index + 1);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let (key, value) = comment
                .split_once(':')
                .map(|(key, value)| (key.trim(), value.trim()))
                .ok_or_else(|| error(format!("expected `# key: value`, found `{line}`")))?;
            match key {
                "title" => title = Some(value.to_owned()),
                "command" => command = Some(value.to_owned()),
                "scale" => match value {
                    "log" => log = true,
                    "linear" => log = false,
                    other => return Err(error(format!("unknown scale `{other}` (log, linear)"))),
                },
                "goal" => {
                    let value = value
                        .parse::<f64>()
                        .ok()
                        .filter(|value| value.is_finite() && *value > 0.0)
                        .ok_or_else(|| error(format!("goal `{value}` is not a positive number")))?;
                    goal = Some(value);
                }
                other => {
                    return Err(error(format!(
                        "unknown key `{other}` (title, command, scale, goal)"
                    )));
                }
            }
            continue;
        }
        if !header {
            if line.trim() != HEADER {
                return Err(error(format!(
                    "expected the header `{HEADER}`, found `{line}`"
                )));
            }
            header = true;
            continue;
        }
        let fields = split_fields(line).map_err(&error)?;
        let [label, low, median, high, unit] =
            <[String; 5]>::try_from(fields).map_err(|fields| {
                error(format!(
                    "expected 5 fields ({HEADER}), found {}: `{line}`",
                    fields.len()
                ))
            })?;
        let number = |field: &str, what: &str| {
            field
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|value| value.is_finite() && *value >= 0.0)
                .ok_or_else(|| error(format!("{what} `{field}` is not a non-negative number")))
        };
        let row = Row {
            low: number(&low, "low")?,
            median: number(&median, "median")?,
            high: number(&high, "high")?,
            label: label.trim().to_owned(),
            unit: unit.trim().to_owned(),
            text: [low, median, high].map(|field| field.trim().to_owned()),
        };
        if !(row.low <= row.median && row.median <= row.high) {
            return Err(error(format!(
                "expected low <= median <= high, found {} / {} / {}",
                row.low, row.median, row.high
            )));
        }
        if row.label.is_empty() {
            return Err(error("empty label".into()));
        }
        if let Some(first) = rows.first()
            && first.unit != row.unit
        {
            return Err(error(format!(
                "unit `{}` differs from the first row's `{}`",
                row.unit, first.unit
            )));
        }
        if log && row.low <= 0.0 {
            return Err(error("a log scale needs figures above 0".into()));
        }
        rows.push(row);
    }
    let title = title.ok_or_else(|| format!("{name}: no `# title:` line"))?;
    let command = command.ok_or_else(|| format!("{name}: no `# command:` line"))?;
    if rows.is_empty() {
        return Err(format!("{name}: no rows"));
    }
    Ok(Chart {
        title,
        command,
        log,
        goal,
        rows,
    })
}

/// Splits one CSV line: fields separated by commas, a field in double quotes may hold commas
/// (and `""` for a quote).
fn split_fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quote in `{line}`")),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("`{c}` after a closing quote in `{line}`")),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some(c) => field.push(c),
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                }
            }
            fields.push(field);
        }
    }
}

fn quote(field: &str) -> String {
    if field.contains([',', '"']) || field.trim() != field {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The chart as its CSV file.
fn to_csv(chart: &Chart) -> String {
    let mut csv = format!("# title: {}\n# command: {}\n", chart.title, chart.command);
    if chart.log {
        csv.push_str("# scale: log\n");
    }
    if let Some(goal) = chart.goal {
        let _ = writeln!(csv, "# goal: {goal}");
    }
    csv.push_str(HEADER);
    csv.push('\n');
    for row in &chart.rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{}",
            quote(&row.label),
            row.text[0],
            row.text[1],
            row.text[2],
            quote(&row.unit)
        );
    }
    csv
}

// ---------------------------------------------------------------------------------------------
// Fresh figures from the benches.

/// Where a chart's fresh figures come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bench {
    /// Criterion's output, by full benchmark id (`group/function[/value]`).
    Criterion,
    /// `target/bench-results/end_to_end.csv`, by scenario key.
    EndToEnd,
}

/// A chart whose rows can be refreshed, and which bench output gives each row.
struct Source {
    chart: &'static str,
    bench: Bench,
    /// (bench id, row label), in the chart's order.
    rows: Vec<(String, String)>,
}

/// Which bench gives which row of which chart. `events_loaded` is a record of one run on a
/// loaded machine and is not refreshed.
fn sources() -> Vec<Source> {
    let pairs = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(id, label)| ((*id).to_owned(), (*label).to_owned()))
            .collect()
    };
    let core = pairs(&[
        (
            "core/in_order_common_pts_polled_every_64",
            "in order, common pts, polled every 64",
        ),
        (
            "core/in_order_common_pts",
            "in order, common pts, polled after every push",
        ),
        (
            "core/channels_round_robin_1",
            "channels round-robin over 1 channel",
        ),
        (
            "core/channels_round_robin_1000",
            "channels round-robin over 1,000 channels",
        ),
        (
            "core/channels_round_robin_100000",
            "channels round-robin over 100,000 channels",
        ),
        (
            "core/reordered_1_percent",
            "1 % of pairs swapped, polled after every push",
        ),
        (
            "core/reordered_1_percent_polled_every_64",
            "1 % of pairs swapped, polled every 64",
        ),
        (
            "core/reordered_10_percent",
            "10 % of pairs swapped, polled after every push",
        ),
        (
            "core/reordered_10_percent_polled_every_64",
            "10 % of pairs swapped, polled every 64",
        ),
        ("core/every_update_twice", "every update pushed twice"),
        (
            "core/seq_containers_of_10",
            "updates containers of 10 with seq",
        ),
        (
            "core/difference_of_10k",
            "a difference of 10,000 updates applied",
        ),
    ]);
    let storage = pairs(&[
        ("storage/memory/apply", "memory, apply"),
        (
            "storage/file/apply (fsync each)",
            "file (redb), apply, fsync each",
        ),
        (
            "storage/redis/apply",
            "Redis (unix socket), apply one at a time",
        ),
        (
            "storage/redis/apply x100 concurrent",
            "Redis, 100 concurrent apply",
        ),
        (
            "storage/redis/apply_many x100 pipelined",
            "Redis, apply_many, 100 per pipeline",
        ),
        (
            "storage/redis/raw EVALSHA x100 pipelined",
            "Redis, raw EVALSHA, 100 per pipeline (floor)",
        ),
    ]);
    let end_to_end = pairs(&[
        ("catch_up", "catch up a backlog by getDifference"),
        (
            "handle/256",
            "live, in order, handle per push, 256 per read",
        ),
        ("batch/256", "live, in order, handle_batch, 256 per read"),
        (
            "faults/256",
            "live, handle_batch, 2 % dup., 2 % reordered, 256 per read",
        ),
        ("batch/16", "live, in order, handle_batch, 16 per read"),
        ("batch/4096", "live, in order, handle_batch, 4,096 per read"),
    ]);
    let mut events = Vec::new();
    for shards in [1, 2, 4] {
        for producers in [1, 4, 16] {
            let group = format!(
                "{shards} shard{}, {producers} producer{}",
                if shards == 1 { "" } else { "s" },
                if producers == 1 { "" } else { "s" }
            );
            for batch in [1, 64, 256] {
                events.push((
                    format!("events/stream/s{shards}/p{producers}/b{batch}"),
                    format!("{group}: stream b={batch}"),
                ));
            }
            events.push((
                format!("events/naive_sync_channel/s{shards}/p{producers}"),
                format!("{group}: naive sync_channel"),
            ));
        }
    }
    vec![
        Source {
            chart: "core",
            bench: Bench::Criterion,
            rows: core,
        },
        Source {
            chart: "end_to_end",
            bench: Bench::EndToEnd,
            rows: end_to_end,
        },
        Source {
            chart: "events",
            bench: Bench::Criterion,
            rows: events,
        },
        Source {
            chart: "storage",
            bench: Bench::Criterion,
            rows: storage,
        },
    ]
}

/// One fresh figure, per second: (low, median, high).
type Figure = (f64, f64, f64);

/// Fresh figures by bench id.
#[derive(Debug, Default)]
struct Figures {
    criterion: HashMap<String, Figure>,
    end_to_end: HashMap<String, Figure>,
}

/// Reads every `new/benchmark.json` under `dir` (criterion's output directory) with a
/// throughput in elements, and its `estimates.json`: elements per second at the median's
/// confidence interval and point estimate. A missing `dir` gives no figures.
fn criterion_figures(dir: &Path) -> Result<HashMap<String, Figure>> {
    let mut figures = HashMap::new();
    if dir.is_dir() {
        walk_criterion(dir, &mut figures)?;
    }
    Ok(figures)
}

fn walk_criterion(dir: &Path, figures: &mut HashMap<String, Figure>) -> Result {
    let entries = fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|error| format!("{}: {error}", dir.display()))?
            .path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "new") {
            let benchmark = path.join("benchmark.json");
            let estimates = path.join("estimates.json");
            if benchmark.is_file()
                && estimates.is_file()
                && let Some((id, figure)) = criterion_figure(&benchmark, &estimates)?
            {
                figures.insert(id, figure);
            }
        } else if path.file_name().is_none_or(|name| name != "report") {
            walk_criterion(&path, figures)?;
        }
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// One benchmark's id and throughput; `None` when it has no throughput in elements.
fn criterion_figure(benchmark: &Path, estimates: &Path) -> Result<Option<(String, Figure)>> {
    let info = read_json(benchmark)?;
    let id = info["full_id"]
        .as_str()
        .ok_or_else(|| format!("{}: no `full_id`", benchmark.display()))?
        .to_owned();
    let throughput = &info["throughput"];
    let Some(elements) = throughput["Elements"]
        .as_f64()
        .or_else(|| throughput["ElementsAndBytes"]["elements"].as_f64())
    else {
        return Ok(None);
    };
    let estimates_json = read_json(estimates)?;
    let median = &estimates_json["median"];
    let field = |value: &serde_json::Value, what: &str| {
        value
            .as_f64()
            .filter(|ns| *ns > 0.0)
            .ok_or_else(|| format!("{}: no positive `{what}`", estimates.display()))
    };
    let point = field(&median["point_estimate"], "median.point_estimate")?;
    let lower = field(
        &median["confidence_interval"]["lower_bound"],
        "median.confidence_interval.lower_bound",
    )?;
    let upper = field(
        &median["confidence_interval"]["upper_bound"],
        "median.confidence_interval.upper_bound",
    )?;
    // Times are nanoseconds per iteration: the slowest time is the lowest throughput.
    let per_second = |ns: f64| elements * 1e9 / ns;
    Ok(Some((
        id,
        (per_second(upper), per_second(point), per_second(lower)),
    )))
}

/// The end-to-end bench's figures: `scenario,events,runs,min,median,max` lines (updates/s).
/// A missing file gives no figures.
fn end_to_end_figures(path: &Path) -> Result<HashMap<String, Figure>> {
    let mut figures = HashMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(figures);
    };
    for (index, line) in text.lines().enumerate() {
        if index == 0 || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let parsed = match fields.as_slice() {
            [key, _events, _runs, min, median, max] => {
                match (min.parse(), median.parse(), max.parse()) {
                    (Ok(min), Ok(median), Ok(max)) => Some(((*key).to_owned(), (min, median, max))),
                    _ => None,
                }
            }
            _ => None,
        };
        let (key, figure) = parsed.ok_or_else(|| {
            format!(
                "{}:{}: expected `scenario,events,runs,min,median,max`, found `{line}`",
                path.display(),
                index + 1
            )
        })?;
        figures.insert(key, figure);
    }
    Ok(figures)
}

/// The multiplier of a unit's prefix: `M updates/s` is 10^6 per second.
fn unit_scale(unit: &str) -> f64 {
    match unit.split_whitespace().next() {
        Some("k") => 1e3,
        Some("M") => 1e6,
        Some("G") => 1e9,
        _ => 1.0,
    }
}

/// A fresh figure as the tables give them: one decimal from 10 up, else three significant
/// digits.
fn format_figure(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Updates each chart of [`sources`] that has fresh figures and rewrites its CSV; returns the
/// files rewritten.
fn collect_into(data: &Path, figures: &Figures) -> Result<Vec<PathBuf>> {
    let mut rewritten = Vec::new();
    for source in sources() {
        let path = data.join(source.chart).with_extension("csv");
        if !path.is_file() {
            continue;
        }
        let mut chart = read_chart(&path)?;
        if refresh(&mut chart, &source, figures) {
            fs::write(&path, to_csv(&chart))
                .map_err(|error| format!("{}: {error}", path.display()))?;
            rewritten.push(path);
        }
    }
    Ok(rewritten)
}

/// Puts the fresh figures of `source` into `chart` (a row missing from it is added at the
/// end); true when anything was fresh.
fn refresh(chart: &mut Chart, source: &Source, figures: &Figures) -> bool {
    let fresh = match source.bench {
        Bench::Criterion => &figures.criterion,
        Bench::EndToEnd => &figures.end_to_end,
    };
    let unit = chart.rows[0].unit.clone();
    let scale = unit_scale(&unit);
    let mut any = false;
    for (id, label) in &source.rows {
        let Some(&(low, median, high)) = fresh.get(id) else {
            continue;
        };
        any = true;
        let figures = [low, median, high].map(|value| {
            let text = format_figure(value / scale);
            text.parse().unwrap_or(value / scale)
        });
        let row = Row::new(label.clone(), figures, unit.clone());
        match chart.rows.iter_mut().find(|r| r.label == *label) {
            Some(existing) => *existing = row,
            None => chart.rows.push(row),
        }
    }
    any
}

// ---------------------------------------------------------------------------------------------
// The SVG.

const MARGIN: f64 = 12.0;
const ROW: f64 = 20.0;
const BAR: f64 = 13.0;
const LABEL_FONT: f64 = 12.0;
const TITLE_FONT: f64 = 15.0;
/// Room right of the plot for the value labels.
const VALUE_ROOM: f64 = 58.0;
const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// A rough width of `text` in pixels at `font` px of a sans-serif font.
fn text_width(text: &str, font: f64) -> f64 {
    text.chars().count() as f64 * font * 0.56
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number as the charts print it: as recorded, with thousands separators.
fn format_value(text: &str) -> String {
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
fn wrap(text: &str, width: usize) -> Vec<String> {
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
struct Axis {
    log: bool,
    min: f64,
    max: f64,
    x0: f64,
    x1: f64,
}

impl Axis {
    fn new(chart: &Chart, x0: f64, x1: f64) -> Axis {
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
    fn step(top: f64) -> f64 {
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

    fn x(&self, value: f64) -> f64 {
        let fraction = if self.log {
            let value = value.max(self.min);
            (value.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            value / self.max
        };
        self.x0 + fraction.clamp(0.0, 1.0) * (self.x1 - self.x0)
    }

    fn ticks(&self) -> Vec<f64> {
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
enum Line<'a> {
    Heading(&'a str),
    Bar {
        row: &'a Row,
        label: &'a str,
        colour: &'a str,
    },
}

/// The chart as an SVG 1.1 document.
fn render(chart: &Chart) -> Result<String> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# title: A test chart\n\
        # command: cargo bench -p sync-benches --bench core\n\
        label,low,median,high,unit\n\
        \"in order, polled every 64\",46.8,48.1,49.5,M updates/s\n\
        plain,9.1,9.4,9.8,M updates/s\n";

    #[test]
    fn parses_a_chart() {
        let chart = parse_chart("sample.csv", SAMPLE).unwrap();
        assert_eq!(chart.title, "A test chart");
        assert_eq!(chart.command, "cargo bench -p sync-benches --bench core");
        assert!(!chart.log);
        assert_eq!(chart.rows.len(), 2);
        assert_eq!(chart.rows[0].label, "in order, polled every 64");
        assert_eq!(
            (chart.rows[0].low, chart.rows[0].median, chart.rows[0].high),
            (46.8, 48.1, 49.5)
        );
        assert_eq!(chart.rows[1].unit, "M updates/s");
        // Written back, it reads the same.
        assert_eq!(parse_chart("again", &to_csv(&chart)).unwrap(), chart);
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(
            split_fields(r#""a, ""b""",1,"#).unwrap(),
            vec![r#"a, "b""#, "1", ""]
        );
        assert!(split_fields(r#""open,1"#).is_err());
        assert!(split_fields(r#""a"b,1"#).is_err());
    }

    #[test]
    fn malformed_lines_are_clear_errors() {
        let short = SAMPLE.replace("plain,9.1,9.4,9.8,M updates/s", "plain,9.1,9.4,M updates/s");
        let error = parse_chart("sample.csv", &short).unwrap_err();
        assert!(
            error.starts_with("sample.csv:5: expected 5 fields"),
            "{error}"
        );

        let nan = SAMPLE.replace("9.4", "nine");
        let error = parse_chart("sample.csv", &nan).unwrap_err();
        assert!(error.starts_with("sample.csv:5: median `nine`"), "{error}");

        let order = SAMPLE.replace("9.4", "10.4");
        let error = parse_chart("sample.csv", &order).unwrap_err();
        assert!(error.contains("low <= median <= high"), "{error}");

        let units = SAMPLE.replace("9.8,M updates/s", "9.8,k updates/s");
        let error = parse_chart("sample.csv", &units).unwrap_err();
        assert!(error.starts_with("sample.csv:5: unit"), "{error}");

        let no_header = SAMPLE.replace("label,low,median,high,unit\n", "");
        let error = parse_chart("sample.csv", &no_header).unwrap_err();
        assert!(
            error.starts_with("sample.csv:3: expected the header"),
            "{error}"
        );

        let no_title = SAMPLE.replace("# title: A test chart\n", "");
        let error = parse_chart("sample.csv", &no_title).unwrap_err();
        assert_eq!(error, "sample.csv: no `# title:` line");
    }

    /// Tags open and close in order, and the document is one `<svg>` element.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("unclosed tag");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('?') {
                continue;
            }
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in <{tag}>"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "closing </{name}>");
                continue;
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap());
            }
        }
        assert!(stack.is_empty(), "left open: {stack:?}");
        assert_eq!(roots, 1);
        assert!(svg.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(!svg.contains("<script"));
        assert!(!rest.contains('>'));
    }

    #[test]
    fn renders_a_bar_per_row() {
        let chart = parse_chart("sample.csv", SAMPLE).unwrap();
        let svg = render(&chart).unwrap();
        assert_well_formed(&svg);
        // The background and one bar per row.
        assert_eq!(svg.matches("<rect").count(), 1 + chart.rows.len());
        assert!(svg.contains(">A test chart</text>"));
        assert!(svg.contains(">48.1</text>"));
        assert!(svg.contains(">M updates/s</text>"));
        assert!(svg.contains("width=\"760\""));
        // A whisker per row with a range.
        assert_eq!(svg.matches("<path").count(), 2);
    }

    #[test]
    fn renders_groups_and_log_scales() {
        let text = "# title: Grouped & <escaped>\n# command: x\n# scale: log\n\
            label,low,median,high,unit\n\
            \"1 shard: a\",1,2,3,k commits/s\n\
            \"1 shard: b\",2400,2400,2400,k commits/s\n\
            \"2 shards: a\",0.5,1.2,1.5,k commits/s\n";
        let chart = parse_chart("grouped.csv", text).unwrap();
        assert!(chart.log);
        let svg = render(&chart).unwrap();
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(">Grouped &amp; &lt;escaped&gt;</text>"));
        assert!(svg.contains(">1 shard</text>") && svg.contains(">2 shards</text>"));
        assert!(svg.contains(">2,400</text>"));
        assert!(svg.contains(">k commits/s (log scale)</text>"));
        // Ticks at the powers of ten from 0.1 to 10,000.
        assert!(svg.contains(">0.1</text>") && svg.contains(">10,000</text>"));
        // Series `a` keeps its colour in both groups.
        assert_eq!(svg.matches(PALETTE[0]).count(), 2);
        assert_eq!(svg.matches(PALETTE[1]).count(), 1);
    }

    #[test]
    fn formats_values() {
        assert_eq!(format_value("48.1"), "48.1");
        assert_eq!(format_value("5.0"), "5.0");
        assert_eq!(format_value("2400"), "2,400");
        assert_eq!(format_value("1234567.5"), "1,234,567.5");
        assert_eq!(format_value("0.14"), "0.14");
        assert_eq!(Axis::step(49.5), 10.0);
        assert_eq!(Axis::step(111.0), 25.0);
        assert_eq!(format_figure(48.123), "48.1");
        assert_eq!(format_figure(5.7749), "5.77");
        assert_eq!(format_figure(0.14), "0.140");
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A criterion output directory as criterion 0.8 lays it out.
    fn fake_bench(criterion: &Path, dir: &str, full_id: &str, elements: u64, ns: [f64; 3]) {
        let new = criterion.join(dir).join("new");
        write(
            &new.join("benchmark.json"),
            &format!(
                r#"{{"group_id":"core","function_id":null,"value_str":null,"throughput":{{"Elements":{elements}}},"full_id":"{full_id}","directory_name":"{dir}","title":"{full_id}"}}"#
            ),
        );
        let estimate = |point: f64, lower: f64, upper: f64| {
            format!(
                r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{lower},"upper_bound":{upper}}},"point_estimate":{point},"standard_error":1.0}}"#
            )
        };
        let [lower, point, upper] = ns;
        let median = estimate(point, lower, upper);
        let other = estimate(point * 1.1, lower, upper * 1.2);
        write(
            &new.join("estimates.json"),
            &format!(
                r#"{{"mean":{other},"median":{median},"median_abs_dev":{other},"slope":null,"std_dev":{other}}}"#
            ),
        );
    }

    #[test]
    fn collects_from_criterion_output() {
        let dir = tempfile::tempdir().unwrap();
        let criterion = dir.path().join("target/criterion");
        // 10,000 elements in 200 µs (190 – 250 µs): 50 M/s (40 – 52.6 M/s).
        fake_bench(
            &criterion,
            "core/in_order_common_pts",
            "core/in_order_common_pts",
            10_000,
            [190_000.0, 200_000.0, 250_000.0],
        );
        fake_bench(
            &criterion,
            "events/stream/s1_p1_b64",
            "events/stream/s1/p1/b64",
            1 << 20,
            [10e6, 20e6, 40e6],
        );
        // Without a throughput: not a figure.
        let untimed = criterion.join("other/new");
        write(
            &untimed.join("benchmark.json"),
            r#"{"full_id":"other","throughput":null}"#,
        );
        write(&untimed.join("estimates.json"), "{}");
        // A report directory is not output.
        write(&criterion.join("report/index.html"), "<html></html>");

        let figures = Figures {
            criterion: criterion_figures(&criterion).unwrap(),
            end_to_end: end_to_end_figures(&dir.path().join("target/bench-results/none.csv"))
                .unwrap(),
        };
        assert_eq!(figures.criterion.len(), 2);
        let (low, median, high) = figures.criterion["core/in_order_common_pts"];
        assert!((low - 40e6).abs() < 1.0 && (median - 50e6).abs() < 1.0);
        assert!((high - 10_000.0 * 1e9 / 190_000.0).abs() < 1.0);

        let data = dir.path().join("docs/charts/data");
        let core = "# title: core\n# command: cargo bench -p sync-benches --bench core\n\
            label,low,median,high,unit\n\
            \"in order, common pts, polled every 64\",46.8,48.1,49.5,M updates/s\n\
            \"in order, common pts, polled after every push\",9.1,9.4,9.8,M updates/s\n";
        write(&data.join("core.csv"), core);
        let storage = "# title: storage\n# command: x\n# scale: log\nlabel,low,median,high,unit\n\
            \"memory, apply\",2400,2400,2400,k commits/s\n";
        write(&data.join("storage.csv"), storage);

        let rewritten = collect_into(&data, &figures).unwrap();
        assert_eq!(rewritten, vec![data.join("core.csv")]);
        let chart = read_chart(&data.join("core.csv")).unwrap();
        // The row without fresh output keeps its figures; the fresh one is replaced.
        assert_eq!(chart.rows[0].median, 48.1);
        let fresh = &chart.rows[1];
        assert_eq!(fresh.label, "in order, common pts, polled after every push");
        assert_eq!((fresh.low, fresh.median, fresh.high), (40.0, 50.0, 52.6));
        assert_eq!(chart.title, "core");
        // No fresh storage figures: the file is untouched.
        assert_eq!(
            fs::read_to_string(data.join("storage.csv")).unwrap(),
            storage
        );

        // And the charts render from there.
        let out = dir.path().join("docs/charts");
        let written = render_all(&data, &out).unwrap();
        assert_eq!(written, vec![out.join("core.svg"), out.join("storage.svg")]);
        assert_well_formed(&fs::read_to_string(out.join("core.svg")).unwrap());
    }

    #[test]
    fn collects_end_to_end_figures() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("end_to_end.csv");
        write(
            &results,
            "scenario,events,runs,min,median,max\n\
             catch_up,1000000,7,4300000,5770000,6270000\n\
             batch/16,1000000,7,5330000,5890000,6010000\n",
        );
        let figures = Figures {
            end_to_end: end_to_end_figures(&results).unwrap(),
            ..Figures::default()
        };
        let mut chart = parse_chart(
            "end_to_end.csv",
            "# title: e2e\n# command: x\nlabel,low,median,high,unit\n\
             catch up a backlog by getDifference,1,2,3,M updates/s\n",
        )
        .unwrap();
        let source = sources()
            .into_iter()
            .find(|source| source.chart == "end_to_end")
            .unwrap();
        assert!(refresh(&mut chart, &source, &figures));
        assert_eq!(chart.rows.len(), 2);
        assert_eq!(
            (chart.rows[0].low, chart.rows[0].median, chart.rows[0].high),
            (4.3, 5.77, 6.27)
        );
        assert_eq!(
            chart.rows[1].label,
            "live, in order, handle_batch, 16 per read"
        );

        write(
            &results,
            "scenario,events,runs,min,median,max\ncatch_up,1,2\n",
        );
        let error = end_to_end_figures(&results).unwrap_err();
        assert!(
            error.ends_with(
                ":2: expected `scenario,events,runs,min,median,max`, found `catch_up,1,2`"
            ),
            "{error}"
        );
    }
}
