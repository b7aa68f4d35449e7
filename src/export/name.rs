//! Prometheus names and labels from StatsD names and tags, as statsd_exporter escapes them:
//! every character outside `[A-Za-z0-9_]` becomes `_`, and a leading digit gets a `_` in
//! front. Written straight into the output buffer, so nothing is allocated per series.

use std::hash::Hasher;

/// True when `name` needs no escaping.
pub fn is_clean(name: &str) -> bool {
    !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Appends `name` escaped.
pub fn push_escaped(out: &mut Vec<u8>, name: &str) {
    out.reserve(name.len() + 1);
    for_each_escaped(name, |b| out.push(b));
}

/// Appends `name` escaped to a string.
pub fn push_escaped_str(out: &mut String, name: &str) {
    if is_clean(name) {
        out.push_str(name);
        return;
    }
    // Only ASCII is written.
    for_each_escaped(name, |b| out.push(char::from(b)));
}

/// `name` escaped, as a new string.
pub fn escaped(name: &str) -> String {
    let mut out = Vec::with_capacity(name.len() + 1);
    push_escaped(&mut out, name);
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// Feeds `name` escaped to a hasher in one `write`, as the bytes [`push_escaped`] writes
/// (so a name and its escaped spelling hash alike); `scratch` is reused between calls.
pub fn hash_escaped(hasher: &mut impl Hasher, name: &str, scratch: &mut Vec<u8>) {
    if is_clean(name) {
        hasher.write(name.as_bytes());
    } else {
        scratch.clear();
        push_escaped(scratch, name);
        hasher.write(scratch);
    }
}

/// Feeds `name` escaped to `f`, a byte at a time. Works on bytes, not chars: a name is valid
/// UTF-8, so each character that is not ASCII is one lead byte (written as one `_`) and
/// continuation bytes (skipped).
fn for_each_escaped(name: &str, mut f: impl FnMut(u8)) {
    let bytes = name.as_bytes();
    if bytes.first().is_none_or(u8::is_ascii_digit) {
        f(b'_');
    }
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => f(b),
            0x80..=0xbf => {}
            _ => f(b'_'),
        }
    }
}

/// Appends a label value with the exposition formats' escapes (`\\`, `\"`, `\n`).
pub fn push_label_value(out: &mut Vec<u8>, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// The suffix a counter family gets: `_total`, unless the name already ends with it.
pub fn counter_suffix(base: &str) -> &'static str {
    if base.ends_with("_total") {
        ""
    } else {
        "_total"
    }
}

/// The counter suffix of a family whose base is `base`: escaped first unless `mapped`
/// (a mapped name is already valid).
pub fn counter_suffix_of(base: &str, mapped: bool) -> &'static str {
    if mapped {
        return counter_suffix(base);
    }
    // Escaping maps characters one to one (past a leading `_`), so the escaped name ends
    // in `_total` when the name ends in `total` after a character that escapes to `_`.
    let ends = base.strip_suffix("total").is_some_and(|rest| {
        rest.chars()
            .last()
            .is_some_and(|c| !c.is_ascii_alphanumeric())
    });
    if ends { "" } else { "_total" }
}

/// Whether the valid label name `clean` equals `raw` escaped.
pub fn same_escaped(clean: &str, raw: &str) -> bool {
    let mut want = clean.bytes();
    let mut equal = true;
    for_each_escaped(raw, |b| equal &= want.next() == Some(b));
    equal && want.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_dashes_and_other_characters_become_underscores() {
        assert_eq!(escaped("api.req-count/x"), "api_req_count_x");
    }

    #[test]
    fn a_leading_digit_gets_an_underscore() {
        assert_eq!(escaped("5xx.errors"), "_5xx_errors");
    }

    #[test]
    fn one_underscore_per_character_not_per_byte() {
        assert_eq!(escaped("caf\u{e9}.ok"), "caf__ok");
    }

    #[test]
    fn clean_names_are_kept() {
        assert_eq!(escaped("http_requests"), "http_requests");
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut out = Vec::new();
        push_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\\\"c\\nd");
    }

    #[test]
    fn counters_ending_in_total_are_not_doubled() {
        assert_eq!(counter_suffix("jobs_total"), "");
        assert_eq!(counter_suffix("jobs"), "_total");
        assert_eq!(counter_suffix_of("jobs.total", false), "");
        assert_eq!(counter_suffix_of("jobs_total", false), "");
        assert_eq!(counter_suffix_of("jobstotal", false), "_total");
    }

    #[test]
    fn a_clean_name_compares_with_a_raw_one_escaped() {
        assert!(same_escaped("a_b", "a.b"));
        assert!(!same_escaped("a_b", "a.bc"));
        assert!(same_escaped("_1x", "1x"));
    }
}
