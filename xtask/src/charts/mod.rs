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

mod collect;
mod data;
mod svg;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use collect::*;
use data::*;
use svg::*;

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
