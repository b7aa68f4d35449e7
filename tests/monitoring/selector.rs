//! Grafana's `label_values(selector, label)` variable queries, evaluated over scraped samples
//! the way Prometheus would: series selectors with `=`, `!=`, `=~`, `!~`, and the subset of
//! RE2 the dashboard uses (literals, `.`, `\` escapes, `*`, `+`, `?`, top-level `|`), anchored
//! at both ends.

use std::collections::{BTreeMap, BTreeSet};

/// One label matcher of a selector.
#[derive(Debug)]
pub struct Matcher {
    pub label: String,
    pub op: String,
    pub value: String,
}

/// A parsed `label_values(...)` query.
#[derive(Debug)]
pub struct LabelValues {
    /// The series selector's matchers, its metric name as a `__name__` matcher; empty when
    /// the query names no selector.
    pub matchers: Vec<Matcher>,
    pub label: String,
    /// The selector as written (after substitution), for Prometheus's `match[]`.
    pub selector: Option<String>,
}

/// Parses `label_values(label)` or `label_values(selector, label)`.
pub fn parse_label_values(query: &str) -> Result<LabelValues, String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("not a label_values query: {query}"))?;
    let Some(comma) = inner.rfind(',') else {
        return Ok(LabelValues {
            matchers: Vec::new(),
            label: inner.trim().to_string(),
            selector: None,
        });
    };
    let selector = inner[..comma].trim();
    let label = inner[comma + 1..].trim().to_string();
    Ok(LabelValues {
        matchers: parse_selector(selector)?,
        label,
        selector: Some(selector.to_string()),
    })
}

/// `name{label op "value", ...}`, either part optional.
fn parse_selector(selector: &str) -> Result<Vec<Matcher>, String> {
    let (name, rest) = match selector.find('{') {
        Some(open) => (selector[..open].trim(), &selector[open..]),
        None => (selector.trim(), ""),
    };
    let mut matchers = Vec::new();
    if !name.is_empty() {
        matchers.push(Matcher {
            label: "__name__".to_string(),
            op: "=".to_string(),
            value: name.to_string(),
        });
    }
    if rest.is_empty() {
        return Ok(matchers);
    }
    let body = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("bad selector {selector}"))?;
    let mut rest = body.trim();
    while !rest.is_empty() {
        let op_at = rest
            .find(['=', '!'])
            .ok_or_else(|| format!("no operator in {rest}"))?;
        let label = rest[..op_at].trim().to_string();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest[op_at..].starts_with(op))
            .ok_or_else(|| format!("bad operator in {rest}"))?;
        let after = rest[op_at + op.len()..].trim_start();
        let quoted = after
            .strip_prefix('"')
            .ok_or_else(|| format!("unquoted value in {rest}"))?;
        let close = quoted
            .find('"')
            .ok_or_else(|| format!("unterminated value in {rest}"))?;
        matchers.push(Matcher {
            label,
            op: op.to_string(),
            value: quoted[..close].replace("\\\\", "\\"),
        });
        rest = quoted[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(matchers)
}

impl LabelValues {
    /// The values of the label over the series that match (a series' labels include
    /// `__name__`).
    pub fn evaluate<'a>(
        &self,
        series: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    ) -> BTreeSet<String> {
        series
            .into_iter()
            .filter(|labels| self.matchers.iter().all(|m| m.matches(labels)))
            .filter_map(|labels| labels.get(&self.label).cloned())
            .filter(|value| !value.is_empty())
            .collect()
    }
}

impl Matcher {
    /// Whether a series with these labels passes (a missing label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map(String::as_str).unwrap_or("");
        match self.op.as_str() {
            "=" => value == self.value,
            "!=" => value != self.value,
            "=~" => regex_matches(&self.value, value),
            _ => !regex_matches(&self.value, value),
        }
    }
}

#[derive(Clone, Copy)]
enum Atom {
    Any,
    Char(char),
}

#[derive(Clone, Copy, PartialEq)]
enum Repeat {
    One,
    Optional,
    Any,
    AtLeastOne,
}

/// Whether the whole of `text` matches `pattern`.
///
/// # Panics
///
/// On RE2 syntax outside the subset: extend this, or simplify the dashboard's regex.
pub fn regex_matches(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    pattern
        .split('|')
        .any(|branch| match_here(&compile(branch, pattern), &text))
}

fn compile(branch: &str, pattern: &str) -> Vec<(Atom, Repeat)> {
    let mut out: Vec<(Atom, Repeat)> = Vec::new();
    let mut chars = branch.chars();
    while let Some(c) = chars.next() {
        let atom = match c {
            '.' => Atom::Any,
            '\\' => Atom::Char(chars.next().expect("an escaped character")),
            '*' | '+' | '?' => {
                let last = out.last_mut().expect("a quantifier follows an atom");
                last.1 = match c {
                    '*' => Repeat::Any,
                    '+' => Repeat::AtLeastOne,
                    _ => Repeat::Optional,
                };
                continue;
            }
            '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => {
                panic!("regex {pattern:?} is outside the test's subset")
            }
            c => Atom::Char(c),
        };
        out.push((atom, Repeat::One));
    }
    out
}

fn match_here(pattern: &[(Atom, Repeat)], text: &[char]) -> bool {
    let Some(((atom, repeat), rest)) = pattern.split_first() else {
        return text.is_empty();
    };
    let fits = |i: usize| {
        text.get(i).is_some_and(|&c| match atom {
            Atom::Any => c != '\n',
            Atom::Char(want) => c == *want,
        })
    };
    let (min, max) = match repeat {
        Repeat::One => (1, 1),
        Repeat::Optional => (0, 1),
        Repeat::Any => (0, usize::MAX),
        Repeat::AtLeastOne => (1, usize::MAX),
    };
    let mut taken = 0;
    loop {
        if taken >= min && match_here(rest, &text[taken..]) {
            return true;
        }
        if taken < max && fits(taken) {
            taken += 1;
        } else {
            return false;
        }
    }
}
