//! The Prometheus text format (0.0.4) as a scraper reads it: one sample per line, its name as
//! written on the line (`x_total`, `x_bucket`, `x_sum`), its labels and value.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    /// The sample's labels, `__name__` included (as Prometheus keeps them).
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of `text`; comments and blank lines are skipped.
///
/// # Errors
///
/// A line that is not `name[{labels}] value [timestamp]`.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| sample(line).ok_or_else(|| format!("bad sample line: {line}")))
        .collect()
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = rest[..eq].trim().to_string();
            let (value, after) = quoted(rest[eq + 1..].strip_prefix('"')?)?;
            labels.insert(label, value);
            rest = after;
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    labels.insert("__name__".to_string(), name.clone());
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A label value after its opening quote, unescaped, and the text after its closing quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}
