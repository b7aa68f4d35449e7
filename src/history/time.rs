//! Times and durations as queries spell them: RFC 3339 (`2026-12-04T18:00:00Z`, with an
//! offset or fraction), Unix seconds (`1796412000`), relative to now (`-6h`, `-90s`, `now`),
//! and durations (`30s`, `5m`, `1h30m`, `7d`, `1w`, `250ms`). Times are Unix seconds.

/// Reads a duration into milliseconds.
///
/// # Errors
/// A message for an empty, unknown or zero duration.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || format!("bad duration {text:?}: use e.g. 30s, 5m, 1h30m, 7d, 1w");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: f64 = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let ms = number * unit_ms;
        if !ms.is_finite() || ms >= 1e15 {
            return Err(bad());
        }
        total = total.saturating_add(ms.round() as u64);
    }
    if total == 0 {
        return Err(format!("duration {text:?} must be more than zero"));
    }
    Ok(total)
}

/// Reads a time into Unix seconds; `now` is the current Unix time in seconds.
///
/// # Errors
/// A message naming the accepted spellings.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix('-').filter(|r| !r.is_empty())
        && !ago.bytes().all(|b| b.is_ascii_digit())
    {
        let ms = parse_duration_ms(ago)?;
        return Ok(now - (ms / 1000) as i64);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .map_err(|_| format!("bad time {text:?}"));
    }
    parse_rfc3339(text).ok_or_else(|| {
        format!(
            "bad time {text:?}: use RFC 3339 (2026-12-04T18:00:00Z), Unix seconds, now, or a \
             time relative to now (-6h, -30m, -7d)"
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, also with a space or `t` for `T`.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        at += digits;
    }
    let offset = match text.get(at..)? {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && zone.as_bytes()[3] == b':' => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = zone.get(1..3)?.parse().ok()?;
            let m: i64 = zone.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds as RFC 3339 in UTC: `2026-12-04T18:00:00Z`.
pub fn format_rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_combine() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1.5m"), Ok(90_000));
        for bad in ["", "5", "m", "5x", "0s", "-5s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_unix_seconds_or_relative() {
        let now = 1_800_000_000;
        assert_eq!(parse_time("1796412000", now), Ok(1_796_412_000));
        assert_eq!(parse_time("-6h", now), Ok(now - 21_600));
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("1970-01-01T00:00:00Z", now), Ok(0));
        assert_eq!(parse_time("2026-12-04T18:00:00Z", now), Ok(1_796_407_200));
        assert_eq!(
            parse_time("2026-12-04T20:00:00.250+02:00", now),
            Ok(1_796_407_200)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-04T18:00:00",
            "-",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting_inverts_parsing() {
        for t in [0, 951_782_400, 1_796_407_200, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(1_796_407_200), "2026-12-04T18:00:00Z");
    }
}
