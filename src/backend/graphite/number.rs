//! Numbers as JavaScript's `Number.prototype.toString` writes them (what etsy statsd sends
//! Graphite): the shortest digits that round-trip, fixed notation from 1e-6 up to 1e21,
//! exponent notation (`1e+21`, `1.5e-7`) beyond; integers without a fraction, `-0` as `0`.

/// Writes `v` (finite) the way JavaScript prints it.
pub(super) fn write_js(out: &mut Vec<u8>, v: f64, buf: &mut zmij::Buffer) {
    // Integers below 2^53 are the common case (counts, integral timings): no float printing.
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        let mut ints = itoa::Buffer::new();
        out.extend_from_slice(ints.format(v as i64).as_bytes());
        return;
    }
    let text = buf.format_finite(v).as_bytes();
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    // Split the shortest representation into its digits and the decimal exponent `n` such
    // that the value is 0.d1d2... x 10^n (ECMA-262 Number::toString's n).
    let (mantissa, exponent) = match text.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => (&text[..at], parse_exponent(&text[at + 1..])),
        None => (text, 0),
    };
    let mut digits = [0u8; 40];
    let mut k = 0usize;
    // Significant digits seen, stored or not (a long fixed form keeps only what fits:
    // shortest round-trip forms have at most 17 significant digits, the rest are zeros).
    let mut seen = 0i32;
    let mut point = None;
    let mut leading_zeros = 0i32;
    for &b in mantissa {
        if b == b'.' {
            point = Some(seen);
            continue;
        }
        if seen == 0 && b == b'0' {
            // Zeros after the point and before the first digit shift the exponent.
            if point.is_some() {
                leading_zeros += 1;
            }
            continue;
        }
        if k < digits.len() {
            digits[k] = b;
            k += 1;
        }
        seen += 1;
    }
    let n = point.unwrap_or(seen) + exponent - leading_zeros;
    // Trailing zeros are not significant.
    while k > 0 && digits[k - 1] == b'0' {
        k -= 1;
    }
    if k == 0 {
        out.push(b'0');
        return;
    }
    if negative {
        out.push(b'-');
    }
    let digits = &digits[..k];
    let k = k as i32;
    if k <= n && n <= 21 {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        let e = n - 1;
        out.push(if e < 0 { b'-' } else { b'+' });
        let mut ints = itoa::Buffer::new();
        out.extend_from_slice(ints.format(e.unsigned_abs()).as_bytes());
    }
}

fn parse_exponent(text: &[u8]) -> i32 {
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let magnitude = text
        .iter()
        .fold(0i32, |acc, &b| acc * 10 + i32::from(b.wrapping_sub(b'0')));
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(v: f64) -> String {
        let mut out = Vec::new();
        write_js(&mut out, v, &mut zmij::Buffer::new());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_have_no_fraction_and_negative_zero_is_zero() {
        assert_eq!(js(42.0), "42");
        assert_eq!(js(-7.0), "-7");
        assert_eq!(js(-0.0), "0");
        assert_eq!(js(0.0), "0");
    }

    #[test]
    fn fractions_are_the_shortest_round_trip() {
        assert_eq!(js(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(js(4.2), "4.2");
        assert_eq!(js(-1.5), "-1.5");
        assert_eq!(js(8.16496580927726), "8.16496580927726");
        assert_eq!(js(1.0 / 3.0), "0.3333333333333333");
    }

    #[test]
    fn small_numbers_stay_fixed_down_to_a_millionth() {
        assert_eq!(js(0.000001), "0.000001");
        assert_eq!(js(0.0000015), "0.0000015");
        assert_eq!(js(0.00012), "0.00012");
        assert_eq!(js(1e-7), "1e-7");
        assert_eq!(js(-1.5e-7), "-1.5e-7");
        assert_eq!(js(2.5e-300), "2.5e-300");
    }

    #[test]
    fn large_numbers_stay_fixed_below_1e21() {
        assert_eq!(js(9_007_199_254_740_993.0), "9007199254740992");
        assert_eq!(js(1e20), "100000000000000000000");
        assert_eq!(js(1.2345678901234568e20), "123456789012345680000");
        assert_eq!(js(123456.789), "123456.789");
        assert_eq!(js(1e21), "1e+21");
        assert_eq!(js(1.5e300), "1.5e+300");
        assert_eq!(js(-2e22), "-2e+22");
    }
}
