//! The metric line grammar (SPEC §1): `lines` cuts a datagram or TCP chunk into lines and
//! `parse_line` reads one of them. Metric lines borrow from the input and only push into the
//! caller's reusable [`MetricLine`]; events and service checks are handed to `event.rs`.
//! The small grammar pieces (numbers, types) are nom parsers; the field walk is plain code.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::tag,
    character::complete::{char, digit0, digit1, one_of},
    combinator::{opt, recognize, value},
};

use super::error::ParseError;
use super::event;
use super::types::{MetricKind, MetricLine, Parsed, Sample, Tag};

/// Longest accepted metric name, in UTF-8 bytes, without its tags.
pub const MAX_NAME_BYTES: usize = 1024;

/// Splits a datagram/TCP chunk into lines: on `\n`, drops one `\r` before the line end, skips
/// empty lines; the final line without `\n` is yielded too.
pub fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || split_line(&mut rest))
}

/// Splits the first non-empty line off `rest`, as [`lines`] does.
fn split_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (*rest, &rest[rest.len()..]),
        };
        *rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            return Some(line);
        }
    }
    None
}

/// The next line of a chunk, from [`next_line`].
#[derive(Debug, PartialEq)]
pub enum NextLine<'a> {
    /// A plain `name:value|type` line of this length (without its `\n`), already parsed:
    /// the outcome [`parse_line`] would give for it.
    Parsed(usize, Result<(), ParseError>),
    /// Any other line, for [`parse_line`].
    Line(&'a [u8]),
}

/// Splits the first line off `rest`, as [`lines`] does. The commonest line, a plain
/// `name:value|type`, is found and parsed into `out` in one pass; any other is handed back
/// whole. None when no line is left.
pub fn next_line<'a>(rest: &mut &'a [u8], out: &mut MetricLine<'a>) -> Option<NextLine<'a>> {
    out.clear();
    if let Some((len, result)) = super::fast::plain_line(rest, out) {
        *rest = rest.get(len + 1..).unwrap_or_default();
        return Some(NextLine::Parsed(len, result));
    }
    split_line(rest).map(NextLine::Line)
}

/// Parses one line (no `\n`; a trailing `\r` already removed). For a metric line it fills
/// `out` (clearing it first) and returns `Ok(Parsed::Metric)`; events and service checks
/// return `Ok(Parsed::Event(..))` / `Ok(Parsed::ServiceCheck(..))` and leave `out` empty.
///
/// # Errors
///
/// The reason the whole line is dropped; `out` is left empty.
pub fn parse_line<'a>(line: &'a [u8], out: &mut MetricLine<'a>) -> Result<Parsed, ParseError> {
    out.clear();
    if let Some(result) = super::fast::metric(line, out) {
        return match result {
            Ok(()) => Ok(Parsed::Metric),
            Err(err) => {
                out.clear();
                Err(err)
            }
        };
    }
    parse_general(line, out)
}

/// The whole grammar, for every line the fast path leaves.
pub(super) fn parse_general<'a>(
    line: &'a [u8],
    out: &mut MetricLine<'a>,
) -> Result<Parsed, ParseError> {
    out.clear();
    let text = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    if text.starts_with(event::EVENT_PREFIX) {
        return event::parse_event(text).map(Parsed::Event);
    }
    if text.starts_with(event::CHECK_PREFIX) {
        return event::parse_service_check(text).map(Parsed::ServiceCheck);
    }
    match parse_metric(text, out) {
        Ok(()) => Ok(Parsed::Metric),
        Err(err) => {
            out.clear();
            Err(err)
        }
    }
}

/// `name [nametags] ":" sample (":" sample)* trailer*`, read left to right: the first bad
/// part found gives the reason.
fn parse_metric<'a>(text: &'a str, out: &mut MetricLine<'a>) -> Result<(), ParseError> {
    let (section, body) = text.split_once(':').ok_or(ParseError::Malformed)?;
    let (name, name_tags) = parse_name_section(section, &mut out.tags)?;
    out.name = name;
    let (last, rest) = parse_samples(body, &mut out.samples)?;
    parse_trailer(rest, last, name_tags, out)
}

/// Reads the name and its Graphite (`;k=v`) or InfluxDB (`,k=v`) tags; returns the name and
/// whether a tag spelling was used (even with no elements).
fn parse_name_section<'a>(
    section: &'a str,
    tags: &mut Vec<Tag<'a>>,
) -> Result<(&'a str, bool), ParseError> {
    let Some(i) = section.bytes().position(|b| b == b';' || b == b',') else {
        return check_name(section).map(|()| (section, false));
    };
    // `;` and `,` are ASCII, so `i` and `i + 1` are char boundaries.
    let (name, sep, elements) = (&section[..i], &section[i..=i], &section[i + 1..]);
    check_name(name)?;
    let other = if sep == ";" { ',' } else { ';' };
    if elements.contains([other, '|']) {
        return Err(ParseError::InvalidTags);
    }
    split_tags(elements, sep, '=', |tag| tags.push(tag))?;
    Ok((name, true))
}

/// A name is not empty, at most [`MAX_NAME_BYTES`] long, without control characters or `|`.
fn check_name(name: &str) -> Result<(), ParseError> {
    if name.is_empty() {
        Err(ParseError::EmptyName)
    } else if name.len() > MAX_NAME_BYTES {
        Err(ParseError::TooLong)
    } else if has_control(name) || name.as_bytes().contains(&b'|') {
        Err(ParseError::Malformed)
    } else {
        Ok(())
    }
}

/// Reads DogStatsD tags (`env:prod,canary`): elements split on `,`, each at its first `:`.
pub(super) fn dogstatsd_tags<'a>(
    text: &'a str,
    push: impl FnMut(Tag<'a>),
) -> Result<(), ParseError> {
    split_tags(text, ",", ':', push)
}

/// Splits tag elements on `sep`, skipping empty ones, each at its first `kv` (no `kv`: the
/// value is `""`). An empty key or a control character is [`ParseError::InvalidTags`].
fn split_tags<'a>(
    text: &'a str,
    sep: &str,
    kv: char,
    mut push: impl FnMut(Tag<'a>),
) -> Result<(), ParseError> {
    for element in text.split(sep).filter(|element| !element.is_empty()) {
        let (key, value) = element.split_once(kv).unwrap_or((element, ""));
        if key.is_empty() || has_control(key) || has_control(value) {
            return Err(ParseError::InvalidTags);
        }
        push(Tag { key, value });
    }
    Ok(())
}

/// Whether `text` holds a control character (`char::is_control`: U+0000–U+001F, U+007F and
/// U+0080–U+009F), scanning bytes: the C1 range is encoded as `0xC2 0x80..=0x9F`.
pub(super) fn has_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2
                && bytes
                    .get(i + 1)
                    .is_some_and(|&n| (0x80..=0x9f).contains(&n)))
    })
}

/// Where the last sample's values start in `MetricLine::samples`, and whether it has a rate.
pub(super) struct LastSample {
    pub(super) start: usize,
    pub(super) has_rate: bool,
}

/// Reads `sample (":" sample)*`; returns the last sample and the rest of the line, which is
/// empty or starts with `|`.
fn parse_samples<'a>(
    mut body: &'a str,
    samples: &mut Vec<Sample<'a>>,
) -> Result<(LastSample, &'a str), ParseError> {
    loop {
        let start = samples.len();
        let after_values = collect_values(body, samples)?;
        let (kind, rest) = sample_type(after_values)?;
        let values = &mut samples[start..];
        convert_values(values, kind)?;
        let (rate, rest) = sample_rate(rest)?;
        if let Some(rate) = rate {
            set_rate(values, rate);
        }
        match rest.strip_prefix(':') {
            Some(next) => body = next,
            None => {
                let has_rate = rate.is_some();
                return Ok((LastSample { start, has_rate }, rest));
            }
        }
    }
}

/// Pushes one placeholder sample per `value (":" value)*` token (the kind is known only after
/// the `|type`); returns the text after the `|` that ends them.
fn collect_values<'a>(
    mut body: &'a str,
    samples: &mut Vec<Sample<'a>>,
) -> Result<&'a str, ParseError> {
    loop {
        let (text, rest) = token(body);
        samples.push(Sample {
            kind: MetricKind::Counter,
            value: 0.0,
            signed: false,
            text,
            rate: 1.0,
        });
        if let Some(next) = rest.strip_prefix(':') {
            body = next;
        } else {
            return rest.strip_prefix('|').ok_or(ParseError::Malformed);
        }
    }
}

/// Splits `text` before its first `:` or `|` (the rest keeps the delimiter).
fn token(text: &str) -> (&str, &str) {
    // Both delimiters are ASCII, so the byte position is a char boundary.
    let end = text
        .bytes()
        .position(|b| b == b':' || b == b'|')
        .unwrap_or(text.len());
    text.split_at(end)
}

/// `c | g | ms | h | d | s | m`, with `ms` tried before `m`.
fn kind(input: &str) -> IResult<&str, MetricKind, ()> {
    alt((
        value(MetricKind::Timer, tag("ms")),
        value(MetricKind::Counter, tag("c")),
        value(MetricKind::Gauge, tag("g")),
        value(MetricKind::Histogram, tag("h")),
        value(MetricKind::Distribution, tag("d")),
        value(MetricKind::Set, tag("s")),
        value(MetricKind::Counter, tag("m")),
    ))
    .parse(input)
}

/// Reads the type of a sample, which must end at `|`, `:` or the line end.
fn sample_type(text: &str) -> Result<(MetricKind, &str), ParseError> {
    match kind(text) {
        Ok((rest, kind)) if rest.is_empty() || rest.starts_with(['|', ':']) => Ok((kind, rest)),
        _ => Err(ParseError::InvalidType),
    }
}

/// Gives the placeholder samples their kind and value.
fn convert_values(samples: &mut [Sample<'_>], kind: MetricKind) -> Result<(), ParseError> {
    for sample in samples {
        sample.kind = kind;
        sample.signed = sample.text.starts_with(['+', '-']);
        sample.value = sample_value(sample.text, kind)?;
    }
    Ok(())
}

/// A set member is any non-empty text without control characters (value 0); other kinds
/// read a decimal number, and timers may not be negative.
#[inline]
pub(super) fn sample_value(text: &str, kind: MetricKind) -> Result<f64, ParseError> {
    if kind == MetricKind::Set {
        if text.is_empty() || has_control(text) {
            return Err(ParseError::InvalidValue);
        }
        return Ok(0.0);
    }
    match parse_number(text) {
        Some(value) if kind == MetricKind::Timer && value < 0.0 => Err(ParseError::InvalidValue),
        Some(value) => Ok(value),
        None => Err(ParseError::InvalidValue),
    }
}

/// Optional sign, digits with an optional fraction (`5`, `5.`, `.5`), optional exponent.
fn number_text(input: &str) -> IResult<&str, &str, ()> {
    recognize((
        opt(one_of("+-")),
        alt((
            recognize((digit1, opt((char('.'), digit0)))),
            recognize((char('.'), digit1)),
        )),
        opt((one_of("eE"), opt(one_of("+-")), digit1)),
    ))
    .parse(input)
}

/// Reads a whole text as a finite decimal number, `-0` as `0`. The syntax is checked first
/// because `f64::from_str` also takes `inf` and `nan`; it then gives correct rounding.
fn parse_number(text: &str) -> Option<f64> {
    if let Some(value) = parse_small_integer(text) {
        return Some(value);
    }
    match number_text(text) {
        Ok(("", _)) => text
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .map(|value| value + 0.0),
        _ => None,
    }
}

/// The common case, `[+-]digits` with at most 15 digits, read without the general parser:
/// such an integer is exactly representable, so the result is the same.
#[inline]
fn parse_small_integer(text: &str) -> Option<f64> {
    let digits = match text.as_bytes().first() {
        Some(b'+' | b'-') => &text[1..],
        _ => text,
    };
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits
        .bytes()
        .fold(0u64, |n, b| n * 10 + u64::from(b - b'0')) as f64;
    Some(if text.as_bytes().first() == Some(&b'-') {
        -magnitude + 0.0
    } else {
        magnitude
    })
}

/// Reads the text after `@` as a sample rate, 0 < rate <= 1 (and 1/rate finite).
fn parse_rate(text: &str) -> Result<f64, ParseError> {
    parse_number(text)
        // A rate so small that 1/rate overflows would make every figure infinite.
        .filter(|rate| *rate > 0.0 && *rate <= 1.0 && (1.0 / rate).is_finite())
        .ok_or(ParseError::InvalidSampleRate)
}

/// Reads the `|@rate` that may follow a sample's type; returns it and the rest of the line.
pub(super) fn sample_rate(rest: &str) -> Result<(Option<f64>, &str), ParseError> {
    let Some(after) = rest.strip_prefix("|@") else {
        return Ok((None, rest));
    };
    let (text, rest) = token(after);
    Ok((Some(parse_rate(text)?), rest))
}

fn set_rate(samples: &mut [Sample<'_>], rate: f64) {
    for sample in samples {
        sample.rate = rate;
    }
}

/// Reads the fields after the last sample: `|#tags` once, `|@rate` when the last sample has
/// none yet, and the ignored fields.
pub(super) fn parse_trailer<'a>(
    rest: &'a str,
    mut last: LastSample,
    name_tags: bool,
    out: &mut MetricLine<'a>,
) -> Result<(), ParseError> {
    if rest.is_empty() {
        return Ok(());
    }
    let fields = rest.strip_prefix('|').ok_or(ParseError::Malformed)?;
    let mut tags_seen = name_tags;
    for field in fields.split('|') {
        if field.is_empty() {
            return Err(ParseError::Malformed);
        } else if let Some(tags) = field.strip_prefix('#') {
            if tags_seen {
                return Err(ParseError::InvalidTags);
            }
            tags_seen = true;
            dogstatsd_tags(tags, |tag| out.tags.push(tag))?;
        } else if let Some(rate) = field.strip_prefix('@') {
            if last.has_rate {
                return Err(ParseError::InvalidSampleRate);
            }
            last.has_rate = true;
            set_rate(&mut out.samples[last.start..], parse_rate(rate)?);
        } else if !is_ignored_field(field) {
            return Err(ParseError::UnknownField);
        }
    }
    Ok(())
}

/// Fields accepted and ignored after the samples: `T` (timestamp), `c:` (container id), `e:`
/// and `card:` (cardinality).
pub(super) fn is_ignored_field(field: &str) -> bool {
    field.starts_with('T') || ["c:", "e:", "card:"].iter().any(|p| field.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetricKind::{Counter, Distribution, Gauge, Histogram, Set, Timer};

    fn parse(line: &str) -> Result<MetricLine<'_>, ParseError> {
        let mut out = MetricLine::default();
        match parse_line(line.as_bytes(), &mut out)? {
            Parsed::Metric => Ok(out),
            other => panic!("not a metric line: {other:?}"),
        }
    }

    fn reason(line: &str) -> ParseError {
        match parse(line) {
            Ok(out) => panic!("{line:?} was accepted: {out:?}"),
            Err(err) => err,
        }
    }

    fn sample(kind: MetricKind, value: f64, text: &str, rate: f64) -> Sample<'_> {
        let signed = text.starts_with(['+', '-']);
        Sample {
            kind,
            value,
            signed,
            text,
            rate,
        }
    }

    fn tag<'a>(key: &'a str, value: &'a str) -> Tag<'a> {
        Tag { key, value }
    }

    fn split(buf: &[u8]) -> Vec<&[u8]> {
        lines(buf).collect()
    }

    // --- lines ---

    #[test]
    fn lines_split_on_newline() {
        assert_eq!(split(b"a:1|c\nb:2|c\n"), [&b"a:1|c"[..], b"b:2|c"]);
    }

    #[test]
    fn lines_drop_one_carriage_return() {
        assert_eq!(split(b"a:1|c\r\nb:2|c\r\r\n"), [&b"a:1|c"[..], b"b:2|c\r"]);
    }

    #[test]
    fn lines_skip_empty_lines() {
        assert_eq!(split(b"\n\r\na:1|c\n\n"), [&b"a:1|c"[..]]);
    }

    #[test]
    fn lines_yield_final_line_without_newline() {
        assert_eq!(split(b"a:1|c\nb:2|c"), [&b"a:1|c"[..], b"b:2|c"]);
    }

    #[test]
    fn lines_of_empty_buffer_yield_nothing() {
        assert!(split(b"").is_empty());
    }

    // --- kinds ---

    #[test]
    fn counter() {
        let out = parse("hits:3|c").unwrap();
        assert_eq!(out.name, "hits");
        assert!(out.tags.is_empty());
        assert_eq!(out.samples, [sample(Counter, 3.0, "3", 1.0)]);
    }

    #[test]
    fn counter_with_rate() {
        let out = parse("hits:3|c|@0.1").unwrap();
        assert_eq!(out.samples, [sample(Counter, 3.0, "3", 0.1)]);
    }

    #[test]
    fn gauge() {
        let out = parse("depth:17|g").unwrap();
        assert_eq!(out.samples, [sample(Gauge, 17.0, "17", 1.0)]);
        assert!(!out.samples[0].signed);
    }

    #[test]
    fn gauge_with_sign_is_signed() {
        let out = parse("depth:+4|g:-3|g").unwrap();
        assert_eq!(
            out.samples,
            [
                sample(Gauge, 4.0, "+4", 1.0),
                sample(Gauge, -3.0, "-3", 1.0)
            ]
        );
        assert!(out.samples.iter().all(|s| s.signed));
    }

    #[test]
    fn timer() {
        let out = parse("lat:250|ms").unwrap();
        assert_eq!(out.samples, [sample(Timer, 250.0, "250", 1.0)]);
    }

    #[test]
    fn histogram() {
        let out = parse("size:-2.5|h").unwrap();
        assert_eq!(out.samples, [sample(Histogram, -2.5, "-2.5", 1.0)]);
    }

    #[test]
    fn distribution() {
        let out = parse("size:7|d").unwrap();
        assert_eq!(out.samples, [sample(Distribution, 7.0, "7", 1.0)]);
    }

    #[test]
    fn set_member_is_kept_as_text() {
        let out = parse("users:alice|s").unwrap();
        assert_eq!(out.samples, [sample(Set, 0.0, "alice", 1.0)]);
    }

    #[test]
    fn set_member_is_not_read_as_a_number() {
        let out = parse("users:1e400|s:-x|s").unwrap();
        assert_eq!(
            out.samples,
            [sample(Set, 0.0, "1e400", 1.0), sample(Set, 0.0, "-x", 1.0)]
        );
    }

    #[test]
    fn meter_is_a_counter() {
        let out = parse("events:2|m").unwrap();
        assert_eq!(out.samples, [sample(Counter, 2.0, "2", 1.0)]);
    }

    #[test]
    fn ms_is_a_timer_not_a_meter() {
        assert_eq!(parse("lat:2|ms").unwrap().samples[0].kind, Timer);
    }

    // --- several samples ---

    #[test]
    fn value_packing_shares_type_rate_and_tags() {
        let out = parse("lat:1:2:3|ms|@0.5|#env:prod").unwrap();
        assert_eq!(
            out.samples,
            [
                sample(Timer, 1.0, "1", 0.5),
                sample(Timer, 2.0, "2", 0.5),
                sample(Timer, 3.0, "3", 0.5),
            ]
        );
        assert_eq!(out.tags, [tag("env", "prod")]);
    }

    #[test]
    fn etsy_multi_sample_has_one_type_per_sample() {
        let out = parse("req:1|c:250|ms").unwrap();
        assert_eq!(out.name, "req");
        assert_eq!(
            out.samples,
            [
                sample(Counter, 1.0, "1", 1.0),
                sample(Timer, 250.0, "250", 1.0)
            ]
        );
    }

    #[test]
    fn etsy_multi_sample_has_one_rate_per_sample() {
        let out = parse("req:1|c|@0.5:2:3|ms|@0.25:4|g").unwrap();
        assert_eq!(
            out.samples,
            [
                sample(Counter, 1.0, "1", 0.5),
                sample(Timer, 2.0, "2", 0.25),
                sample(Timer, 3.0, "3", 0.25),
                sample(Gauge, 4.0, "4", 1.0),
            ]
        );
    }

    #[test]
    fn one_bad_sample_drops_the_line() {
        let mut out = MetricLine::default();
        let line = b"req:1|c:x|ms:3|g";
        assert_eq!(parse_line(line, &mut out), Err(ParseError::InvalidValue));
        assert!(out.samples.is_empty() && out.name.is_empty());
    }

    #[test]
    fn sample_without_type_after_a_good_one_is_malformed() {
        assert_eq!(reason("req:1|c:2"), ParseError::Malformed);
    }

    // --- tags ---

    #[test]
    fn dogstatsd_tags() {
        let out = parse("x:1|c|#env:prod,region:eu").unwrap();
        assert_eq!(out.tags, [tag("env", "prod"), tag("region", "eu")]);
    }

    #[test]
    fn dogstatsd_tag_without_value_has_empty_value() {
        let out = parse("x:1|c|#canary,env:").unwrap();
        assert_eq!(out.tags, [tag("canary", ""), tag("env", "")]);
    }

    #[test]
    fn dogstatsd_tag_value_keeps_colons() {
        let out = parse("x:1|c|#a:b:c").unwrap();
        assert_eq!(out.tags, [tag("a", "b:c")]);
    }

    #[test]
    fn empty_tag_elements_are_skipped() {
        let out = parse("x:1|c|#,a:1,,b:2,").unwrap();
        assert_eq!(out.tags, [tag("a", "1"), tag("b", "2")]);
    }

    #[test]
    fn empty_tag_field_yields_no_tags() {
        let out = parse("x:1|c|#").unwrap();
        assert!(out.tags.is_empty());
        assert_eq!(out.samples.len(), 1);
    }

    #[test]
    fn repeated_tag_keys_are_kept_in_order() {
        let out = parse("x:1|c|#a:1,b:2,a:3").unwrap();
        assert_eq!(out.tags, [tag("a", "1"), tag("b", "2"), tag("a", "3")]);
    }

    #[test]
    fn graphite_tags() {
        let out = parse("x;env=prod;canary;;k=a=b:1|c").unwrap();
        assert_eq!(out.name, "x");
        assert_eq!(
            out.tags,
            [tag("env", "prod"), tag("canary", ""), tag("k", "a=b")]
        );
    }

    #[test]
    fn influx_tags() {
        let out = parse("x,env=prod,canary,,region=eu:1|c").unwrap();
        assert_eq!(out.name, "x");
        assert_eq!(
            out.tags,
            [tag("env", "prod"), tag("canary", ""), tag("region", "eu")]
        );
    }

    #[test]
    fn name_tag_separator_without_elements_yields_no_tags() {
        let out = parse("x;:1|c").unwrap();
        assert_eq!((out.name, out.tags.len()), ("x", 0));
    }

    #[test]
    fn mixed_tag_styles_are_invalid_tags() {
        assert_eq!(reason("x;a=b,c=d:1|c"), ParseError::InvalidTags);
        assert_eq!(reason("x,a=b;c=d:1|c"), ParseError::InvalidTags);
    }

    #[test]
    fn name_tags_with_tag_field_are_invalid_tags() {
        assert_eq!(reason("x;a=b:1|c|#c:d"), ParseError::InvalidTags);
        assert_eq!(reason("x,a=b:1|c|#"), ParseError::InvalidTags);
    }

    #[test]
    fn second_tag_field_is_invalid_tags() {
        assert_eq!(reason("x:1|c|#a:b|#c:d"), ParseError::InvalidTags);
    }

    #[test]
    fn empty_tag_key_is_invalid_tags() {
        assert_eq!(reason("x:1|c|#:v"), ParseError::InvalidTags);
        assert_eq!(reason("x;=v:1|c"), ParseError::InvalidTags);
        assert_eq!(reason("x,=v:1|c"), ParseError::InvalidTags);
    }

    #[test]
    fn control_character_in_tag_is_invalid_tags() {
        assert_eq!(reason("x:1|c|#a:b\tc"), ParseError::InvalidTags);
        assert_eq!(reason("x:1|c|#a\u{7f}:b"), ParseError::InvalidTags);
        assert_eq!(reason("x;a=\u{85}:1|c"), ParseError::InvalidTags);
    }

    #[test]
    fn pipe_in_name_tags_is_invalid_tags() {
        assert_eq!(reason("x;a=b|c:1|c"), ParseError::InvalidTags);
    }

    // --- rates ---

    #[test]
    fn rate_after_tags_applies_to_last_sample() {
        let out = parse("x:1|c:2:3|ms|#a:b|@0.5").unwrap();
        assert_eq!(
            out.samples,
            [
                sample(Counter, 1.0, "1", 1.0),
                sample(Timer, 2.0, "2", 0.5),
                sample(Timer, 3.0, "3", 0.5),
            ]
        );
    }

    #[test]
    fn second_rate_is_invalid() {
        assert_eq!(reason("x:1|c|@0.5|@0.5"), ParseError::InvalidSampleRate);
        assert_eq!(reason("x:1|c|@0.5|#a|@0.5"), ParseError::InvalidSampleRate);
        assert_eq!(reason("x:1|c|#a|@0.5|@0.5"), ParseError::InvalidSampleRate);
    }

    #[test]
    fn rate_of_one_is_accepted() {
        assert_eq!(parse("x:1|c|@1").unwrap().samples[0].rate, 1.0);
    }

    #[test]
    fn rate_uses_number_syntax() {
        assert_eq!(parse("x:1|c|@.5").unwrap().samples[0].rate, 0.5);
        assert_eq!(parse("x:1|c|@5e-1").unwrap().samples[0].rate, 0.5);
    }

    #[test]
    fn rate_out_of_range_is_invalid() {
        for line in ["x:1|c|@0", "x:1|c|@1.01", "x:1|c|@-0.5", "x:1|c|@1e-400"] {
            assert_eq!(reason(line), ParseError::InvalidSampleRate, "{line}");
        }
    }

    #[test]
    fn rate_whose_inverse_overflows_is_invalid() {
        assert_eq!(reason("x:1|c|@1e-320"), ParseError::InvalidSampleRate);
        assert_eq!(parse("x:1|c|@1e-300").unwrap().samples[0].rate, 1e-300);
    }

    #[test]
    fn rate_that_is_not_a_number_is_invalid() {
        for line in [
            "x:1|c|@",
            "x:1|c|@x",
            "x:1|c|@nan",
            "x:1|c|@0.5x",
            "x:1|c|#a|@",
        ] {
            assert_eq!(reason(line), ParseError::InvalidSampleRate, "{line}");
        }
    }

    #[test]
    fn rate_on_gauge_and_set_is_still_checked() {
        assert_eq!(reason("x:1|g|@2"), ParseError::InvalidSampleRate);
        assert_eq!(reason("x:a|s|@0"), ParseError::InvalidSampleRate);
        assert_eq!(parse("x:a|s|@0.5").unwrap().samples[0].rate, 0.5);
    }

    // --- trailer fields ---

    #[test]
    fn ignored_fields_are_accepted() {
        let out = parse("x:1|c|T1700000000|c:abc123|#a:b|e:x|card:low").unwrap();
        assert_eq!(out.samples, [sample(Counter, 1.0, "1", 1.0)]);
        assert_eq!(out.tags, [tag("a", "b")]);
    }

    #[test]
    fn unknown_field_is_rejected() {
        assert_eq!(reason("x:1|c|x:1"), ParseError::UnknownField);
        assert_eq!(reason("x:1|c|c"), ParseError::UnknownField);
        assert_eq!(reason("x:1|c|card"), ParseError::UnknownField);
    }

    #[test]
    fn trailing_empty_field_is_malformed() {
        assert_eq!(reason("x:1|c|"), ParseError::Malformed);
        assert_eq!(reason("x:1|c|@0.5|"), ParseError::Malformed);
    }

    #[test]
    fn empty_field_between_fields_is_malformed() {
        assert_eq!(reason("x:1|c||#a"), ParseError::Malformed);
    }

    // --- values ---

    #[test]
    fn decimal_forms_are_numbers() {
        let cases = [
            (".5", 0.5),
            ("5.", 5.0),
            ("-1.25", -1.25),
            ("+2", 2.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("+1.5e+2", 150.0),
            ("5.e1", 50.0),
            ("007", 7.0),
        ];
        for (text, value) in cases {
            let line = format!("x:{text}|g");
            assert_eq!(parse(&line).unwrap().samples[0].value, value, "{text}");
        }
    }

    #[test]
    fn non_decimal_values_are_invalid_value() {
        for text in [
            "0x10", "inf", "-inf", "nan", "NaN", "infinity", " 1", "1 ", "1e", "e1", ".", "-",
            "1.2.3", "1_000", "1e+", "١",
        ] {
            let line = format!("x:{text}|c");
            assert_eq!(reason(&line), ParseError::InvalidValue, "{text}");
        }
    }

    #[test]
    fn overflowing_value_is_invalid_value() {
        assert_eq!(reason("x:1e400|g"), ParseError::InvalidValue);
        assert_eq!(reason("x:-1e400|h"), ParseError::InvalidValue);
    }

    #[test]
    fn empty_value_is_invalid_value() {
        assert_eq!(reason("x:|c"), ParseError::InvalidValue);
        assert_eq!(reason("x:|s"), ParseError::InvalidValue);
    }

    #[test]
    fn empty_packed_value_is_invalid_value() {
        assert_eq!(reason("x:1::2|c"), ParseError::InvalidValue);
    }

    #[test]
    fn negative_zero_is_stored_as_zero() {
        let value = parse("x:-0|g").unwrap().samples[0].value;
        assert!(value == 0.0 && value.is_sign_positive());
    }

    #[test]
    fn timer_negative_is_invalid_value() {
        assert_eq!(reason("lat:-1|ms"), ParseError::InvalidValue);
        assert_eq!(reason("lat:1:-0.5|ms"), ParseError::InvalidValue);
    }

    #[test]
    fn timer_negative_zero_is_accepted() {
        assert_eq!(parse("lat:-0|ms").unwrap().samples[0].value, 0.0);
    }

    #[test]
    fn histogram_distribution_and_counter_may_be_negative() {
        let out = parse("x:-1|h:-2|d:-3|c").unwrap();
        let values: Vec<f64> = out.samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [-1.0, -2.0, -3.0]);
    }

    #[test]
    fn set_member_with_control_character_is_invalid_value() {
        assert_eq!(reason("users:a\u{1}b|s"), ParseError::InvalidValue);
    }

    // --- types ---

    #[test]
    fn unknown_type_is_invalid_type() {
        assert_eq!(reason("x:1|q"), ParseError::InvalidType);
        assert_eq!(reason("x:1|C"), ParseError::InvalidType);
    }

    #[test]
    fn empty_type_is_invalid_type() {
        assert_eq!(reason("x:1|"), ParseError::InvalidType);
        assert_eq!(reason("x:1||c"), ParseError::InvalidType);
    }

    #[test]
    fn type_with_trailing_garbage_is_invalid_type() {
        for line in ["x:1|cc", "x:1|c x", "x:1|msx", "x:1|c@0.5", "x:1|c#a"] {
            assert_eq!(reason(line), ParseError::InvalidType, "{line}");
        }
    }

    // --- names and line shape ---

    #[test]
    fn name_is_kept_as_sent() {
        let out = parse("Api Requests/é=ok#1:1|c").unwrap();
        assert_eq!(out.name, "Api Requests/é=ok#1");
    }

    #[test]
    fn line_without_colon_is_malformed() {
        assert_eq!(reason("hits"), ParseError::Malformed);
        assert_eq!(reason(""), ParseError::Malformed);
    }

    #[test]
    fn line_without_type_is_malformed() {
        assert_eq!(reason("hits:1"), ParseError::Malformed);
        assert_eq!(reason("hits:"), ParseError::Malformed);
    }

    #[test]
    fn name_with_control_character_is_malformed() {
        assert_eq!(reason("a\tb:1|c"), ParseError::Malformed);
        assert_eq!(reason("a\rb:1|c"), ParseError::Malformed);
    }

    #[test]
    fn name_with_pipe_is_malformed() {
        assert_eq!(reason("a|b:1|c"), ParseError::Malformed);
    }

    #[test]
    fn empty_name_is_empty_name() {
        assert_eq!(reason(":1|c"), ParseError::EmptyName);
        assert_eq!(reason(";a=b:1|c"), ParseError::EmptyName);
        assert_eq!(reason(",a=b:1|c"), ParseError::EmptyName);
    }

    #[test]
    fn name_over_limit_is_too_long() {
        let line = format!("{}:1|c", "n".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(reason(&line), ParseError::TooLong);
    }

    #[test]
    fn name_limit_counts_utf8_bytes() {
        let line = format!("{}:1|c", "é".repeat(MAX_NAME_BYTES / 2 + 1));
        assert_eq!(reason(&line), ParseError::TooLong);
    }

    #[test]
    fn name_at_limit_with_tags_is_accepted() {
        let name = "n".repeat(MAX_NAME_BYTES);
        let line = format!("{name};env=prod:1|c");
        let out = parse(&line).unwrap();
        assert_eq!((out.name.len(), out.tags.len()), (MAX_NAME_BYTES, 1));
    }

    #[test]
    fn invalid_utf8_is_invalid_utf8() {
        let mut out = MetricLine::default();
        let line = b"caf\xe9:1|c";
        assert_eq!(parse_line(line, &mut out), Err(ParseError::InvalidUtf8));
    }

    #[test]
    fn out_is_cleared_before_each_line() {
        let buf = b"a;k=v:1|c\nb:2|g";
        let mut out = MetricLine::default();
        for line in lines(buf) {
            assert_eq!(parse_line(line, &mut out), Ok(Parsed::Metric));
        }
        assert_eq!(out.name, "b");
        assert!(out.tags.is_empty());
        assert_eq!(out.samples, [sample(Gauge, 2.0, "2", 1.0)]);
    }
}

#[cfg(test)]
mod proptests {
    use std::fmt::Write;

    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;

    const ALPHABET: &[u8] = b":|@#,;=.-+eE0123456789abcms_{}\r\n";
    const WIDE_CHARS: &[char] = &['é', '😀', '\u{85}', '\u{0}', '\t', 'T', 'd', 'h', '|', ':'];

    /// Runs a buffer through the parser and checks what an accepted metric line promises.
    fn parse_all(buf: &[u8]) {
        let mut out = MetricLine::default();
        for line in lines(buf) {
            if let Ok(Parsed::Metric) = parse_line(line, &mut out) {
                assert!(!out.name.is_empty() && out.name.len() <= MAX_NAME_BYTES);
                assert!(!out.samples.is_empty());
                for sample in &out.samples {
                    assert!(sample.value.is_finite());
                    assert!(sample.rate > 0.0 && sample.rate <= 1.0);
                }
            }
        }
    }

    fn prefix() -> impl Strategy<Value = &'static str> {
        select(vec![
            "", "_e{", "_e{3,2}:", "_sc|", "_sc|x|", "x:", "x;a=b:",
        ])
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..512)) {
            parse_all(&buf);
        }

        #[test]
        fn statsd_alphabet_never_panics(prefix in prefix(), body in vec(select(ALPHABET), 0..160)) {
            parse_all(&[prefix.as_bytes(), &body].concat());
        }

        #[test]
        fn random_utf8_never_panics(prefix in prefix(), text in any::<String>()) {
            parse_all(format!("{prefix}{text}").as_bytes());
        }

        #[test]
        fn mixed_wide_alphabet_never_panics(
            prefix in prefix(),
            body in vec(prop_oneof![select(ALPHABET).prop_map(char::from), select(WIDE_CHARS)], 0..80),
        ) {
            let body: String = body.into_iter().collect();
            parse_all(format!("{prefix}{body}").as_bytes());
        }

        #[test]
        fn well_formed_lines_round_trip(generated in line()) {
            let text = generated.render();
            let mut out = MetricLine::default();
            prop_assert_eq!(parse_line(text.as_bytes(), &mut out), Ok(Parsed::Metric), "{}", text);
            prop_assert_eq!(out.name, generated.name.as_str());
            let tags: Vec<(&str, &str)> = out.tags.iter().map(|t| (t.key, t.value)).collect();
            prop_assert_eq!(tags, generated.expected_tags());
            let samples: Vec<_> = out.samples.iter().map(|s| (s.kind, s.value, s.text, s.rate)).collect();
            prop_assert_eq!(samples, generated.expected_samples());
        }
    }

    const DOGSTATSD: u8 = 1;
    const GRAPHITE: u8 = 2;
    const INFLUX: u8 = 3;

    /// One generated sample: its type code, its values (text and expected value), its rate.
    #[derive(Debug, Clone)]
    struct GenSample {
        code: &'static str,
        kind: MetricKind,
        values: Vec<(String, f64)>,
        rate: Option<f64>,
    }

    /// One generated well-formed line; `spelling` 0 means no tags.
    #[derive(Debug, Clone)]
    struct GenLine {
        name: String,
        spelling: u8,
        tags: Vec<(String, String)>,
        samples: Vec<GenSample>,
        rate_after_tags: bool,
        ignored: Option<&'static str>,
    }

    impl GenLine {
        fn render(&self) -> String {
            let mut line = self.name.clone();
            match self.spelling {
                GRAPHITE => push_tags(&mut line, &self.tags, ";", ';', '='),
                INFLUX => push_tags(&mut line, &self.tags, ",", ',', '='),
                _ => {}
            }
            line.push(':');
            let last = self.samples.len() - 1;
            for (i, sample) in self.samples.iter().enumerate() {
                if i > 0 {
                    line.push(':');
                }
                let values: Vec<&str> = sample.values.iter().map(|(t, _)| t.as_str()).collect();
                write!(line, "{}|{}", values.join(":"), sample.code).unwrap();
                match sample.rate {
                    Some(rate) if !(i == last && self.rate_after_tags) => {
                        write!(line, "|@{rate}").unwrap();
                    }
                    _ => {}
                }
            }
            if self.spelling == DOGSTATSD {
                push_tags(&mut line, &self.tags, "|#", ',', ':');
            }
            if let (true, Some(rate)) = (self.rate_after_tags, self.samples[last].rate) {
                write!(line, "|@{rate}").unwrap();
            }
            if let Some(field) = self.ignored {
                write!(line, "|{field}").unwrap();
            }
            line
        }

        fn expected_tags(&self) -> Vec<(&str, &str)> {
            self.tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        }

        fn expected_samples(&self) -> Vec<(MetricKind, f64, &str, f64)> {
            self.samples
                .iter()
                .flat_map(|s| {
                    let rate = s.rate.unwrap_or(1.0);
                    s.values
                        .iter()
                        .map(move |(t, v)| (s.kind, *v, t.as_str(), rate))
                })
                .collect()
        }
    }

    /// Writes `start` then the tags joined by `sep`; a tag with an empty value is a bare key.
    fn push_tags(line: &mut String, tags: &[(String, String)], start: &str, sep: char, kv: char) {
        line.push_str(start);
        for (i, (key, value)) in tags.iter().enumerate() {
            if i > 0 {
                line.push(sep);
            }
            line.push_str(key);
            if !value.is_empty() {
                line.push(kv);
                line.push_str(value);
            }
        }
    }

    fn kind() -> impl Strategy<Value = (&'static str, MetricKind)> {
        use MetricKind::*;
        select(vec![
            ("c", Counter),
            ("g", Gauge),
            ("ms", Timer),
            ("h", Histogram),
            ("d", Distribution),
            ("s", Set),
            ("m", Counter),
        ])
    }

    /// A finite number written with `{}` or `{:e}`, and its value.
    fn number(range: std::ops::Range<f64>) -> impl Strategy<Value = (String, f64)> {
        let small = (range.start / 1e9)..(range.end / 1e9);
        (prop_oneof![range, small], any::<bool>()).prop_map(|(value, exp)| {
            let text = if exp {
                format!("{value:e}")
            } else {
                format!("{value}")
            };
            (text, value + 0.0)
        })
    }

    fn values(code: &'static str) -> BoxedStrategy<Vec<(String, f64)>> {
        match code {
            "s" => vec("[a-zA-Z0-9_.é+-]{1,8}".prop_map(|m| (m, 0.0)), 1..4).boxed(),
            "ms" => vec(number(0.0..1e9), 1..4).boxed(),
            _ => vec(number(-1e9..1e9), 1..4).boxed(),
        }
    }

    fn sample() -> impl Strategy<Value = GenSample> {
        (kind(), option::of(0.001..=1.0f64)).prop_flat_map(|((code, kind), rate)| {
            values(code).prop_map(move |values| GenSample {
                code,
                kind,
                values,
                rate,
            })
        })
    }

    /// A tag spelling and tags that fit it: only DogStatsD values may hold `:`.
    fn tags() -> impl Strategy<Value = (u8, Vec<(String, String)>)> {
        (0u8..4).prop_flat_map(|spelling| {
            let value = match spelling {
                DOGSTATSD => "[a-z0-9_.é:=]{0,6}",
                _ => "[a-z0-9_.é=]{0,6}",
            };
            let tags = vec(("[a-zA-Z][a-z0-9_.é]{0,6}", value), 0..4);
            (Just(spelling), tags)
        })
    }

    fn line() -> impl Strategy<Value = GenLine> {
        let ignored = option::of(select(vec!["T1700000000", "c:abc", "e:1", "card:low"]));
        (
            "[a-zA-Z0-9_.é/ -]{1,40}",
            tags(),
            vec(sample(), 1..4),
            any::<bool>(),
            ignored,
        )
            .prop_map(
                |(name, (spelling, tags), samples, after, ignored)| GenLine {
                    name,
                    tags: if spelling == 0 { Vec::new() } else { tags },
                    spelling,
                    samples,
                    // Only the DogStatsD spelling has a tag field for the rate to follow.
                    rate_after_tags: after && spelling == DOGSTATSD,
                    ignored,
                },
            )
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::{has_control, parse_small_integer};
    use proptest::prelude::*;

    #[test]
    fn byte_scan_finds_the_same_control_characters_as_char_is_control() {
        for c in (0u32..0x300).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            assert_eq!(has_control(&text), c.is_control(), "U+{:04X}", c as u32);
        }
    }

    proptest! {
        #[test]
        fn small_integers_read_as_the_general_parser_reads_them(
            n in -999_999_999_999_999i64..=999_999_999_999_999,
            plus in any::<bool>(),
        ) {
            let text = if plus && n >= 0 { format!("+{n}") } else { n.to_string() };
            let general: f64 = text.parse().expect("integer text");
            prop_assert_eq!(parse_small_integer(&text), Some(general + 0.0));
        }
    }

    #[test]
    fn longer_or_other_texts_leave_the_fast_path() {
        for text in ["", "-", "+", "1.5", "1e3", "1234567890123456", "0x1", " 1"] {
            assert_eq!(parse_small_integer(text), None, "{text}");
        }
        assert_eq!(
            parse_small_integer("-0").map(f64::to_bits),
            Some(0f64.to_bits())
        );
    }
}
