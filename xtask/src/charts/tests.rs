//! Parsing, collecting and rendering, on samples.

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
        end_to_end: end_to_end_figures(&dir.path().join("target/bench-results/none.csv")).unwrap(),
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
        error.ends_with(":2: expected `scenario,events,runs,min,median,max`, found `catch_up,1,2`"),
        "{error}"
    );
}
