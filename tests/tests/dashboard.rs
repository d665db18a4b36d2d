//! The Grafana dashboard (`deploy/observability/grafana-dashboard.json`)
//! against a running node: every metric the dashboard queries must be one
//! the node exports, and every topic an operator watches has a panel.
//!
//! A dashboard fails silently: a query for a misspelt or renamed metric
//! draws an empty panel that looks like a quiet cluster. So the test reads
//! every PromQL expression in the file (panel targets, rows' nested panels
//! and query variables), takes the `ringkv_` metric names out of it, and
//! looks each one up among the series the node's `/metrics` page declares.
//!
//! A family is declared on the page (`# TYPE`) once it has a sample. The
//! unlabelled counters and gauges have one from start (0), so the check
//! does not depend on which events (hints, repairs, transfers) happened;
//! the labelled request and latency families get theirs with the first
//! request, hence the put and get before the scrape. One family is
//! registered only when TLS is configured
//! (`ringkv_tls_handshake_failures_total`), so the node runs with TLS: the
//! dashboard is checked against a node with every optional metric on.

use std::collections::{BTreeMap, BTreeSet};

use ringkv_client::{PutOptions, RequestOptions};
use ringkv_tests::metrics::{metric_samples, metrics_page};
use ringkv_tests::secure::Secure;
use ringkv_tests::TestCluster;
use serde_json::Value;

/// The dashboard as shipped; compiled in, so editing it rebuilds the test.
const DASHBOARD: &str = include_str!("../../deploy/observability/grafana-dashboard.json");

/// The prefix of every metric the node exports; other names in a query
/// (`up`, functions, label names) are not the node's to check.
const PREFIX: &str = "ringkv_";

/// What an operator watches, as (topic, a word its panel's title holds,
/// the metric that panel must query).
const TOPICS: &[(&str, &str, &str)] = &[
    ("requests", "requests by", "ringkv_requests_total"),
    ("errors", "errors", "ringkv_requests_total"),
    (
        "latency",
        "latency",
        "ringkv_request_duration_seconds_bucket",
    ),
    (
        "quorum failures",
        "quorum failures",
        "ringkv_quorum_failures_total",
    ),
    ("hints pending", "hints pending", "ringkv_hints_pending"),
    ("read repairs", "read repair", "ringkv_read_repairs_total"),
    (
        "speculative reads",
        "speculative",
        "ringkv_speculative_reads_total",
    ),
    (
        "anti-entropy",
        "anti-entropy",
        "ringkv_anti_entropy_keys_repaired_total",
    ),
    ("transfers", "transfer", "ringkv_transfer_bytes_total"),
    ("storage size", "storage size", "ringkv_storage_bytes"),
    ("members alive", "members alive", "ringkv_members_alive"),
];

/// One PromQL expression and where the dashboard uses it.
struct Query {
    /// The panel title, or `variable <name>`.
    place: String,
    expr: String,
}

/// Every PromQL expression of the dashboard: the targets of each panel
/// (rows nest their panels when collapsed) and the query variables.
fn queries(dashboard: &Value) -> Vec<Query> {
    fn walk(panels: &[Value], out: &mut Vec<Query>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        place: format!("panel {title:?}"),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"].as_array().map_or(&[], Vec::as_slice),
        &mut out,
    );
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        // Grafana stores the query as a string, or (newer editors) as an
        // object holding it.
        let query = &variable["query"];
        let expr = query.as_str().or_else(|| query["query"].as_str());
        let name = variable["name"].as_str().unwrap_or("(unnamed)");
        for expr in [expr, variable["definition"].as_str()]
            .into_iter()
            .flatten()
        {
            out.push(Query {
                place: format!("variable {name:?}"),
                expr: expr.to_string(),
            });
        }
    }
    out
}

/// The `ringkv_` metric names a PromQL expression queries: identifiers
/// outside string literals (so label values never count), taken whole (so
/// no name is found inside a longer one).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            // A string literal; backslash escapes do not apply in raw `...`.
            while let Some(s) = chars.next() {
                if s == '\\' && c != '`' {
                    chars.next();
                } else if s == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek() {
                if !(n.is_ascii_alphanumeric() || n == '_' || n == ':') {
                    break;
                }
                word.push(n);
                chars.next();
            }
            if word.starts_with(PREFIX) {
                names.insert(word);
            }
        }
    }
    names
}

/// The series names a metrics page declares, each with its family: a
/// histogram family `f` is queried as `f_bucket`, `f_sum` and `f_count`, a
/// summary as `f`, `f_sum` and `f_count`, anything else by its own name
/// (counters are declared with their `_total` in this text format).
fn declared_series(page: &str) -> BTreeMap<String, String> {
    let mut series = BTreeMap::new();
    for line in page.lines() {
        let Some(declaration) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = declaration.split_whitespace();
        let (Some(family), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            series.insert(format!("{family}{suffix}"), family.to_string());
        }
    }
    series
}

#[test]
fn metric_names_are_whole_identifiers_outside_strings() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(ringkv_request_duration_seconds_bucket{instance=~"ringkv_fake", code!='x'}[$__rate_interval]))) / xringkv_other + ringkv_members"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        ["ringkv_members", "ringkv_request_duration_seconds_bucket"]
    );
}

#[test]
fn histograms_declare_their_bucket_sum_and_count_series() {
    let page = "# HELP ringkv_d Latency.\n# TYPE ringkv_d histogram\n\
                # TYPE ringkv_c_total counter\n# TYPE ringkv_g gauge\n";
    let series = declared_series(page);
    let names: Vec<&str> = series.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ringkv_c_total",
            "ringkv_d_bucket",
            "ringkv_d_count",
            "ringkv_d_sum",
            "ringkv_g"
        ]
    );
    assert_eq!(series["ringkv_d_bucket"], "ringkv_d");
}

#[test]
fn the_dashboard_has_a_panel_for_every_topic() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let queries = queries(&dashboard);
    let mut missing = Vec::new();
    for (topic, word, metric) in TOPICS {
        let covered = queries.iter().any(|q| {
            q.place.to_lowercase().contains(word) && metric_names(&q.expr).contains(*metric)
        });
        if !covered {
            missing.push(format!(
                "{topic}: no panel titled with {word:?} that queries {metric}"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "topics without a panel:\n  {}",
        missing.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported_by_a_node() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON");
    let queries = queries(&dashboard);
    assert!(!queries.is_empty(), "the dashboard has no queries");

    let cluster = TestCluster::start_secured(1, &[], &[], Secure::TLS)
        .await
        .unwrap();
    // Traffic: the request and latency families are declared only once
    // they have a sample.
    let client = cluster.client();
    client
        .put("dashboard", "v", PutOptions::default())
        .await
        .unwrap();
    client
        .get("dashboard", RequestOptions::default(), false)
        .await
        .unwrap();
    let page = metrics_page(&cluster.nodes[0].metrics).unwrap();
    assert!(
        metric_samples(&page).contains_key(r#"ringkv_requests_total{op="put",code="OK"}"#),
        "no put counted on the page:\n{page}"
    );

    let declared = declared_series(&page);
    // Missing name → the places that query it.
    let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked = BTreeSet::new();
    for query in &queries {
        for name in metric_names(&query.expr) {
            if !declared.contains_key(&name) {
                missing
                    .entry(name.clone())
                    .or_default()
                    .insert(query.place.clone());
            }
            checked.insert(name);
        }
    }
    assert!(!checked.is_empty(), "no ringkv_ metric in any query");
    let report: Vec<String> = missing
        .iter()
        .map(|(name, places)| {
            let places: Vec<&str> = places.iter().map(String::as_str).collect();
            format!("{name} (in {})", places.join(", "))
        })
        .collect();
    let families: BTreeSet<&str> = declared.values().map(String::as_str).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {} metric(s) the node does not export:\n  {}\n\
         families the node exports: {}",
        missing.len(),
        report.join("\n  "),
        families.into_iter().collect::<Vec<_>>().join(", ")
    );
}
