//! The data files.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Chart {
    pub(super) title: String,
    pub(super) command: String,
    pub(super) log: bool,
    /// A target to mark with a dashed line, in the chart's unit.
    pub(super) goal: Option<f64>,
    pub(super) rows: Vec<Row>,
}

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub(super) label: String,
    pub(super) low: f64,
    pub(super) median: f64,
    pub(super) high: f64,
    pub(super) unit: String,
    /// low, median and high as written (`5.0` stays `5.0`).
    pub(super) text: [String; 3],
}

impl Row {
    pub(super) fn new(label: String, [low, median, high]: [f64; 3], unit: String) -> Row {
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

pub(super) const HEADER: &str = "label,low,median,high,unit";

pub(super) fn read_chart(path: &Path) -> Result<Chart> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    parse_chart(&path.display().to_string(), &text)
}

/// Parses a chart's CSV; `name` is only used in the error messages (`name:line: what`).
pub(super) fn parse_chart(name: &str, text: &str) -> Result<Chart> {
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
pub(super) fn split_fields(line: &str) -> std::result::Result<Vec<String>, String> {
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

pub(super) fn quote(field: &str) -> String {
    if field.contains([',', '"']) || field.trim() != field {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The chart as its CSV file.
pub(super) fn to_csv(chart: &Chart) -> String {
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
