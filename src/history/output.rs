//! A query's answer as text: `table` (for people), `json` (an array of row objects, `time`
//! in RFC 3339; the group under the tag key's name and under `group`), `csv` (a header
//! line, then one line per row). A step without data has a `null` (JSON), empty (CSV) or
//! `-` (table) value.

use serde_json::{Map, Value, json};

use super::query::{Answer, Row};
use super::time::format_rfc3339;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

impl Format {
    /// Reads `table`, `json` or `csv`.
    ///
    /// # Errors
    /// A message naming the formats.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("bad format {text:?}: use table, json or csv")),
        }
    }
}

/// The answer in `format`, ending with a newline.
pub fn render(answer: &Answer, format: Format) -> String {
    match format {
        Format::Json => {
            let mut text = to_json(answer).to_string();
            text.push('\n');
            text
        }
        Format::Csv => csv(answer),
        Format::Table => table(answer),
    }
}

/// The answer as JSON: an array of row objects (or of series for `--list`).
pub fn to_json(answer: &Answer) -> Value {
    match answer {
        Answer::List(series) => Value::Array(
            series
                .iter()
                .map(|s| {
                    let tags: Map<String, Value> = s
                        .tags
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    json!({"name": s.name, "type": s.kind, "tags": tags})
                })
                .collect(),
        ),
        Answer::Rows { group_by, rows, .. } => Value::Array(
            rows.iter()
                .map(|row| {
                    let mut object = Map::new();
                    object.insert("time".into(), Value::String(format_rfc3339(row.time)));
                    if let (Some(key), Some(group)) = (group_by, &row.group) {
                        object.insert("group".into(), Value::String(group.clone()));
                        if !matches!(key.as_str(), "time" | "value" | "group") {
                            object.insert(key.clone(), Value::String(group.clone()));
                        }
                    }
                    object.insert("value".into(), number(row.value));
                    Value::Object(object)
                })
                .collect(),
        ),
    }
}

/// A JSON number, integral values without a fraction; none or not finite is `null`.
fn number(value: Option<f64>) -> Value {
    match value {
        Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
            json!(v as i64)
        }
        Some(v) if v.is_finite() => json!(v),
        _ => Value::Null,
    }
}

fn plain(value: Option<f64>) -> String {
    match number(value) {
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn tags_text(tags: &[(String, String)]) -> String {
    let parts: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

fn csv(answer: &Answer) -> String {
    let mut out = String::new();
    match answer {
        Answer::List(series) => {
            out.push_str("name,type,tags\n");
            for s in series {
                let line = [s.name.as_str(), s.kind.as_str(), &tags_text(&s.tags)]
                    .map(csv_field)
                    .join(",");
                out.push_str(&line);
                out.push('\n');
            }
        }
        Answer::Rows { group_by, rows, .. } => {
            match group_by {
                Some(key) => out.push_str(&format!("time,{},value\n", csv_field(key))),
                None => out.push_str("time,value\n"),
            }
            for row in rows {
                out.push_str(&format_rfc3339(row.time));
                if group_by.is_some() {
                    out.push(',');
                    out.push_str(&csv_field(row.group.as_deref().unwrap_or("")));
                }
                out.push(',');
                out.push_str(&plain(row.value));
                out.push('\n');
            }
        }
    }
    out
}

fn table(answer: &Answer) -> String {
    let lines: Vec<Vec<String>> = match answer {
        Answer::List(series) => std::iter::once(vec!["NAME".into(), "TYPE".into(), "TAGS".into()])
            .chain(
                series
                    .iter()
                    .map(|s| vec![s.name.clone(), s.kind.clone(), tags_text(&s.tags)]),
            )
            .collect(),
        Answer::Rows { group_by, rows, .. } => {
            let header = match group_by {
                Some(key) => vec!["TIME".into(), key.to_uppercase(), "VALUE".into()],
                None => vec!["TIME".into(), "VALUE".into()],
            };
            std::iter::once(header)
                .chain(rows.iter().map(|row: &Row| {
                    let value = match plain(row.value) {
                        v if v.is_empty() => "-".to_string(),
                        v => v,
                    };
                    let mut line = vec![format_rfc3339(row.time)];
                    if group_by.is_some() {
                        line.push(row.group.clone().unwrap_or_default());
                    }
                    line.push(value);
                    line
                }))
                .collect()
        }
    };
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer::Rows {
            group_by: Some("region".into()),
            tier_step_s: 60,
            step_s: 60,
            rows: vec![
                Row {
                    time: 1_796_407_200,
                    group: Some("eu".into()),
                    value: Some(2.0),
                },
                Row {
                    time: 1_796_407_260,
                    group: Some("eu".into()),
                    value: None,
                },
            ],
        }
    }

    #[test]
    fn json_rows_carry_rfc3339_time_group_and_value() {
        let json = to_json(&answer());
        assert_eq!(
            json[0],
            json!({"time": "2026-12-04T18:00:00Z", "group": "eu", "region": "eu", "value": 2})
        );
        assert_eq!(json[1]["value"], Value::Null);
    }

    #[test]
    fn csv_has_a_header_and_empty_missing_values() {
        assert_eq!(
            render(&answer(), Format::Csv),
            "time,region,value\n2026-12-04T18:00:00Z,eu,2\n2026-12-04T18:01:00Z,eu,\n"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let text = render(&answer(), Format::Table);
        assert!(
            text.starts_with("TIME                  REGION  VALUE\n"),
            "{text}"
        );
        assert!(text.ends_with("eu      -\n"), "{text}");
    }
}
