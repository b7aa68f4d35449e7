//! DogStatsD events (`_e{title_len,text_len}:title|text|...`) and service checks
//! (`_sc|name|status|...`), SPEC §1. They are rare next to metric lines, so they are parsed
//! into owned values. Tags follow the DogStatsD rules of `line.rs`.

use nom::{
    IResult, Parser,
    bytes::complete::tag,
    character::complete::{char, digit1},
};

use super::error::ParseError;
use super::line::{dogstatsd_tags, is_ignored_field};
use super::types::{Event, ServiceCheck};

/// How an event line starts.
pub(super) const EVENT_PREFIX: &str = "_e{";
/// How a service check line starts.
pub(super) const CHECK_PREFIX: &str = "_sc|";

/// Parses a whole `_e{..}` line.
///
/// # Errors
///
/// [`ParseError::InvalidEvent`] for a bad header, lengths that fit neither as UTF-8 bytes nor
/// as UTF-16 units, an empty title, a bad or repeated field value; the field errors of
/// metric lines otherwise.
pub(super) fn parse_event(line: &str) -> Result<Event, ParseError> {
    let (body, (title_len, text_len)) = event_header(line).map_err(|_| ParseError::InvalidEvent)?;
    let title_len = title_len.parse().map_err(|_| ParseError::InvalidEvent)?;
    let text_len = text_len.parse().map_err(|_| ParseError::InvalidEvent)?;
    let (title, text, rest) =
        split_title_text(body, title_len, text_len).ok_or(ParseError::InvalidEvent)?;
    if title.is_empty() {
        return Err(ParseError::InvalidEvent);
    }
    let mut event = new_event(title, text.replace("\\n", "\n"));
    let mut tags_seen = false;
    // `rest` is empty or starts with `|`: the first piece is always empty.
    for field in rest.split('|').skip(1) {
        match field.strip_prefix('#') {
            Some(tags) => read_tags(tags, &mut tags_seen, &mut event.tags)?,
            None => event_field(&mut event, field)?,
        }
    }
    Ok(event)
}

/// `_e{` digits `,` digits `}:`; returns the two lengths as text.
fn event_header(input: &str) -> IResult<&str, (&str, &str), ()> {
    (tag(EVENT_PREFIX), digit1, char(','), digit1, tag("}:"))
        .map(|(_, title, _, text, _)| (title, text))
        .parse(input)
}

fn new_event(title: &str, text: String) -> Event {
    Event {
        title: title.to_owned(),
        text,
        timestamp: None,
        hostname: None,
        aggregation_key: None,
        priority: None,
        source_type: None,
        alert_type: None,
        tags: Vec::new(),
    }
}

/// Cuts `title|text` off `body` by the header's lengths, read as UTF-8 bytes, else as UTF-16
/// code units (JavaScript clients); returns title, text and the rest (empty or `|...`).
fn split_title_text(body: &str, title_len: usize, text_len: usize) -> Option<(&str, &str, &str)> {
    split_by(body, title_len, text_len, utf8_prefix)
        .or_else(|| split_by(body, title_len, text_len, utf16_prefix))
}

/// Splits with `prefix`, which cuts a prefix of a given length off a text.
fn split_by(
    body: &str,
    title_len: usize,
    text_len: usize,
    prefix: fn(&str, usize) -> Option<(&str, &str)>,
) -> Option<(&str, &str, &str)> {
    let (title, after) = prefix(body, title_len)?;
    let after = after.strip_prefix('|')?;
    let (text, rest) = prefix(after, text_len)?;
    (rest.is_empty() || rest.starts_with('|')).then_some((title, text, rest))
}

/// The first `len` bytes, when they end on a char boundary.
fn utf8_prefix(text: &str, len: usize) -> Option<(&str, &str)> {
    text.split_at_checked(len)
}

/// The first `units` UTF-16 code units, when they end between two chars.
fn utf16_prefix(text: &str, units: usize) -> Option<(&str, &str)> {
    let mut counted = 0;
    for (i, c) in text.char_indices() {
        if counted == units {
            return text.split_at_checked(i);
        }
        counted += c.len_utf16();
        if counted > units {
            return None;
        }
    }
    (counted == units).then_some((text, ""))
}

/// One `|key:value` field of an event other than tags.
fn event_field(event: &mut Event, field: &str) -> Result<(), ParseError> {
    if field.is_empty() {
        return Err(ParseError::Malformed);
    }
    match field.split_once(':') {
        Some(("d", ts)) => set_once(&mut event.timestamp, parse_timestamp(ts)?),
        Some(("h", host)) => set_once(&mut event.hostname, host.to_owned()),
        Some(("p", priority)) => set_once(&mut event.priority, priority.to_owned()),
        Some(("t", alert)) => set_once(&mut event.alert_type, alert.to_owned()),
        Some(("k", key)) => set_once(&mut event.aggregation_key, key.to_owned()),
        Some(("s", source)) => set_once(&mut event.source_type, source.to_owned()),
        _ if is_ignored_field(field) => Ok(()),
        _ => Err(ParseError::UnknownField),
    }
}

/// Parses a whole `_sc|..` line.
///
/// # Errors
///
/// [`ParseError::InvalidEvent`] for an empty name, a status other than 0-3, a bad or
/// repeated field value; the field errors of metric lines otherwise.
pub(super) fn parse_service_check(line: &str) -> Result<ServiceCheck, ParseError> {
    let body = line
        .strip_prefix(CHECK_PREFIX)
        .ok_or(ParseError::InvalidEvent)?;
    let mut parts = body.split('|');
    let name = parts
        .next()
        .filter(|name| !name.is_empty())
        .ok_or(ParseError::InvalidEvent)?;
    let status = parts
        .next()
        .and_then(parse_status)
        .ok_or(ParseError::InvalidEvent)?;
    let mut check = ServiceCheck {
        name: name.to_owned(),
        status,
        timestamp: None,
        hostname: None,
        message: None,
        tags: Vec::new(),
    };
    let mut tags_seen = false;
    for field in parts {
        match field.strip_prefix('#') {
            Some(tags) => read_tags(tags, &mut tags_seen, &mut check.tags)?,
            None => check_field(&mut check, field)?,
        }
    }
    Ok(check)
}

/// 0 OK, 1 warning, 2 critical, 3 unknown.
fn parse_status(text: &str) -> Option<u8> {
    match text {
        "0" => Some(0),
        "1" => Some(1),
        "2" => Some(2),
        "3" => Some(3),
        _ => None,
    }
}

/// One `|key:value` field of a service check other than tags.
fn check_field(check: &mut ServiceCheck, field: &str) -> Result<(), ParseError> {
    if field.is_empty() {
        return Err(ParseError::Malformed);
    }
    match field.split_once(':') {
        Some(("d", ts)) => set_once(&mut check.timestamp, parse_timestamp(ts)?),
        Some(("h", host)) => set_once(&mut check.hostname, host.to_owned()),
        Some(("m", message)) => set_once(&mut check.message, unescape_message(message)),
        _ if is_ignored_field(field) => Ok(()),
        _ => Err(ParseError::UnknownField),
    }
}

/// In a check's message `\n` is a newline and `m\:` a plain `m:`.
fn unescape_message(message: &str) -> String {
    message.replace("m\\:", "m:").replace("\\n", "\n")
}

/// Reads a `|#tags` field, which may come only once.
fn read_tags(
    text: &str,
    seen: &mut bool,
    tags: &mut Vec<(String, String)>,
) -> Result<(), ParseError> {
    if *seen {
        return Err(ParseError::InvalidTags);
    }
    *seen = true;
    dogstatsd_tags(text, |tag| {
        tags.push((tag.key.to_owned(), tag.value.to_owned()));
    })
}

/// A Unix timestamp in seconds.
fn parse_timestamp(text: &str) -> Result<i64, ParseError> {
    text.parse().map_err(|_| ParseError::InvalidEvent)
}

/// Fills an optional field; a field sent twice makes the line bad.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::InvalidEvent);
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MetricLine, Parsed, parse_line};

    fn parse(line: &str) -> Result<Parsed, ParseError> {
        let mut out = MetricLine::default();
        parse_line(line.as_bytes(), &mut out)
    }

    fn event(line: &str) -> Event {
        match parse(line) {
            Ok(Parsed::Event(event)) => event,
            other => panic!("{line:?} is not an event: {other:?}"),
        }
    }

    fn check(line: &str) -> ServiceCheck {
        match parse(line) {
            Ok(Parsed::ServiceCheck(check)) => check,
            other => panic!("{line:?} is not a service check: {other:?}"),
        }
    }

    fn reason(line: &str) -> ParseError {
        match parse(line) {
            Err(err) => err,
            Ok(parsed) => panic!("{line:?} was accepted: {parsed:?}"),
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // --- events ---

    #[test]
    fn event_title_and_text() {
        let event = event("_e{5,4}:hello|text");
        assert_eq!(event, new_event("hello", "text".to_owned()));
    }

    #[test]
    fn event_with_every_field() {
        let line = "_e{2,2}:up|ok|d:1700000000|h:web-7|p:low|t:warning|k:deploy|s:jenkins|#env:prod,canary";
        let event = event(line);
        assert_eq!(event.timestamp, Some(1700000000));
        assert_eq!(event.hostname.as_deref(), Some("web-7"));
        assert_eq!(event.priority.as_deref(), Some("low"));
        assert_eq!(event.alert_type.as_deref(), Some("warning"));
        assert_eq!(event.aggregation_key.as_deref(), Some("deploy"));
        assert_eq!(event.source_type.as_deref(), Some("jenkins"));
        assert_eq!(event.tags, tags(&[("env", "prod"), ("canary", "")]));
    }

    #[test]
    fn event_fields_in_any_order() {
        let event = event("_e{1,1}:a|b|#x:y|h:host|d:5");
        assert_eq!(
            (event.timestamp, event.hostname.as_deref()),
            (Some(5), Some("host"))
        );
        assert_eq!(event.tags, tags(&[("x", "y")]));
    }

    #[test]
    fn event_text_may_be_empty() {
        assert_eq!(event("_e{1,0}:a|").text, "");
    }

    #[test]
    fn event_text_may_hold_pipes_within_its_length() {
        let event = event("_e{1,5}:a|b|c:d|h:x");
        assert_eq!(
            (event.text.as_str(), event.hostname.as_deref()),
            ("b|c:d", Some("x"))
        );
    }

    #[test]
    fn event_text_newline_escape_becomes_newline() {
        assert_eq!(event("_e{1,8}:a|one\\ntwo").text, "one\ntwo");
    }

    #[test]
    fn event_title_keeps_newline_escape() {
        assert_eq!(event("_e{4,1}:a\\nb|c").title, "a\\nb");
    }

    #[test]
    fn utf8_event_lengths() {
        let event = event("_e{6,3}:héllo|ün");
        assert_eq!((event.title.as_str(), event.text.as_str()), ("héllo", "ün"));
    }

    #[test]
    fn utf16_event_lengths() {
        // "héllo" is 6 UTF-8 bytes but 5 UTF-16 units; "😀" is 4 bytes, 2 units.
        let event = event("_e{5,3}:héllo|a😀|h:x");
        assert_eq!(
            (event.title.as_str(), event.text.as_str()),
            ("héllo", "a😀")
        );
        assert_eq!(event.hostname.as_deref(), Some("x"));
    }

    #[test]
    fn event_lengths_that_fit_neither_way_are_invalid_event() {
        for line in [
            "_e{3,4}:hello|text",
            "_e{5,3}:hello|text",
            "_e{5,9}:hello|text",
            "_e{9,4}:hello|text",
            "_e{3,1}:é|a",
            "_e{1,1}:a|😀",
        ] {
            assert_eq!(reason(line), ParseError::InvalidEvent, "{line}");
        }
    }

    #[test]
    fn event_empty_title_is_invalid_event() {
        assert_eq!(reason("_e{0,4}:|text"), ParseError::InvalidEvent);
    }

    #[test]
    fn event_bad_header_is_invalid_event() {
        for line in [
            "_e{x,2}:a|bc",
            "_e{1}:a|b",
            "_e{1,1}a|b",
            "_e{-1,1}:a|b",
            "_e{,1}:a|b",
            "_e{99999999999999999999999,1}:a|b",
            "_e{",
        ] {
            assert_eq!(reason(line), ParseError::InvalidEvent, "{line}");
        }
    }

    #[test]
    fn event_timestamp_must_be_an_integer() {
        assert_eq!(reason("_e{1,1}:a|b|d:1.5"), ParseError::InvalidEvent);
        assert_eq!(reason("_e{1,1}:a|b|d:"), ParseError::InvalidEvent);
    }

    #[test]
    fn event_repeated_field_is_invalid_event() {
        assert_eq!(reason("_e{1,1}:a|b|h:x|h:y"), ParseError::InvalidEvent);
    }

    #[test]
    fn event_second_tag_field_is_invalid_tags() {
        assert_eq!(reason("_e{1,1}:a|b|#x|#y"), ParseError::InvalidTags);
    }

    #[test]
    fn event_bad_tag_is_invalid_tags() {
        assert_eq!(reason("_e{1,1}:a|b|#:v"), ParseError::InvalidTags);
    }

    #[test]
    fn event_ignored_fields_are_accepted() {
        let event = event("_e{1,1}:a|b|c:abc|e:1|card:high|T1700000000");
        assert_eq!(event, new_event("a", "b".to_owned()));
    }

    #[test]
    fn event_unknown_field_is_unknown_field() {
        assert_eq!(reason("_e{1,1}:a|b|x:1"), ParseError::UnknownField);
        assert_eq!(reason("_e{1,1}:a|b|h"), ParseError::UnknownField);
    }

    #[test]
    fn event_trailing_empty_field_is_malformed() {
        assert_eq!(reason("_e{1,1}:a|b|"), ParseError::Malformed);
    }

    // --- service checks ---

    #[test]
    fn service_check_name_and_status() {
        let check = check("_sc|db.up|2");
        assert_eq!((check.name.as_str(), check.status), ("db.up", 2));
        assert_eq!(
            (check.timestamp, check.hostname, check.message),
            (None, None, None)
        );
        assert!(check.tags.is_empty());
    }

    #[test]
    fn service_check_with_every_field() {
        let check = check("_sc|db|1|d:42|h:web-7|#env:prod|m:slow");
        assert_eq!(check.status, 1);
        assert_eq!(check.timestamp, Some(42));
        assert_eq!(check.hostname.as_deref(), Some("web-7"));
        assert_eq!(check.message.as_deref(), Some("slow"));
        assert_eq!(check.tags, tags(&[("env", "prod")]));
    }

    #[test]
    fn service_check_message_unescapes() {
        let check = check("_sc|db|0|m:a\\nb m\\: c");
        assert_eq!(check.message.as_deref(), Some("a\nb m: c"));
    }

    #[test]
    fn service_check_status_out_of_range_is_invalid_event() {
        for line in ["_sc|db|4", "_sc|db|-1", "_sc|db|", "_sc|db|01", "_sc|db"] {
            assert_eq!(reason(line), ParseError::InvalidEvent, "{line}");
        }
    }

    #[test]
    fn service_check_empty_name_is_invalid_event() {
        assert_eq!(reason("_sc||0"), ParseError::InvalidEvent);
    }

    #[test]
    fn service_check_timestamp_must_be_an_integer() {
        assert_eq!(reason("_sc|db|0|d:soon"), ParseError::InvalidEvent);
    }

    #[test]
    fn service_check_ignored_fields_are_accepted() {
        assert_eq!(check("_sc|db|3|c:id|e:1|card:low|T5").status, 3);
    }

    #[test]
    fn service_check_unknown_field_is_unknown_field() {
        assert_eq!(reason("_sc|db|0|p:low"), ParseError::UnknownField);
    }

    #[test]
    fn service_check_second_tag_field_is_invalid_tags() {
        assert_eq!(reason("_sc|db|0|#a|#b"), ParseError::InvalidTags);
    }

    #[test]
    fn service_check_trailing_empty_field_is_malformed() {
        assert_eq!(reason("_sc|db|0|"), ParseError::Malformed);
    }

    #[test]
    fn event_leaves_metric_line_empty() {
        let mut out = MetricLine::default();
        let parsed = parse_line(b"_sc|db|0", &mut out);
        assert!(matches!(parsed, Ok(Parsed::ServiceCheck(_))));
        assert!(out.name.is_empty() && out.samples.is_empty());
    }

    #[test]
    fn names_like_event_prefixes_without_their_shape_are_metrics() {
        assert_eq!(parse("_e:1|c"), Ok(Parsed::Metric));
        assert_eq!(parse("_sc:1|c"), Ok(Parsed::Metric));
    }
}
