//! Fresh figures from the benches.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Bench {
    /// Criterion's output, by full benchmark id (`group/function[/value]`).
    Criterion,
    /// `target/bench-results/end_to_end.csv`, by scenario key.
    EndToEnd,
}

/// A chart whose rows can be refreshed, and which bench output gives each row.
pub(super) struct Source {
    pub(super) chart: &'static str,
    pub(super) bench: Bench,
    /// (bench id, row label), in the chart's order.
    pub(super) rows: Vec<(String, String)>,
}

/// Which bench gives which row of which chart. `events_loaded` is a record of one run on a
/// loaded machine and is not refreshed.
pub(super) fn sources() -> Vec<Source> {
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
pub(super) type Figure = (f64, f64, f64);

/// Fresh figures by bench id.
#[derive(Debug, Default)]
pub(super) struct Figures {
    pub(super) criterion: HashMap<String, Figure>,
    pub(super) end_to_end: HashMap<String, Figure>,
}

/// Reads every `new/benchmark.json` under `dir` (criterion's output directory) with a
/// throughput in elements, and its `estimates.json`: elements per second at the median's
/// confidence interval and point estimate. A missing `dir` gives no figures.
pub(super) fn criterion_figures(dir: &Path) -> Result<HashMap<String, Figure>> {
    let mut figures = HashMap::new();
    if dir.is_dir() {
        walk_criterion(dir, &mut figures)?;
    }
    Ok(figures)
}

pub(super) fn walk_criterion(dir: &Path, figures: &mut HashMap<String, Figure>) -> Result {
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

pub(super) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
}

/// One benchmark's id and throughput; `None` when it has no throughput in elements.
pub(super) fn criterion_figure(
    benchmark: &Path,
    estimates: &Path,
) -> Result<Option<(String, Figure)>> {
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
pub(super) fn end_to_end_figures(path: &Path) -> Result<HashMap<String, Figure>> {
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
pub(super) fn unit_scale(unit: &str) -> f64 {
    match unit.split_whitespace().next() {
        Some("k") => 1e3,
        Some("M") => 1e6,
        Some("G") => 1e9,
        _ => 1.0,
    }
}

/// A fresh figure as the tables give them: one decimal from 10 up, else three significant
/// digits.
pub(super) fn format_figure(value: f64) -> String {
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
pub(super) fn collect_into(data: &Path, figures: &Figures) -> Result<Vec<PathBuf>> {
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
pub(super) fn refresh(chart: &mut Chart, source: &Source, figures: &Figures) -> bool {
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
