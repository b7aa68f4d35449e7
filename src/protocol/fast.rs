//! The fast path for the common metric line: a plain ASCII `name:value|type` (not a set),
//! maybe followed by `|@rate`, `|#tags` and ignored fields. One pass over the name with a
//! byte table stands in for the general path's UTF-8 check and its separate scans for
//! `:`, tag separators, `|` and control characters. Every other line (tags in the name,
//! several values, sets, non-ASCII names, events) is left to the general path by returning
//! `None`, and where the fast path answers, it answers as the general path would (a
//! property test holds the two together).

use super::error::ParseError;
use super::line::{LastSample, MAX_NAME_BYTES, parse_trailer, sample_rate, sample_value};
use super::types::{MetricKind, MetricLine, Sample};

/// Bytes a plain name may hold: printable ASCII without the separators `:` `|` `;` `,`.
const NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = !matches!(b as u8, b':' | b'|' | b';' | b',');
        b += 1;
    }
    table
};

/// Bytes a plain number may hold.
const NUMBER: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E');
        b += 1;
    }
    table
};

/// Parses `line` into `out` when it has the common shape; `None` leaves it to the general
/// path. `out` is empty on entry.
pub(super) fn metric<'a>(
    line: &'a [u8],
    out: &mut MetricLine<'a>,
) -> Option<Result<(), ParseError>> {
    let head = head(line)?;
    let after_type = &line[head.end..];
    if after_type.is_empty() {
        return Some(head.plain(line, out));
    }
    if after_type[0] != b'|' {
        return None;
    }
    // The rest may be any UTF-8; a line that is not UTF-8 at all is the general path's to
    // reject first.
    let trailer = std::str::from_utf8(after_type).ok()?;
    let text = head.text(line);
    let (rate, trailer) = match sample_rate(trailer) {
        Ok((_, next)) if next.starts_with(':') => return None,
        Ok(found) => found,
        Err(err) => return Some(sample_value(text, head.kind).and(Err(err))),
    };
    let value = match sample_value(text, head.kind) {
        Ok(value) => value,
        Err(err) => return Some(Err(err)),
    };
    out.name = head.name(line);
    out.samples
        .push(sample(head.kind, value, text, rate.unwrap_or(1.0)));
    let last = LastSample {
        start: 0,
        has_rate: rate.is_some(),
    };
    Some(parse_trailer(trailer, last, false, out))
}

/// Parses the first line of `buf` into `out` when it is the commonest kind of line, a plain
/// `name:value|type` that ends at a `\n` or at the end of `buf`: the line's length (without
/// the `\n`) and the outcome, found in one pass. `None` leaves the line to be split off and
/// parsed as a whole. `out` is empty on entry.
#[inline(always)]
pub(super) fn plain_line<'a>(
    buf: &'a [u8],
    out: &mut MetricLine<'a>,
) -> Option<(usize, Result<(), ParseError>)> {
    let head = head(buf)?;
    match buf.get(head.end) {
        None | Some(b'\n') => Some((head.end, head.plain(buf, out))),
        Some(_) => None,
    }
}

/// Where the parts of a line's common head, `name:value|type`, are.
struct Head {
    /// The `:` after the name.
    colon: usize,
    /// The `|` after the value.
    bar: usize,
    kind: MetricKind,
    /// Just past the type.
    end: usize,
}

/// Finds the common head at the start of `line` (which may go on past the line's end).
#[inline(always)]
fn head(line: &[u8]) -> Option<Head> {
    if line.starts_with(b"_e{") {
        // An event, whatever else the line holds: the general path reads or rejects it.
        return None;
    }
    let colon = name_end(line)?;
    if line[colon] != b':' || colon == 0 || colon > MAX_NAME_BYTES {
        return None;
    }
    let value = colon + 1;
    let bar = value
        + line[value..]
            .iter()
            .position(|&b| !NUMBER[usize::from(b)])?;
    if line[bar] != b'|' {
        return None;
    }
    let (kind, type_len) = match &line[bar + 1..] {
        [b'm', b's', ..] => (MetricKind::Timer, 2),
        [b'c' | b'm', ..] => (MetricKind::Counter, 1),
        [b'g', ..] => (MetricKind::Gauge, 1),
        [b'h', ..] => (MetricKind::Histogram, 1),
        [b'd', ..] => (MetricKind::Distribution, 1),
        _ => return None,
    };
    Some(Head {
        colon,
        bar,
        kind,
        end: bar + 1 + type_len,
    })
}

impl Head {
    fn name<'a>(&self, line: &'a [u8]) -> &'a str {
        ascii(&line[..self.colon])
    }

    fn text<'a>(&self, line: &'a [u8]) -> &'a str {
        ascii(&line[self.colon + 1..self.bar])
    }

    /// Reads a line that ends at its type: no rate, no tags, nothing more.
    #[inline(always)]
    fn plain<'a>(&self, line: &'a [u8], out: &mut MetricLine<'a>) -> Result<(), ParseError> {
        let text = self.text(line);
        let value = match unsigned_integer(text.as_bytes()) {
            Some(value) => value,
            None => sample_value(text, self.kind)?,
        };
        out.name = self.name(line);
        out.samples.push(sample(self.kind, value, text, 1.0));
        Ok(())
    }
}

/// The commonest value, 1 to 15 digits, read inline: such an integer is exact in an `f64`,
/// so this gives what the general number parser gives. None for any other text.
#[inline(always)]
fn unsigned_integer(text: &[u8]) -> Option<f64> {
    if text.is_empty() || text.len() > 15 {
        return None;
    }
    let mut n = 0u64;
    for &b in text {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n = n * 10 + u64::from(digit);
    }
    Some(n as f64)
}

/// The sample of value text `text`, read as `value`.
fn sample(kind: MetricKind, value: f64, text: &str, rate: f64) -> Sample<'_> {
    Sample {
        kind,
        value,
        signed: matches!(text.as_bytes().first(), Some(b'+' | b'-')),
        text,
        rate,
    }
}

/// The position of the first byte of `line` that a plain name may not hold (see [`NAME`]),
/// or None when every byte may. Eight bytes at a time: names are long and of varied length,
/// so a byte-at-a-time loop spends much of a line on its loop exit.
fn name_end(line: &[u8]) -> Option<usize> {
    let mut chunks = line.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let stops = not_name_bytes(word);
        if stops != 0 {
            return Some(at + stops.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| !NAME[usize::from(b)])
        .map(|i| at + i)
}

/// The high bit of each byte of `word` that is not a plain name byte is set, exactly for the
/// lowest such byte (higher ones may be flagged falsely by a borrow, which the caller never
/// looks at): below 0x20, 0x7f and above, `:`, `|`, `;` or `,`.
fn not_name_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let high_or_del = (word | word.wrapping_add(ONES)) & HIGH;
    let separator = zero_byte(word ^ (ONES * u64::from(b':')))
        | zero_byte(word ^ (ONES * u64::from(b'|')))
        | zero_byte(word ^ (ONES * u64::from(b';')))
        | zero_byte(word ^ (ONES * u64::from(b',')));
    control | high_or_del | separator
}

/// Views bytes the tables above accepted (all ASCII) as text.
fn ascii(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: every byte passed the NAME or NUMBER table, which admit ASCII only, and ASCII
    // is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::line::{NextLine, lines, next_line, parse_general, parse_line};
    use crate::protocol::types::Parsed;

    /// What a parse gave, comparable across the two paths.
    fn outcome(result: Result<(), ParseError>, out: &MetricLine<'_>) -> Result<String, ParseError> {
        result.map(|()| format!("{} {:?} {:?}", out.name, out.tags, out.samples))
    }

    #[test]
    fn name_end_finds_the_first_byte_the_table_refuses() {
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut line = vec![b'a'; 20];
                line[at] = b;
                let expected = line.iter().position(|&c| !NAME[usize::from(c)]);
                assert_eq!(name_end(&line), expected, "byte {b:#x} at {at}");
                // A second stop byte after the first must not change the answer.
                line[19] = b':';
                let expected = line.iter().position(|&c| !NAME[usize::from(c)]);
                assert_eq!(name_end(&line), expected, "byte {b:#x} at {at}, then ':'");
            }
        }
        assert_eq!(name_end(b"abcdefghijk"), None);
        assert_eq!(name_end(b""), None);
    }

    fn both(line: &str) -> Option<(Result<String, ParseError>, Result<String, ParseError>)> {
        let mut fast_out = MetricLine::default();
        let fast = metric(line.as_bytes(), &mut fast_out)?;
        let fast = outcome(fast, &fast_out);
        let mut general_out = MetricLine::default();
        let general = parse_general(line.as_bytes(), &mut general_out);
        let general = match general {
            Ok(Parsed::Metric) => outcome(Ok(()), &general_out),
            Ok(other) => panic!("{line:?} parsed as {other:?}"),
            Err(err) => Err(err),
        };
        Some((fast, general))
    }

    #[test]
    fn the_fast_path_takes_the_common_shapes() {
        for line in [
            "api.hits:1|c",
            "api.hits:-2.5|c|@0.5",
            "lat:12.25|ms|#env:prod,zone:a",
            "depth:+3|g|T1700000000",
            "x:1|h|@0.25|#a:b",
        ] {
            let (fast, general) = both(line).expect("fast path");
            assert_eq!(fast, general, "{line}");
            assert!(fast.is_ok(), "{line}");
        }
    }

    #[test]
    fn the_fast_path_leaves_other_shapes_to_the_general_path() {
        for line in [
            "users:alice|s",
            "a;env=prod:1|c",
            "a,env=prod:1|c",
            "a:1:2|c",
            "a:1|c|@0.5:2|c",
            "é:1|c",
            "_e{1,1}:a|b",
            "_e{x:1|c",
            "_e{:x|c",
            "_sc|a|0",
            ":1|c",
            "a:1|x",
            "a:1|cc",
        ] {
            assert!(both(line).is_none(), "{line}");
        }
    }

    #[test]
    fn errors_match_the_general_path() {
        for line in [
            "a:1.2.3|c",
            "a:-1|ms",
            "a:1|c|@2",
            "a:x1|c|@2",
            "a:1|c|#env:prod|#zone:a",
            "a:1|c||",
            "a:1|c|zzz",
            "a:|c",
            "a:1|c|@0.5|@0.5",
        ] {
            if let Some((fast, general)) = both(line) {
                assert_eq!(fast, general, "{line}");
            }
        }
    }

    /// Each line's length and outcome, as the router gets them from [`next_line`].
    fn by_next_line(buf: &[u8]) -> Vec<(usize, Result<String, ParseError>)> {
        let mut rest = buf;
        let mut out = MetricLine::default();
        let mut seen = Vec::new();
        while let Some(next) = next_line(&mut rest, &mut out) {
            let (len, result) = match next {
                NextLine::Parsed(len, result) => (len, result.map(|()| Parsed::Metric)),
                NextLine::Line(line) => (line.len(), parse_line(line, &mut out)),
            };
            let result = result.and_then(|parsed| match parsed {
                Parsed::Metric => outcome(Ok(()), &out),
                other => Ok(format!("{other:?}")),
            });
            seen.push((len, result));
        }
        seen
    }

    /// The same, from [`lines`] and then [`parse_line`] on each.
    fn by_lines(buf: &[u8]) -> Vec<(usize, Result<String, ParseError>)> {
        let mut out = MetricLine::default();
        lines(buf)
            .map(|line| {
                let result = parse_line(line, &mut out).and_then(|parsed| match parsed {
                    Parsed::Metric => outcome(Ok(()), &out),
                    other => Ok(format!("{other:?}")),
                });
                (line.len(), result)
            })
            .collect()
    }

    #[test]
    fn next_line_splits_and_parses_as_lines_and_parse_line_do() {
        let buf = b"a:1|c\nb:2|g\r\n\n\nc:3|ms|@0.5\nd:x|c\n_e{1,1}:t|x\ne:1|c\r\nf:12|h";
        let seen = by_next_line(buf);
        assert_eq!(seen, by_lines(buf));
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[0].0, 5);
        assert_eq!(seen[3].1, Err(ParseError::InvalidValue));
    }

    #[test]
    fn unsigned_integers_read_as_the_general_parser_reads_them() {
        for text in ["0", "7", "0001", "123456789012345"] {
            let general = crate::protocol::line::sample_value(text, MetricKind::Counter);
            assert_eq!(
                unsigned_integer(text.as_bytes()).ok_or(ParseError::Malformed),
                general
            );
        }
        for text in ["", "1234567890123456", "1.5", "-1", "+1", "1e3", "1x"] {
            assert_eq!(unsigned_integer(text.as_bytes()), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn next_line_agrees_with_lines_then_parse_line(
            parts in proptest::collection::vec(
                ("[a-z.é_]{0,5}(:[0-9.+-]{0,4}\\|(c|g|ms|h|s|x)(\\|@0.5|\\|#a:b)?)?",
                 "(\n|\r\n|\n\n|\r)"),
                0..8,
            ),
        ) {
            let buf: String = parts.iter().map(|(line, end)| format!("{line}{end}")).collect();
            let trimmed = buf.trim_end_matches(['\n', '\r']);
            for buf in [buf.as_bytes(), trimmed.as_bytes()] {
                prop_assert_eq!(by_next_line(buf), by_lines(buf));
            }
        }

        /// Raw bytes around plain lines: invalid UTF-8 in names and values, control bytes,
        /// and names of up to 300 bytes.
        #[test]
        fn next_line_agrees_on_raw_bytes_and_long_names(
            parts in proptest::collection::vec(
                (
                    0usize..300,
                    proptest::collection::vec(any::<u8>(), 0..6),
                    "(c|g|ms|s)",
                    proptest::collection::vec(any::<u8>(), 0..3),
                ),
                0..6,
            ),
        ) {
            let mut buf = Vec::new();
            for (name_len, noise, kind, value_noise) in &parts {
                buf.extend(std::iter::repeat_n(b'n', *name_len));
                buf.extend_from_slice(noise);
                buf.extend_from_slice(b":1");
                buf.extend_from_slice(value_noise);
                buf.push(b'|');
                buf.extend_from_slice(kind.as_bytes());
                buf.push(b'\n');
            }
            prop_assert_eq!(by_next_line(&buf), by_lines(&buf));
        }

        #[test]
        fn unsigned_integers_agree_with_the_general_parser(text in "[0-9]{1,17}") {
            if let Some(fast) = unsigned_integer(text.as_bytes()) {
                let general = crate::protocol::line::sample_value(&text, MetricKind::Counter);
                prop_assert_eq!(Ok(fast), general);
            }
        }

        #[test]
        fn the_fast_path_answers_as_the_general_path_does(
            line in "(_e\\{|_sc)?[a-z.é_{]{0,4}[:|@#,;=a-z0-9.eE+-]{0,24}",
        ) {
            if let Some((fast, general)) = both(&line) {
                prop_assert_eq!(fast, general, "{}", line);
            }
        }

        #[test]
        fn common_lines_with_noise_answer_as_the_general_path_does(
            name in "[a-z._]{1,8}",
            value in "[0-9.eE+-]{0,6}",
            kind in "(c|g|ms|h|d|m|s|x)",
            tail in "(\\|[@#a-z:0-9.,]{0,8}){0,3}",
        ) {
            let line = format!("{name}:{value}|{kind}{tail}");
            if let Some((fast, general)) = both(&line) {
                prop_assert_eq!(fast, general, "{}", line);
            }
        }
    }
}
