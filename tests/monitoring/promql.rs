//! Just enough PromQL to find the metric names a query reads: a tokenizer that skips
//! functions, aggregations, keywords and their label lists, label matchers, ranges, strings,
//! numbers and Grafana template variables (`$timer`, `${timer}_sum`), which it reports apart.

/// The names one query reads.
#[derive(Debug, Default, PartialEq)]
pub struct Names {
    /// Metric names written out (`tallyd_series`, `api_latency_bucket`).
    pub metrics: Vec<String>,
    /// Template variables standing where a metric name goes (`timer` for `${timer}_sum`).
    pub templated: Vec<String>,
}

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "end",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a label list in parentheses (optional after `group_*`).
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords and literals that are neither metrics nor functions.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// The metric names and templated names `expr` reads.
///
/// # Errors
///
/// An unterminated string or bracket, a malformed template variable, or a call of a function
/// PromQL does not have.
pub fn names(expr: &str) -> Result<Names, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Names::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i = match c {
            '#' => skip_while(&chars, i, |c| c != '\n'),
            '"' | '\'' | '`' => skip_string(&chars, i)?,
            '{' => skip_group(&chars, i, '{', '}')?,
            '[' => skip_group(&chars, i, '[', ']')?,
            '$' => {
                let (variable, end) = variable(&chars, i)?;
                names.templated.push(variable);
                // `${timer}_sum`: the rest of the name is the variable's too.
                skip_while(&chars, end, is_ident_char)
            }
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                skip_number(&chars, i)
            }
            c if is_ident_start(c) => identifier(&chars, i, &mut names)?,
            // Operators, commas, parentheses, whitespace.
            _ => i + 1,
        };
    }
    Ok(names)
}

/// Reads the identifier at `start`, records it when it is a metric name, and returns where
/// the tokenizer goes on (past a keyword's label list).
fn identifier(chars: &[char], start: usize, names: &mut Names) -> Result<usize, String> {
    let end = skip_while(chars, start, is_ident_char);
    let word: String = chars[start..end].iter().collect();
    let lower = word.to_ascii_lowercase();
    let next = skip_while(chars, end, char::is_whitespace);
    let next_char = chars.get(next).copied();
    if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
        return match next_char {
            Some('(') => skip_group(chars, next, '(', ')'),
            _ => Ok(end),
        };
    }
    if KEYWORDS.contains(&lower.as_str()) {
        return Ok(end);
    }
    if next_char == Some('(') {
        if FUNCTIONS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str()) {
            return Ok(end);
        }
        return Err(format!("{word}( is not a PromQL function"));
    }
    if AGGREGATIONS.contains(&word.as_str()) {
        let after = skip_while(chars, next, is_ident_char);
        let following: String = chars[next..after].iter().collect();
        if following == "by" || following == "without" {
            return Ok(end);
        }
    }
    names.metrics.push(word);
    Ok(end)
}

/// A template variable at `start` (`$name`, `${name}`, `${name:format}`): its name and end.
fn variable(chars: &[char], start: usize) -> Result<(String, usize), String> {
    if chars.get(start + 1) == Some(&'{') {
        let close = chars[start..]
            .iter()
            .position(|&c| c == '}')
            .map(|p| start + p)
            .ok_or("unterminated ${")?;
        let inner: String = chars[start + 2..close].iter().collect();
        let name = inner.split(':').next().unwrap_or_default().to_string();
        return Ok((name, close + 1));
    }
    let end = skip_while(chars, start + 1, |c| c.is_ascii_alphanumeric() || c == '_');
    if end == start + 1 {
        return Err("a lone $".to_string());
    }
    Ok((chars[start + 1..end].iter().collect(), end))
}

fn skip_while(chars: &[char], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

/// Past the string opening at `start`, escapes included.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unterminated string from {start}"))
}

/// Past the bracket opening at `start` and its matching close, strings inside skipped.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unclosed {open} from {start}"))
}

/// Past a number or duration (`0.99`, `1e-3`, `0x1f`, `5m`, `1h30m`).
fn skip_number(chars: &[char], start: usize) -> usize {
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        let exponent_sign = (c == '+' || c == '-')
            && i > start
            && matches!(chars[i - 1], 'e' | 'E')
            && chars[start..i]
                .iter()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'));
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `expr` with every template variable replaced by its value in `values` (name, value).
///
/// # Panics
///
/// On a variable `values` does not hold: the caller's list is then incomplete.
pub fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let (name, end) = variable(&chars, i).unwrap_or_else(|e| panic!("{e} in {expr}"));
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no value for ${name} in {expr}"));
        out.push_str(value.1);
        i = end;
    }
    out
}
