//! The queries the shipped monitoring files hold: every panel target and query variable of
//! the Grafana dashboard, every `expr` and `record` of the Prometheus rules file.

use serde_json::Value;

pub const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dashboards/grafana/tallyd.json"
);
pub const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/tallyd.rules.yml"
);
pub const RULES_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/tallyd.rules.test.yml"
);
pub const PROMETHEUS_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/prometheus/prometheus.yml"
);

/// One query and where it comes from (for failure messages).
#[derive(Debug, Clone)]
pub struct Query {
    pub origin: String,
    pub expr: String,
}

/// A dashboard variable whose values come from a query.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub query: String,
}

pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard is readable");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel target's `expr`, rows' nested panels included.
pub fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    collect_targets(&dashboard["panels"], &mut queries);
    queries
}

fn collect_targets(panels: &Value, queries: &mut Vec<Query>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
            queries.push(Query {
                origin: format!("panel {title:?} target {}", target["refId"]),
                expr: expr.to_string(),
            });
        }
        collect_targets(&panel["panels"], queries);
    }
}

/// Every `type: "query"` template variable, with its query text (a string, or the object
/// newer Grafana writes with the text under `query`).
pub fn dashboard_variables(dashboard: &Value) -> Vec<Variable> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("a query variable has a query");
            Variable {
                name: v["name"]
                    .as_str()
                    .expect("a variable has a name")
                    .to_string(),
                query: query.to_string(),
            }
        })
        .collect()
}

fn rules_text() -> String {
    std::fs::read_to_string(RULES).expect("the rules file is readable")
}

/// Every rule's `expr`, single-line or a `|`/`>` block, comments left out.
pub fn rule_queries() -> Vec<Query> {
    let text = rules_text();
    let lines: Vec<&str> = text.lines().collect();
    let mut queries = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let value = value.trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            value.to_string()
        };
        queries.push(Query {
            origin: format!("{RULES}:{}", n + 1),
            expr,
        });
    }
    queries
}

/// The names the rules file records (`record:`), which queries may read like metrics.
pub fn recorded_names() -> Vec<String> {
    rules_text()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- record:"))
        .map(|name| name.trim().to_string())
        .collect()
}

/// The alert names of the rules file.
pub fn alert_names() -> Vec<String> {
    rules_text()
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}
