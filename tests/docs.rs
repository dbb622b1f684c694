//! The operations docs as a contract: `docs/metrics.md` against the metrics in `src/` and against
//! what a running worker exports; the alert rules and the Grafana dashboard against the
//! documented metrics; the IAM policies against the AWS SDK calls in `src/`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

const METRICS_DOC: &str = "docs/metrics.md";
const RULES: &str = "docs/alerts/shardbridge.rules.yml";
const RULE_TESTS: &str = "docs/alerts/shardbridge.rules.test.yml";
const OPERATIONS: &str = "docs/operations.md";
const DASHBOARD: &str = "docs/grafana/shardbridge.json";
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];
/// Labels Prometheus adds to every scraped series, usable in `by (…)` and legends.
const TARGET_LABELS: [&str; 4] = ["instance", "pod", "job", "namespace"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn fail_on(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Rust source scanning (no parser: comments blanked out, string literals read as they are).

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `src/`: (path relative to the crate, text with comments blanked out).
fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(!files.is_empty(), "no source files under src/");
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, strip_comments(&text))
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The end (exclusive) of the string literal that starts at `i` (`"`, `r"`, `r#"`, `b"`…).
fn literal_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c[j] == 'b' {
        j += 1;
    }
    if j < c.len() && c[j] == 'r' {
        let mut k = j + 1;
        while k < c.len() && c[k] == '#' {
            k += 1;
        }
        if k >= c.len() || c[k] != '"' {
            return None;
        }
        let hashes = k - j - 1;
        let mut m = k + 1;
        while m < c.len() {
            if c[m] == '"'
                && c[m + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&h| h == '#')
                    .count()
                    == hashes
            {
                return Some(m + 1 + hashes);
            }
            m += 1;
        }
        return Some(c.len());
    }
    if j >= c.len() || c[j] != '"' {
        return None;
    }
    let mut m = j + 1;
    while m < c.len() {
        match c[m] {
            '\\' => m += 2,
            '"' => return Some(m + 1),
            _ => m += 1,
        }
    }
    Some(c.len())
}

/// The text with `//` and `/* */` comments replaced by spaces (newlines kept), so that a
/// metric name or SDK call in a comment or doc example does not count.
fn strip_comments(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        if (c[i] == '"' || (!prev_ident && (c[i] == 'r' || c[i] == 'b')))
            && literal_end(&c, i).is_some()
        {
            let end = literal_end(&c, i).unwrap();
            out.extend(&c[i..end]);
            i = end;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '"'), or a lifetime.
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&k| c[k] == '\'').map(|k| k + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            let end = end.unwrap_or(i + 1);
            out.extend(&c[i..end]);
            i = end;
        } else if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if c[i] == '\n' { '\n' } else { ' ' });
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The contents of a plain `"…"` literal at `i` (escapes kept as written), and its end.
fn plain_literal(c: &[char], i: usize) -> Option<(String, usize)> {
    if c.get(i) != Some(&'"') {
        return None;
    }
    let end = literal_end(c, i)?;
    Some((c[i + 1..end - 1].iter().collect(), end))
}

fn skip_ws(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

fn line_of(c: &[char], i: usize) -> usize {
    c[..i].iter().filter(|&&x| x == '\n').count() + 1
}

/// One `counter!` / `gauge!` / `histogram!` / `describe_*!` macro call naming a metric.
#[derive(Debug)]
struct MacroUse {
    kind: &'static str,
    describe: bool,
    name: String,
    /// Label keys, with the value when it is a literal.
    labels: Vec<(String, Option<String>)>,
    at: String,
}

/// The metric macro calls of the whole source; non-literal metric names are problems.
fn metric_macros(problems: &mut Vec<String>) -> Vec<MacroUse> {
    let mut uses = Vec::new();
    for (file, code) in sources() {
        let c: Vec<char> = code.chars().collect();
        for kind in ["counter", "gauge", "histogram"] {
            let needle: Vec<char> = format!("{kind}!(").chars().collect();
            let mut i = 0;
            while i + needle.len() <= c.len() {
                if c[i..i + needle.len()] != needle[..] {
                    i += 1;
                    continue;
                }
                let before: String = c[..i].iter().rev().take(9).collect::<String>();
                let describe = before.starts_with("_ebircsed");
                let macro_start = if describe { i - 9 } else { i };
                if macro_start > 0 && is_ident(c[macro_start - 1]) {
                    i += 1;
                    continue;
                }
                let at = format!("{file}:{}", line_of(&c, i));
                let open = i + needle.len() - 1;
                // The arguments, up to the matching parenthesis.
                let (mut depth, mut j) = (0usize, open);
                while j < c.len() {
                    match c[j] {
                        '(' | '[' | '{' => depth += 1,
                        ')' | ']' | '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        '"' => {
                            j = literal_end(&c, j).unwrap() - 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let args = &c[open + 1..j];
                let first = skip_ws(args, 0);
                let Some((name, mut k)) = plain_literal(args, first) else {
                    problems.push(format!(
                        "{at}: {kind}! without a string literal as the metric name (the docs \
                         contract needs literal names)"
                    ));
                    i = j;
                    continue;
                };
                let mut labels = Vec::new();
                while k < args.len() {
                    if args[k] == '"' {
                        let (text, end) = plain_literal(args, k).unwrap();
                        let after = skip_ws(args, end);
                        if args.get(after) == Some(&'=') && args.get(after + 1) == Some(&'>') {
                            let v = skip_ws(args, after + 2);
                            labels.push((text, plain_literal(args, v).map(|(s, _)| s)));
                        }
                        k = end;
                    } else {
                        k += 1;
                    }
                }
                uses.push(MacroUse {
                    kind,
                    describe,
                    name,
                    labels,
                    at,
                });
                i = j;
            }
        }
    }
    uses
}

// ---------------------------------------------------------------------------------------------
// docs/metrics.md

#[derive(Debug)]
struct DocMetric {
    kind: String,
    labels: BTreeSet<String>,
}

#[derive(Debug)]
struct MetricsDoc {
    metrics: BTreeMap<String, DocMetric>,
    /// (metric, label) -> the closed set of values.
    values: BTreeMap<(String, String), BTreeSet<String>>,
    text: String,
}

impl MetricsDoc {
    /// The documented metric a series name belongs to: itself, or a histogram's
    /// `_bucket` / `_sum` / `_count` series.
    fn family_of(&self, series: &str) -> Option<&str> {
        if let Some((name, _)) = self.metrics.get_key_value(series) {
            return Some(name);
        }
        HISTOGRAM_SUFFIXES.iter().find_map(|s| {
            let base = series.strip_suffix(s)?;
            let (name, m) = self.metrics.get_key_value(base)?;
            (m.kind == "histogram").then_some(name.as_str())
        })
    }
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

fn metrics_doc() -> MetricsDoc {
    let text = read(METRICS_DOC);
    let mut metrics = BTreeMap::new();
    let mut values = BTreeMap::new();
    let mut section = String::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{METRICS_DOC}:{}", n + 1);
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
            continue;
        }
        if !line.starts_with("| `shardbridge_") {
            continue;
        }
        let row = cells(line);
        match section.as_str() {
            "Metric reference" => {
                if row.len() != 4 {
                    problems.push(format!(
                        "{at}: a metric row has 4 cells (metric, type, labels, meaning)"
                    ));
                    continue;
                }
                let names = backticked(&row[0]);
                let kind = row[1].clone();
                if names.len() != 1 {
                    problems.push(format!("{at}: one metric per row"));
                    continue;
                }
                if !["counter", "gauge", "histogram"].contains(&kind.as_str()) {
                    problems.push(format!(
                        "{at}: type {kind:?} is not counter, gauge or histogram"
                    ));
                }
                if row[3].is_empty() {
                    problems.push(format!("{at}: no meaning"));
                }
                let labels: BTreeSet<String> = backticked(&row[2]).into_iter().collect();
                if metrics
                    .insert(names[0].clone(), DocMetric { kind, labels })
                    .is_some()
                {
                    problems.push(format!("{at}: {} documented twice", names[0]));
                }
            }
            "Label values" => {
                if row.len() != 3 {
                    problems.push(format!(
                        "{at}: a label row has 3 cells (metric, label, values)"
                    ));
                    continue;
                }
                let (metric, label) = (backticked(&row[0]), backticked(&row[1]));
                if metric.len() != 1 || label.len() != 1 {
                    problems.push(format!("{at}: one metric and one label per row"));
                    continue;
                }
                let set: BTreeSet<String> = backticked(&row[2]).into_iter().collect();
                if set.is_empty() {
                    problems.push(format!("{at}: no values"));
                }
                if values
                    .insert((metric[0].clone(), label[0].clone()), set)
                    .is_some()
                {
                    problems.push(format!(
                        "{at}: values of {}/{} given twice",
                        metric[0], label[0]
                    ));
                }
            }
            other => problems.push(format!(
                "{at}: a metric row outside the sections \"Metric reference\" and \"Label \
                 values\" (in {other:?})"
            )),
        }
    }
    for (metric, label) in values.keys() {
        match metrics.get(metric) {
            None => problems.push(format!(
                "{METRICS_DOC}: label values of {metric}, which is not in the metric reference"
            )),
            Some(m) if !m.labels.contains(label) => problems.push(format!(
                "{METRICS_DOC}: values of label {label} of {metric}, which has no such label"
            )),
            Some(_) => {}
        }
    }
    fail_on(problems, METRICS_DOC);
    assert!(
        metrics.len() > 10,
        "{METRICS_DOC}: only {} metric rows found; is the table format intact?",
        metrics.len()
    );
    MetricsDoc {
        metrics,
        values,
        text,
    }
}

/// Every `shardbridge_…` identifier in a text, with its byte offset.
fn metric_tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("shardbridge_") {
        let start = i + found;
        let mut end = start;
        while end < b.len() && is_ident(b[end] as char) {
            end += 1;
        }
        if start == 0 || !is_ident(b[start - 1] as char) {
            out.push((start, text[start..end].to_string()));
        }
        i = end;
    }
    out
}

/// 2a. Every metric the code records or describes has its row in docs/metrics.md, with the
/// code's type and label names; every metric the doc names exists in the code.
#[test]
fn every_metric_in_the_source_is_documented_and_every_documented_one_exists() {
    let doc = metrics_doc();
    let mut problems = Vec::new();
    let uses = metric_macros(&mut problems);
    let mut in_code: BTreeMap<String, (&'static str, BTreeSet<String>, String)> = BTreeMap::new();
    for u in &uses {
        if !u.name.starts_with("shardbridge_") {
            problems.push(format!(
                "{}: metric {:?} does not follow the naming scheme shardbridge_<area>_<what>_<unit>",
                u.at, u.name
            ));
            continue;
        }
        let entry =
            in_code
                .entry(u.name.clone())
                .or_insert((u.kind, BTreeSet::new(), u.at.clone()));
        if entry.0 != u.kind {
            problems.push(format!(
                "{}: {} used as a {} here and as a {} at {}",
                u.at, u.name, u.kind, entry.0, entry.2
            ));
        }
        entry.1.extend(u.labels.iter().map(|(k, _)| k.clone()));
    }
    // Literal metric names outside the macros (a const passed to a macro) count too.
    for (file, code) in sources() {
        let c: Vec<char> = code.chars().collect();
        for (i, _) in code.char_indices().filter(|(_, ch)| *ch == '"') {
            let ci = code[..i].chars().count();
            if let Some((lit, _)) = plain_literal(&c, ci) {
                if lit.starts_with("shardbridge_") && !in_code.contains_key(&lit) {
                    problems.push(format!(
                        "{file}:{}: the literal {lit:?} looks like a metric name but is not in a \
                         counter!/gauge!/histogram! call with a literal name",
                        line_of(&c, ci)
                    ));
                }
            }
        }
    }
    for (name, (kind, labels, at)) in &in_code {
        let Some(d) = doc.metrics.get(name) else {
            problems.push(format!(
                "{at}: {kind} {name} has no row in {METRICS_DOC} (section \"Metric reference\")"
            ));
            continue;
        };
        if d.kind != *kind {
            problems.push(format!(
                "{METRICS_DOC}: {name} is documented as a {} but the code ({at}) makes a {kind}",
                d.kind
            ));
        }
        if &d.labels != labels {
            problems.push(format!(
                "{METRICS_DOC}: {name} is documented with labels {:?} but the code has {:?}",
                d.labels, labels
            ));
        }
    }
    // Literal label values in the code are in the documented closed sets.
    for u in &uses {
        for (key, value) in &u.labels {
            let Some(value) = value else { continue };
            if key == "connector" {
                continue; // the configured name; only the rate-limit waits use a literal ("")
            }
            match doc.values.get(&(u.name.clone(), key.clone())) {
                None => problems.push(format!(
                    "{}: {} has the literal value {value:?} for label {key}, but {METRICS_DOC} \
                     lists no values for it (section \"Label values\")",
                    u.at, u.name
                )),
                Some(set) if !set.contains(value) => problems.push(format!(
                    "{}: {}{{{key}={value:?}}} is not among the documented values {set:?}",
                    u.at, u.name
                )),
                Some(_) => {}
            }
        }
    }
    // No stale rows, and no stale mention anywhere in the doc.
    for name in doc.metrics.keys() {
        if !in_code.contains_key(name) {
            problems.push(format!(
                "{METRICS_DOC}: {name} is documented but no longer in the code (remove its row)"
            ));
        }
    }
    for (offset, token) in metric_tokens(&doc.text) {
        // A pattern (`shardbridge_kafka_*`, `shardbridge_<area>_…`) names no metric.
        let wildcard = doc.text[offset + token.len()..].starts_with(['*', '<']);
        if !wildcard && doc.family_of(&token).is_none() && !in_code.contains_key(&token) {
            problems.push(format!(
                "{METRICS_DOC}: mentions {token}, which is not a metric of the code"
            ));
        }
    }
    let undescribed: BTreeSet<&str> = in_code
        .keys()
        .filter(|n| !uses.iter().any(|u| u.describe && &u.name == *n))
        .map(String::as_str)
        .collect();
    if !undescribed.is_empty() {
        // Not a failure: the exporter then prints no `# HELP` line for them.
        eprintln!("note: metrics without a describe_*! call: {undescribed:?}");
    }
    fail_on(problems, "metrics in src/ against docs/metrics.md");
}

// ---------------------------------------------------------------------------------------------
// 2b. A running worker.

/// A Prometheus text sample: (series name, labels).
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>)> {
    let c: Vec<char> = line.chars().collect();
    let name_end = c.iter().position(|&x| x == '{' || x == ' ')?;
    let name: String = c[..name_end].iter().collect();
    let mut labels = BTreeMap::new();
    if c[name_end] == '{' {
        let mut i = name_end + 1;
        loop {
            while i < c.len() && (c[i] == ',' || c[i] == ' ') {
                i += 1;
            }
            if c.get(i) == Some(&'}') {
                break;
            }
            let eq = (i..c.len()).find(|&k| c[k] == '=')?;
            let key: String = c[i..eq].iter().collect();
            if c.get(eq + 1) != Some(&'"') {
                return None;
            }
            let mut value = String::new();
            let mut k = eq + 2;
            while k < c.len() && c[k] != '"' {
                if c[k] == '\\' {
                    k += 1;
                    value.push(match c.get(k) {
                        Some('n') => '\n',
                        Some(&x) => x,
                        None => return None,
                    });
                } else {
                    value.push(c[k]);
                }
                k += 1;
            }
            labels.insert(key.trim().to_string(), value);
            i = k + 1;
        }
    }
    Some((name, labels))
}

fn live_config(endpoint: &str, port: u16, table: &str, leases: &str, out: &Path) -> String {
    format!(
        r#"
[worker]
id = "docs-worker"
listen = "127.0.0.1:{port}"

[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[connectors]]
name = "docs"
[connectors.source]
type = "dynamodb-streams"
table = "{table}"
poll_idle_ms = 50
[connectors.leases]
table = "{leases}"
failover_ms = 3000
[connectors.format]
type = "plain"
[connectors.sink]
type = "file"
path = "{out}"
"#,
        out = out.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_exports_only_documented_metrics_with_documented_labels() {
    use aws_sdk_dynamodb::types::StreamViewType;
    use common::*;

    let doc = metrics_doc();
    let endpoint = aws_endpoint();
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await);
    let table = unique("docs");
    let leases = unique("docs-leases");
    workload::create_table(&ddb, &table, StreamViewType::NewAndOldImages).await;
    let plan = workload::plan(10, 40);
    let changes: usize = plan.iter().map(|(_, c)| c.len()).sum();
    workload::apply(&ddb, &table, &plan).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("docs.toml");
    let port = free_port();
    std::fs::write(&cfg, live_config(&endpoint, port, &table, &leases, &out)).unwrap();
    let mut run = Running::start(&cfg, &dir.path().join("docs.log"));

    wait_for(
        &format!("{changes} records in the file sink"),
        Duration::from_secs(90),
        || (line_count(&out) >= changes).then_some(()),
    );
    // The checkpoint follows the write; then every metric of this run has been recorded.
    // (The counter exists at 0 from the start: wait for a checkpoint counted, not for the name.)
    let text = wait_for("a checkpoint in /metrics", Duration::from_secs(30), || {
        let (status, body) = http_get(port, "/metrics")?;
        let checkpoints = metric_value(
            &body,
            "shardbridge_checkpoint_writes_total",
            r#"connector="docs""#,
        );
        (status == 200 && checkpoints.unwrap_or(0.0) >= 1.0).then_some(body)
    });

    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            problems.push(format!("unreadable TYPE line {line:?}"));
            continue;
        };
        if !family.starts_with("shardbridge_") {
            continue;
        }
        types.insert(family.to_string(), kind.to_string());
        match doc.metrics.get(family) {
            None => problems.push(format!(
                "the worker exports {kind} {family}, which {METRICS_DOC} does not document"
            )),
            Some(d) if d.kind != kind => problems.push(format!(
                "the worker exports {family} as a {kind}; {METRICS_DOC} says {} (a histogram \
                 whose name does not end in _seconds is rendered as a summary)",
                d.kind
            )),
            Some(_) => {}
        }
    }
    let mut seen = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("shardbridge_")) {
        let Some((series, labels)) = parse_sample(line) else {
            problems.push(format!("unreadable sample {line:?}"));
            continue;
        };
        let family = if types.contains_key(&series) {
            series.clone()
        } else {
            let stripped = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s).filter(|b| types.contains_key(*b)));
            match stripped {
                Some(f) => f.to_string(),
                None => {
                    problems.push(format!("sample {series} has no # TYPE line"));
                    continue;
                }
            }
        };
        seen.insert(family.clone());
        let Some(d) = doc.metrics.get(&family) else {
            continue; // reported above
        };
        for (key, value) in &labels {
            let structural = (key == "le" && series.ends_with("_bucket"))
                || (key == "quantile" && series == family);
            if structural {
                continue;
            }
            if !d.labels.contains(key) {
                problems.push(format!(
                    "{series} has label {key}={value:?}, not documented for {family}"
                ));
            }
            if let Some(set) = doc.values.get(&(family.clone(), key.clone())) {
                if !set.contains(value) {
                    problems.push(format!(
                        "{series} has {key}={value:?}, not among the documented values {set:?}"
                    ));
                }
            }
        }
        for key in &d.labels {
            if !labels.contains_key(key) {
                problems.push(format!("{series} lacks the documented label {key}"));
            }
        }
        // The configured name; the rate-limit waits of the retry counter carry "" (documented).
        let own =
            |c: &String| c == "docs" || (c.is_empty() && family.starts_with("shardbridge_retry_"));
        if labels.get("connector").is_some_and(|c| !own(c)) {
            problems.push(format!(
                "{line}: a connector label other than the configured one"
            ));
        }
    }
    // The run exercised the main paths: a scrape missing these proves nothing.
    for expected in [
        "shardbridge_source_records_read_total",
        "shardbridge_source_get_records_calls_total",
        "shardbridge_source_iterator_age_milliseconds",
        "shardbridge_sink_records_written_total",
        "shardbridge_sink_write_duration_seconds",
        "shardbridge_checkpoint_writes_total",
        "shardbridge_lease_table_calls_total",
        "shardbridge_leases_acquired_total",
        "shardbridge_connector_running",
        "shardbridge_shards_owned",
        "shardbridge_seconds_since_success",
        "shardbridge_seconds_since_checkpoint",
        "shardbridge_end_to_end_latency_seconds",
    ] {
        if !seen.contains(expected) {
            problems.push(format!("the scrape has no {expected}"));
        }
    }
    let records = metric_value(
        &text,
        "shardbridge_sink_records_written_total",
        r#"connector="docs""#,
    );
    if records.unwrap_or(0.0) < changes as f64 {
        problems.push(format!(
            "shardbridge_sink_records_written_total is {records:?}, expected at least {changes}"
        ));
    }
    // Every delivered record's end-to-end latency is recorded.
    let latencies = metric_value(
        &text,
        "shardbridge_end_to_end_latency_seconds_count",
        r#"connector="docs""#,
    );
    if latencies.unwrap_or(0.0) < changes as f64 {
        problems.push(format!(
            "shardbridge_end_to_end_latency_seconds_count is {latencies:?}, expected at least {changes}"
        ));
    }
    // Counters that nothing has incremented exist at 0 from the start.
    for (name, labels) in [
        ("shardbridge_sink_errors_total", r#"class="transient""#),
        ("shardbridge_sink_errors_total", r#"class="fatal""#),
        (
            "shardbridge_source_get_records_errors_total",
            r#"class="throttled""#,
        ),
        ("shardbridge_source_data_loss_total", ""),
        ("shardbridge_leases_lost_total", ""),
        ("shardbridge_intents_replayed_total", ""),
    ] {
        let labels = if labels.is_empty() {
            r#"connector="docs""#.to_string()
        } else {
            format!(r#"connector="docs",{labels}"#)
        };
        let value = metric_value(&text, name, &labels);
        if value != Some(0.0) {
            problems.push(format!("{name}{{{labels}}} is {value:?}, expected 0"));
        }
    }
    // Every dependency answered within the last seconds of a healthy run.
    for dependency in ["source", "sink", "lease_table"] {
        let labels = format!(r#"connector="docs",dependency="{dependency}""#);
        let value = metric_value(&text, "shardbridge_seconds_since_success", &labels);
        if !value.is_some_and(|v| (0.0..10.0).contains(&v)) {
            problems.push(format!(
                "shardbridge_seconds_since_success{{{labels}}} is {value:?}, expected under 10"
            ));
        }
    }
    assert_eq!(run.stop(Duration::from_secs(30)), 0, "{}", run.log_text());
    if !problems.is_empty() {
        eprintln!("scrape:\n{text}");
    }
    fail_on(problems, "the live /metrics against docs/metrics.md");
}

// ---------------------------------------------------------------------------------------------
// PromQL expressions (alert rules, dashboard): metric names, label matchers, grouping labels.

/// Checks one PromQL expression against the doc; returns the documented metrics it uses.
fn check_promql(
    doc: &MetricsDoc,
    expr: &str,
    at: &str,
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut labels_available: BTreeSet<String> =
        TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for (offset, token) in metric_tokens(expr) {
        let Some(family) = doc.family_of(&token) else {
            problems.push(format!("{at}: {token} is not a metric of {METRICS_DOC}"));
            continue;
        };
        let d = &doc.metrics[family];
        if d.kind == "histogram" && token == family {
            problems.push(format!(
                "{at}: {token} is a histogram: query {token}_bucket, _sum or _count"
            ));
        }
        labels_available.extend(d.labels.iter().cloned());
        if d.kind == "histogram" && token.ends_with("_bucket") {
            labels_available.insert("le".into());
        }
        used.insert(family.to_string());
        // The selector right after the name.
        let rest = &expr[offset + token.len()..];
        let Some(selector) = rest.strip_prefix('{') else {
            continue;
        };
        let Some(close) = selector.find('}') else {
            problems.push(format!("{at}: unclosed selector after {token}"));
            continue;
        };
        for matcher in selector[..close]
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            let Some(op_at) = matcher.find(['=', '!']) else {
                problems.push(format!("{at}: unreadable matcher {matcher:?}"));
                continue;
            };
            let key = matcher[..op_at].trim();
            let (op, value) = ["=~", "!~", "!=", "="]
                .iter()
                .find_map(|op| {
                    matcher[op_at..]
                        .strip_prefix(op)
                        .map(|v| (*op, v.trim().trim_matches('"')))
                })
                .unwrap_or(("?", ""));
            if !d.labels.contains(key) {
                problems.push(format!(
                    "{at}: {token} has no label {key} (documented: {:?})",
                    d.labels
                ));
                continue;
            }
            let Some(set) = doc.values.get(&(family.to_string(), key.to_string())) else {
                continue;
            };
            let wanted: Vec<&str> = match op {
                "=" | "!=" => vec![value],
                _ if value.contains('$') => vec![],
                // A regex of plain alternatives: each must be a documented value.
                _ if value.chars().all(|ch| is_ident(ch) || ch == '|') => {
                    value.split('|').collect()
                }
                _ => vec![],
            };
            for v in wanted {
                if !set.contains(v) {
                    problems.push(format!(
                        "{at}: {token}{{{key}{op}\"{v}\"}}: {v:?} is not among the documented \
                         values {set:?}"
                    ));
                }
            }
        }
    }
    // Grouping and matching labels exist on the metrics involved.
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut from = 0;
        while let Some(found) = expr[from..].find(kw) {
            let start = from + found;
            from = start + kw.len();
            let before_ok = start == 0 || !is_ident(expr.as_bytes()[start - 1] as char);
            let after = expr[from..].trim_start();
            if !before_ok || !after.starts_with('(') {
                continue;
            }
            let Some(close) = after.find(')') else {
                continue;
            };
            for label in after[1..close]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                if !labels_available.contains(label) {
                    problems.push(format!(
                        "{at}: `{kw} ({label})`: no metric of this expression has a label \
                         {label}"
                    ));
                }
            }
        }
    }
    used
}

// ---------------------------------------------------------------------------------------------
// A tiny reader of the YAML the rule files use: block mappings and sequences, plain, quoted
// and block (`|`, `>`) scalars, `[]` and `{}`. Anything else is an error, so the files stay
// in a subset that real YAML parsers (and promtool) read the same way.

struct Yaml {
    lines: Vec<String>,
    pos: usize,
    file: String,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn skippable(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// `key: rest` or `key:`, for a plain key.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let colon = text.find(':')?;
    let key = &text[..colon];
    let rest = &text[colon + 1..];
    let plain_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    (plain_key && (rest.is_empty() || rest.starts_with(' '))).then(|| (key, rest.trim()))
}

impl Yaml {
    fn parse(file: &str, text: &str) -> Result<Value, String> {
        if text.contains('\t') {
            return Err(format!("{file}: tabs are not allowed in YAML indentation"));
        }
        let mut y = Yaml {
            lines: text.lines().map(str::to_string).collect(),
            pos: 0,
            file: file.to_string(),
        };
        let v = y.block(0)?;
        y.skip();
        match y.pos < y.lines.len() {
            true => Err(y.err("unexpected content")),
            false => Ok(v),
        }
    }

    fn err(&self, what: &str) -> String {
        format!("{}:{}: {what}", self.file, self.pos + 1)
    }

    fn skip(&mut self) {
        while self.pos < self.lines.len() && skippable(&self.lines[self.pos]) {
            self.pos += 1;
        }
    }

    /// The block starting at the next line, indented at least `min`.
    fn block(&mut self, min: usize) -> Result<Value, String> {
        self.skip();
        let Some(line) = self.lines.get(self.pos) else {
            return Ok(Value::Null);
        };
        let ind = indent_of(line);
        if ind < min {
            return Ok(Value::Null);
        }
        let t = line.trim_start();
        if t == "-" || t.starts_with("- ") {
            self.list(ind)
        } else {
            self.map(ind)
        }
    }

    fn map(&mut self, ind: usize) -> Result<Value, String> {
        let mut m = serde_json::Map::new();
        loop {
            self.skip();
            let Some(line) = self.lines.get(self.pos).cloned() else {
                break;
            };
            let li = indent_of(&line);
            if li < ind {
                break;
            }
            if li > ind {
                return Err(self.err("unexpected indentation"));
            }
            let t = line.trim_start();
            if t.starts_with("- ") {
                return Err(self.err(
                    "a sequence where a key was expected (indent sequences under their key)",
                ));
            }
            let (key, rest) = split_key(t).ok_or_else(|| self.err("expected `key: value`"))?;
            let key = key.to_string();
            let rest = rest.to_string();
            self.pos += 1;
            let v = self.value(&rest, ind)?;
            if m.insert(key.clone(), v).is_some() {
                return Err(self.err(&format!("duplicate key {key}")));
            }
        }
        Ok(Value::Object(m))
    }

    fn list(&mut self, ind: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        loop {
            self.skip();
            let Some(line) = self.lines.get(self.pos).cloned() else {
                break;
            };
            let li = indent_of(&line);
            if li < ind {
                break;
            }
            let t = line.trim_start();
            if li > ind || !(t == "-" || t.starts_with("- ")) {
                return Err(self.err("expected a sequence item `- …`"));
            }
            let item = t[1..].trim_start();
            if item.is_empty() {
                self.pos += 1;
                items.push(self.block(ind + 1)?);
            } else if split_key(item).is_some() {
                // `- key: value`: a mapping whose keys line up with this first one.
                let inner = li + (t.len() - item.len());
                self.lines[self.pos] = format!("{}{item}", " ".repeat(inner));
                items.push(self.map(inner)?);
            } else {
                self.pos += 1;
                items.push(Value::String(self.scalar(item)?));
            }
        }
        Ok(Value::Array(items))
    }

    /// The value after `key:` on a line indented `ind`.
    fn value(&mut self, rest: &str, ind: usize) -> Result<Value, String> {
        if rest.is_empty() || rest.starts_with('#') {
            return self.block(ind + 1);
        }
        if rest == "[]" {
            return Ok(Value::Array(vec![]));
        }
        if rest == "{}" {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        if let Some(header) = rest.strip_prefix(['|', '>']) {
            let folded = rest.starts_with('>');
            let chomp = header.trim();
            if !["", "-", "+"].contains(&chomp) {
                return Err(self.err("unsupported block scalar header"));
            }
            let mut body: Vec<String> = Vec::new();
            let mut block_indent = None;
            while let Some(line) = self.lines.get(self.pos) {
                if line.trim().is_empty() {
                    body.push(String::new());
                    self.pos += 1;
                    continue;
                }
                let li = indent_of(line);
                if li <= ind {
                    break;
                }
                let bi = *block_indent.get_or_insert(li);
                if li < bi {
                    return Err(self.err("block scalar line less indented than its first line"));
                }
                body.push(line[bi..].to_string());
                self.pos += 1;
            }
            while body.last().is_some_and(String::is_empty) {
                body.pop();
            }
            let mut text = if folded {
                let mut s = String::new();
                // A line break becomes a space; a blank line a newline (more-indented lines
                // keep their breaks).
                for (i, l) in body.iter().enumerate() {
                    if l.is_empty() {
                        s.push('\n');
                        continue;
                    }
                    if i > 0 && !body[i - 1].is_empty() {
                        let literal = l.starts_with(' ') || body[i - 1].starts_with(' ');
                        s.push(if literal { '\n' } else { ' ' });
                    }
                    s.push_str(l);
                }
                s
            } else {
                body.join("\n")
            };
            if chomp != "-" {
                text.push('\n');
            }
            return Ok(Value::String(text));
        }
        Ok(Value::String(self.scalar(rest)?))
    }

    fn scalar(&self, s: &str) -> Result<String, String> {
        if let Some(body) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some(c @ ('"' | '\\' | '/')) => out.push(c),
                        other => return Err(self.err(&format!("unsupported escape \\{other:?}"))),
                    },
                    '"' => {
                        let tail = chars.as_str().trim();
                        if !(tail.is_empty() || tail.starts_with('#')) {
                            return Err(self.err("text after a quoted scalar"));
                        }
                        return Ok(out);
                    }
                    c => out.push(c),
                }
            }
            return Err(self.err("unclosed double quote"));
        }
        if let Some(body) = s.strip_prefix('\'') {
            let mut out = String::new();
            let mut rest = body;
            loop {
                let q = rest
                    .find('\'')
                    .ok_or_else(|| self.err("unclosed single quote"))?;
                out.push_str(&rest[..q]);
                rest = &rest[q + 1..];
                if let Some(r) = rest.strip_prefix('\'') {
                    out.push('\'');
                    rest = r;
                } else {
                    let tail = rest.trim();
                    if !(tail.is_empty() || tail.starts_with('#')) {
                        return Err(self.err("text after a quoted scalar"));
                    }
                    return Ok(out);
                }
            }
        }
        if s.starts_with(['[', '{', '&', '*', '!', '%', '@', '`', '|', '>']) {
            return Err(self.err(&format!(
                "the plain scalar {s:?} starts with an indicator: quote it"
            )));
        }
        let s = match s.find(" #") {
            Some(i) => &s[..i],
            None => s,
        };
        if s.contains(": ") {
            return Err(self.err(&format!("the plain scalar {s:?} contains \": \": quote it")));
        }
        Ok(s.trim().to_string())
    }
}

#[test]
fn the_yaml_reader_reads_what_it_claims() {
    let text = "a: 1\nb:\n  - x: \"q: \\\"r\\\"\"\n    y: 'it''s'\n  - plain # note\nc: |\n  one\n    two\nd: >-\n  folded\n  line\n\n  next\ne: []\n";
    let v = Yaml::parse("t", text).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "a": "1",
            "b": [{"x": "q: \"r\"", "y": "it's"}, "plain"],
            "c": "one\n  two\n",
            "d": "folded line\nnext",
            "e": []
        })
    );
    assert!(Yaml::parse("t", "a: b: c\n").is_err());
    assert!(Yaml::parse("t", "a: {{ x }}\n").is_err());
    assert!(Yaml::parse("t", "a:\n  b: 1\n   c: 2\n").is_err());
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// GitHub's anchor of a markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// 4, 5. The alert rules: complete, with a runbook section each, on documented metrics, and
/// covering what operations asked for.
#[test]
fn alert_rules_are_complete_and_use_documented_metrics() {
    let doc = metrics_doc();
    let rules = Yaml::parse(RULES, &read(RULES)).unwrap_or_else(|e| panic!("{e}"));
    let operations = read(OPERATIONS);
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let mut problems = Vec::new();
    let groups = rules["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{RULES}: no `groups` list"));
    let mut alerts: BTreeMap<String, String> = BTreeMap::new();
    for g in groups {
        let gname = str_at(g, &["name"]).unwrap_or("?");
        let Some(list) = g["rules"].as_array() else {
            problems.push(format!("{RULES}: group {gname} has no `rules` list"));
            continue;
        };
        for r in list {
            let Some(name) = str_at(r, &["alert"]) else {
                problems.push(format!(
                    "{RULES}: group {gname}: a rule without `alert` (recording rules belong \
                     elsewhere): {r}"
                ));
                continue;
            };
            let at = format!("{RULES}: {name}");
            for (path, what) in [
                (&["expr"][..], "expr"),
                (&["for"][..], "for"),
                (&["labels", "severity"][..], "labels.severity"),
                (&["annotations", "summary"][..], "annotations.summary"),
                (
                    &["annotations", "description"][..],
                    "annotations.description",
                ),
                (
                    &["annotations", "runbook_url"][..],
                    "annotations.runbook_url",
                ),
            ] {
                if str_at(r, path).is_none_or(|s| s.trim().is_empty()) {
                    problems.push(format!("{at}: no {what}"));
                }
            }
            if let Some(f) = str_at(r, &["for"]) {
                let ok = f.len() > 1
                    && f[..f.len() - 1].chars().all(|c| c.is_ascii_digit())
                    && f.ends_with(['s', 'm', 'h']);
                if !ok {
                    problems.push(format!("{at}: `for: {f}` is not a duration like 10m"));
                }
            }
            if let Some(sev) = str_at(r, &["labels", "severity"]) {
                if !["warning", "critical"].contains(&sev) {
                    problems.push(format!("{at}: severity {sev:?} is not warning or critical"));
                }
            }
            match str_at(r, &["annotations", "runbook_url"]).and_then(|u| u.split_once('#')) {
                Some((page, frag)) if page.ends_with(OPERATIONS) => {
                    if frag != anchor(name) || !anchors.contains(frag) {
                        problems.push(format!(
                            "{at}: runbook_url should point to {OPERATIONS}#{}, a heading \
                             `### {name}` there",
                            anchor(name)
                        ));
                    }
                }
                _ => problems.push(format!(
                    "{at}: runbook_url does not point into {OPERATIONS}"
                )),
            }
            let expr = str_at(r, &["expr"]).unwrap_or_default().to_string();
            if metric_tokens(&expr).is_empty() {
                problems.push(format!("{at}: the expression uses no shardbridge metric"));
            }
            check_promql(&doc, &expr, &at, &mut problems);
            if alerts.insert(name.to_string(), expr).is_some() {
                problems.push(format!("{at}: alert defined twice"));
            }
        }
    }
    // What operations asked for, by what the expression must look at.
    let compact = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    for (what, needles) in [
        (
            "lag growing",
            &["shardbridge_source_iterator_age_milliseconds", "delta("][..],
        ),
        (
            "a connector not running",
            &["shardbridge_connector_running==0"][..],
        ),
        (
            "no leases held for a running connector",
            &[
                "sum by (connector) (shardbridge_shards_owned) == 0",
                "shardbridge_connector_running",
            ][..],
        ),
        (
            "checkpoint / lease table failures",
            &["shardbridge_lease_table_calls_total{result=\"error\"}"][..],
        ),
        (
            "data loss",
            &["increase(shardbridge_source_data_loss_total"][..],
        ),
    ] {
        let found = alerts
            .values()
            .any(|e| needles.iter().all(|n| compact(e).contains(&compact(n))));
        if !found {
            problems.push(format!(
                "{RULES}: no alert on {what} (looked for {needles:?})"
            ));
        }
    }
    // Every alert has a runbook section and a promtool unit test.
    let tests = Yaml::parse(RULE_TESTS, &read(RULE_TESTS)).unwrap_or_else(|e| panic!("{e}"));
    let tested: BTreeSet<&str> = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter_map(|t| str_at(t, &["alertname"]))
        .collect();
    for name in alerts.keys() {
        if !tested.contains(name.as_str()) {
            problems.push(format!("{RULE_TESTS}: no alert_rule_test for {name}"));
        }
    }
    for name in &tested {
        if !alerts.contains_key(*name) {
            problems.push(format!("{RULE_TESTS}: tests {name}, which is not an alert"));
        }
    }
    for h in operations.lines().filter_map(|l| l.strip_prefix("### ")) {
        if h.starts_with("Shardbridge") && !alerts.contains_key(h.trim()) {
            problems.push(format!(
                "{OPERATIONS}: a runbook for {h}, which is not an alert"
            ));
        }
    }
    fail_on(problems, RULES);
}

/// 3, 5. The dashboard: valid JSON, its variables, and every query on documented metrics.
#[test]
fn dashboard_queries_documented_metrics() {
    let doc = metrics_doc();
    let dash: Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD}: not JSON: {e}"));
    let mut problems = Vec::new();
    let vars = dash["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{DASHBOARD}: no templating.list"));
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    match var("DS_PROMETHEUS") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push(format!(
            "{DASHBOARD}: no datasource variable DS_PROMETHEUS of type prometheus"
        )),
    }
    match var("connector") {
        Some(v) => {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            if q != Some("label_values(shardbridge_connector_running, connector)") {
                problems.push(format!(
                    "{DASHBOARD}: the connector variable's query is {q:?}, expected \
                     label_values(shardbridge_connector_running, connector)"
                ));
            }
        }
        None => problems.push(format!("{DASHBOARD}: no `connector` variable")),
    }
    let mut panels = Vec::new();
    fn collect<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            collect(&p["panels"], out);
        }
    }
    collect(&dash["panels"], &mut panels);
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        let at = format!("{DASHBOARD}: panel {title:?}");
        if !ids.insert(p["id"].as_u64()) {
            problems.push(format!("{at}: duplicate or missing id"));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!("{at}: datasource is not ${{DS_PROMETHEUS}}"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{at}: no queries"));
        }
        for t in &targets {
            let Some(expr) = t["expr"].as_str() else {
                problems.push(format!("{at}: a target without expr"));
                continue;
            };
            if metric_tokens(expr).is_empty() {
                problems.push(format!("{at}: {expr:?} uses no shardbridge metric"));
            }
            if expr.contains("shardbridge_") && !expr.contains("$connector") {
                // Only the connector-less rate-limit waits may ignore the variable.
                if !expr.contains("connector=\"\"") {
                    problems.push(format!("{at}: {expr:?} ignores the connector variable"));
                }
            }
            used.extend(check_promql(&doc, expr, &at, &mut problems));
        }
    }
    for required in [
        "shardbridge_source_iterator_age_milliseconds",
        "shardbridge_source_records_read_total",
        "shardbridge_sink_records_written_total",
        "shardbridge_shards_owned",
        "shardbridge_source_get_records_errors_total",
        "shardbridge_sink_errors_total",
        "shardbridge_retry_wait_milliseconds_total",
        "shardbridge_sink_write_duration_seconds",
        "shardbridge_connector_running",
    ] {
        if !used.contains(required) {
            problems.push(format!("{DASHBOARD}: no panel shows {required}"));
        }
    }
    fail_on(problems, DASHBOARD);
}

// ---------------------------------------------------------------------------------------------
// 6. IAM policies against the SDK calls.

/// The AWS SDK operations a file calls: `client.op()`, `self.client.op()`, `x.client().op()`,
/// `ddb.op()` (whitespace and newlines allowed between), in order.
fn sdk_operations(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut ops = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if !is_ident(c[i]) || (i > 0 && is_ident(c[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < c.len() && is_ident(c[i]) {
            i += 1;
        }
        let ident: String = c[start..i].iter().collect();
        if !(ident == "client" || ident.ends_with("_client") || ident == "ddb") {
            continue;
        }
        let mut j = i;
        if c.get(j) == Some(&'(') && c.get(j + 1) == Some(&')') {
            j += 2;
        }
        j = skip_ws(&c, j);
        if c.get(j) != Some(&'.') {
            continue;
        }
        j = skip_ws(&c, j + 1);
        let op_start = j;
        while j < c.len() && is_ident(c[j]) {
            j += 1;
        }
        if c.get(j) == Some(&'(') && c.get(j + 1) == Some(&')') && j > op_start {
            let op: String = c[op_start..j].iter().collect();
            if !["clone", "as_ref", "config"].contains(&op.as_str()) {
                ops.push(op);
            }
        }
    }
    ops
}

fn camel(op: &str) -> String {
    op.split('_')
        .map(|w| {
            let mut cs = w.chars();
            cs.next()
                .map(|f| f.to_ascii_uppercase().to_string() + cs.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The IAM action that authorizes an SDK operation of a service.
fn iam_action(service: &str, op: &str) -> String {
    let name = camel(op);
    match (service, name.as_str()) {
        // S3 authorizes the parts of a multipart upload with s3:PutObject.
        ("s3", "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload") => {
            "s3:PutObject".into()
        }
        _ => format!("{service}:{name}"),
    }
}

/// Which policies cover a source file's SDK calls, and the IAM service prefix.
fn policies_for(file: &str) -> Option<(&'static str, &'static [&'static str])> {
    const MAP: &[(&str, &str, &[&str])] = &[
        (
            "src/source/dynamodb_streams.rs",
            "dynamodb",
            &["source-dynamodb-streams.json"],
        ),
        // The Kinesis sink reads its target back through the Kinesis source's client.
        (
            "src/source/kinesis.rs",
            "kinesis",
            &["source-kinesis.json", "sink-kinesis.json"],
        ),
        // The snapshot reads the source table: with its stream's policy beside it.
        (
            "src/source/snapshot/",
            "dynamodb",
            &["source-snapshot.json"],
        ),
        ("src/lease/", "dynamodb", &["lease-table.json"]),
        ("src/sink/s3/", "s3", &["sink-s3.json"]),
        ("src/sink/kinesis/", "kinesis", &["sink-kinesis.json"]),
        ("src/sink/dynamodb/", "dynamodb", &["sink-dynamodb.json"]),
        (
            "src/sink/on_failure/sqs.rs",
            "sqs",
            &["on-failure-sqs.json"],
        ),
        ("src/sink/on_failure/s3.rs", "s3", &["on-failure-s3.json"]),
        (
            "src/sink/on_failure/kinesis.rs",
            "kinesis",
            &["on-failure-kinesis.json"],
        ),
        // STS GetCallerIdentity (the lambda format's invokeIdentityArn) needs no permission.
        ("src/aws.rs", "sts", &[]),
    ];
    MAP.iter()
        .find(|(prefix, _, _)| file.starts_with(prefix))
        .map(|(_, service, files)| (*service, *files))
}

struct Policy {
    doc: Value,
    actions: BTreeSet<String>,
}

fn policy(file: &str, problems: &mut Vec<String>) -> Policy {
    let path = format!("docs/iam/{file}");
    let doc: Value =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
    if doc["Version"] != "2012-10-17" {
        problems.push(format!("{path}: Version is not 2012-10-17"));
    }
    let mut actions = BTreeSet::new();
    let statements = doc["Statement"].as_array().cloned().unwrap_or_default();
    if statements.is_empty() {
        problems.push(format!("{path}: no Statement entries"));
    }
    let as_list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![],
        }
    };
    for (n, s) in statements.iter().enumerate() {
        let at = format!("{path}: Statement[{n}]");
        if s["Effect"] != "Allow" {
            problems.push(format!("{at}: Effect is not Allow"));
        }
        let sid = s["Sid"].as_str().unwrap_or_default();
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push(format!(
                "{at}: Sid {sid:?} must be non-empty and alphanumeric"
            ));
        }
        let acts = as_list(&s["Action"]);
        let resources = as_list(&s["Resource"]);
        if acts.is_empty() || resources.is_empty() {
            problems.push(format!("{at}: needs Action and Resource"));
        }
        for a in &acts {
            if a.contains('*') || !a.contains(':') {
                problems.push(format!(
                    "{at}: action {a:?}: name each action, no wildcards"
                ));
            }
        }
        for r in &resources {
            if r == "*" || !r.starts_with("arn:aws:") {
                problems.push(format!("{at}: resource {r:?} is not an ARN pattern"));
            }
        }
        actions.extend(acts);
    }
    Policy { doc, actions }
}

#[test]
fn iam_policies_allow_exactly_the_sdk_calls_the_code_makes() {
    let mut problems = Vec::new();
    let names = [
        "source-dynamodb-streams.json",
        "source-kinesis.json",
        "source-snapshot.json",
        "lease-table.json",
        "sink-s3.json",
        "sink-kinesis.json",
        "sink-dynamodb.json",
        "sink-kafka-msk.json",
        "on-failure-sqs.json",
        "on-failure-s3.json",
        "on-failure-kinesis.json",
    ];
    let policies: BTreeMap<&str, Policy> = names
        .iter()
        .map(|n| (*n, policy(n, &mut problems)))
        .collect();
    let mut listed: Vec<String> = std::fs::read_dir(root().join("docs/iam"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    listed.sort();
    for n in &listed {
        if !names.contains(&n.as_str()) {
            problems.push(format!("docs/iam/{n}: not checked by this test (add it)"));
        }
    }
    // Every SDK call is allowed by its policies.
    let mut required: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut total = 0;
    for (file, code) in sources() {
        let ops = sdk_operations(&code);
        let sends = code.matches(".send()").count();
        if ops.is_empty() && sends == 0 {
            continue;
        }
        if ops.len() != sends {
            problems.push(format!(
                "{file}: {sends} `.send()` calls but {} SDK operations recognized ({ops:?}); \
                 call operations on a receiver named `client`, `*_client` or `ddb`, or teach \
                 sdk_operations in tests/docs.rs the new shape",
                ops.len()
            ));
        }
        let Some((service, files)) = policies_for(&file) else {
            problems.push(format!(
                "{file}: calls {ops:?} but no IAM policy covers this file (map it in \
                 policies_for in tests/docs.rs, and document it in docs/iam/)"
            ));
            continue;
        };
        for op in &ops {
            total += 1;
            let action = iam_action(service, op);
            for f in files {
                required.entry(f).or_default().insert(action.clone());
                if !policies[f].actions.contains(&action) {
                    problems.push(format!(
                        "{file}: calls {op} (IAM action {action}), which docs/iam/{f} does not allow"
                    ));
                }
            }
        }
    }
    assert!(
        total >= 10,
        "found only {total} SDK calls in src/: is the scan broken?"
    );
    // And nothing more: every AWS action of a policy is needed by a call (KMS is optional).
    for (f, p) in &policies {
        for a in &p.actions {
            let service = a.split(':').next().unwrap_or_default();
            if ["dynamodb", "kinesis", "s3", "sqs"].contains(&service)
                && !required.get(f).is_some_and(|r| r.contains(a))
            {
                problems.push(format!(
                    "docs/iam/{f}: allows {a}, which no SDK call of the code needs"
                ));
            }
        }
    }
    // Kafka: librdkafka's requests, by what the sink's code does.
    let kafka: String = sources()
        .into_iter()
        .filter(|(f, _)| f.starts_with("src/sink/kafka/"))
        .map(|(_, c)| c)
        .collect();
    let msk = &policies["sink-kafka-msk.json"];
    let mut needed = vec![
        ("kafka-cluster:Connect", "every connection"),
        ("kafka-cluster:DescribeTopic", "metadata"),
        ("kafka-cluster:WriteData", "produce"),
    ];
    if kafka.contains("\"enable.idempotence\"") {
        needed.push(("kafka-cluster:WriteDataIdempotently", "enable.idempotence"));
    }
    if kafka.contains("init_transactions") {
        needed.push(("kafka-cluster:DescribeTransactionalId", "transactions"));
        needed.push(("kafka-cluster:AlterTransactionalId", "transactions"));
    }
    if kafka.contains("send_offsets_to_transaction") {
        needed.push(("kafka-cluster:AlterGroup", "send_offsets_to_transaction"));
        needed.push((
            "kafka-cluster:ReadData",
            "TxnOffsetCommit needs READ on the topic",
        ));
    }
    if kafka.contains("committed_offsets") {
        needed.push((
            "kafka-cluster:DescribeGroup",
            "committed_offsets (OffsetFetch)",
        ));
    }
    for (action, why) in &needed {
        if !msk.actions.contains(*action) {
            problems.push(format!(
                "docs/iam/sink-kafka-msk.json: lacks {action} ({why})"
            ));
        }
    }
    // The transactional ids and groups are `shardbridge.<connector>.<shard>`.
    if kafka.contains("format!(\"shardbridge.{}.{shard}\"") {
        for kind in ["transactional-id", "group"] {
            let ok = msk.doc["Statement"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["Resource"].as_str())
                .any(|r| {
                    r.contains(&format!(":{kind}/")) && r.ends_with("/shardbridge.CONNECTOR.*")
                });
            if !ok {
                problems.push(format!(
                    "docs/iam/sink-kafka-msk.json: no {kind} resource …/shardbridge.CONNECTOR.*"
                ));
            }
        }
    } else {
        problems.push(
            "src/sink/kafka: the transactional id is no longer format!(\"shardbridge.{}.{shard}\"): \
             update the transactional-id and group resources of docs/iam/sink-kafka-msk.json \
             and this check"
                .into(),
        );
    }
    fail_on(problems, "docs/iam policies against the SDK calls in src/");
}
