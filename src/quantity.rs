//! Canonical Kubernetes `DecimalSI` Quantity strings from Prometheus float samples.
//!
//! The canonical form is apimachinery's: an integer mantissa with no fractional digits, the
//! largest exponent that is a multiple of three and loses nothing, and the suffix for that
//! exponent (`n u m "" k M G T P E`); zero is `0`. So 1.5 is `1500m`, 1000 is `1k`, 1500 is
//! `1500`.
//!
//! Policy, in the order it is applied:
//!
//! 1. **NaN and ±Inf have no Quantity**: [`from_f64`] returns `None` and the caller treats the
//!    sample as missing.
//! 2. **Float noise is removed** by rounding to 15 significant decimal digits (an f64 carries
//!    15.95), so `0.1 + 0.2` is `300m` and not `300000001n`, which the HPA would read as
//!    0.301. After this single rounding (done by Rust's exact float formatting) all work is
//!    integer arithmetic on an `i128` mantissa and an `i32` exponent.
//! 3. **Precision floor**: the value is rounded away from zero to a whole number of nano
//!    units, as `ParseQuantity` does, so a non-zero sample never becomes `0` (`1e-12` is
//!    `1n`).
//! 4. **Range**: the HPA reads `MilliValue()` into an int64, which overflows above about
//!    9.22e15. Magnitudes above [`MAX_MAGNITUDE`] (`i64::MAX / 1000`) are clamped to it and
//!    the result says so ([`Quantity::is_clamped`]) so the caller can log and count it.
//!
//! `-0.0` is `0`. The `E` suffix is never produced, because of the clamp.

use std::fmt;

/// The largest magnitude whose `MilliValue()` still fits an int64: `i64::MAX / 1000`.
pub const MAX_MAGNITUDE: i64 = i64::MAX / 1000;

/// A canonical `DecimalSI` Quantity string, and whether the value had to be clamped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    text: String,
    clamped: bool,
}

impl Quantity {
    /// The canonical string, e.g. `1500m`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the sample was beyond [`MAX_MAGNITUDE`] and was clamped to it.
    pub fn is_clamped(&self) -> bool {
        self.clamped
    }

    /// The canonical string, without copying.
    pub fn into_string(self) -> String {
        self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The Quantity for a Prometheus sample value, or `None` for NaN and ±Inf (see the module
/// docs for the rounding, floor and clamping policy).
pub fn from_f64(v: f64) -> Option<Quantity> {
    if !v.is_finite() {
        return None;
    }
    if v == 0.0 {
        // Also -0.0: Kubernetes has no negative zero.
        return Some(Quantity {
            text: "0".to_string(),
            clamped: false,
        });
    }
    let (negative, mantissa, exponent) = round_to_15_digits(v)?;
    let (mantissa, exponent) = floor_to_nano(mantissa, exponent);
    let (mantissa, exponent, clamped) = clamp(mantissa, exponent);
    Some(Quantity {
        text: canonical(negative, mantissa, exponent),
        clamped,
    })
}

/// `|v|` as `mantissa * 10^exponent` with a 15-digit mantissa, plus the sign.
///
/// Rust formats `{:.14e}` from the exact binary value with correct rounding, so this is the
/// one and only rounding of the float. `None` only if the formatter's output were not
/// `[-]d.dddddddddddddde[-]x`, which it always is for finite values.
fn round_to_15_digits(v: f64) -> Option<(bool, i128, i32)> {
    use std::io::Write as _;
    // `-d.ddddddddddddddde-308` is 23 bytes: formatted on the stack, as this runs once per
    // value of every answer.
    let mut buf = [0u8; 32];
    let len = {
        let mut out = &mut buf[..];
        write!(out, "{v:.14e}").ok()?;
        32 - out.len()
    };
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    let (digits, exp) = text.split_once('e')?;
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, digits),
    };
    let (int, frac) = digits.split_once('.')?;
    if int.len() != 1 || frac.len() != 14 {
        return None;
    }
    let mut mantissa: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        mantissa = mantissa * 10 + i128::from(b - b'0');
    }
    let exponent: i32 = exp.parse().ok()?;
    Some((negative, mantissa, exponent - 14))
}

/// Rounds `mantissa * 10^exponent` (non-negative) away from zero to whole nano units.
fn floor_to_nano(mantissa: i128, exponent: i32) -> (i128, i32) {
    if exponent >= -9 || mantissa == 0 {
        return (mantissa, exponent);
    }
    let shift = -9 - exponent;
    // The mantissa has at most 15 digits: a shift of 16 or more leaves less than one nano.
    if shift > 15 {
        return (1, -9);
    }
    let scale = 10i128.pow(shift.unsigned_abs());
    let (q, r) = (mantissa / scale, mantissa % scale);
    (if r == 0 { q } else { q + 1 }, -9)
}

/// Clamps `mantissa * 10^exponent` (non-negative, exponent >= -9) to [`MAX_MAGNITUDE`].
fn clamp(mantissa: i128, exponent: i32) -> (i128, i32, bool) {
    let limit = i128::from(MAX_MAGNITUDE);
    let over = if exponent >= 0 {
        // 17 or more digits is at least 1e16, above the limit; below that i128 is exact.
        digit_count(mantissa) + exponent.unsigned_abs() > 16
            || mantissa * 10i128.pow(exponent.unsigned_abs()) > limit
    } else {
        mantissa > limit * 10i128.pow(exponent.unsigned_abs())
    };
    if over {
        (limit, 0, true)
    } else {
        (mantissa, exponent, false)
    }
}

fn digit_count(mut n: i128) -> u32 {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

/// apimachinery's `AsCanonicalBytes` for DecimalSI: strip trailing zeros, lower the exponent
/// to a multiple of three, then add the suffix.
fn canonical(negative: bool, mut mantissa: i128, mut exponent: i32) -> String {
    if mantissa == 0 {
        return "0".to_string();
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    while exponent.rem_euclid(3) != 0 {
        mantissa *= 10;
        exponent -= 1;
    }
    let sign = if negative { "-" } else { "" };
    match SUFFIXES.iter().find(|(e, _)| *e == exponent) {
        Some((_, suffix)) => format!("{sign}{mantissa}{suffix}"),
        // Unreachable after the nano floor and the clamp; spell it out rather than lie.
        None => format!("{sign}{mantissa}e{exponent}"),
    }
}

/// DecimalSI suffixes by base-10 exponent.
const SUFFIXES: [(i32, &str); 10] = [
    (-9, "n"),
    (-6, "u"),
    (-3, "m"),
    (0, ""),
    (3, "k"),
    (6, "M"),
    (9, "G"),
    (12, "T"),
    (15, "P"),
    (18, "E"),
];

/// The exponent a DecimalSI suffix stands for.
fn suffix_exponent(suffix: &str) -> Option<i32> {
    SUFFIXES.iter().find(|(_, s)| *s == suffix).map(|(e, _)| *e)
}

/// The exact sum of DecimalSI strings of the form [`from_f64`] emits, in canonical form (a
/// `kubectl get podmetrics` row sums its containers, as `Quantity.Add` does). `None` if one is
/// not of that form or the sum overflows.
pub fn sum<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut nanos: i128 = 0;
    for value in values {
        let (negative, rest) = match value.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, value),
        };
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, suffix) = rest.split_at(digits_end);
        if digits.is_empty() || digits.len() > 24 {
            return None;
        }
        let scale = 10i128.checked_pow((suffix_exponent(suffix)? + 9).unsigned_abs())?;
        let magnitude = digits.parse::<i128>().ok()?.checked_mul(scale)?;
        nanos = nanos.checked_add(if negative { -magnitude } else { magnitude })?;
    }
    Some(canonical(nanos < 0, nanos.abs(), -9))
}

/// Parses a DecimalSI string (`[-]digits[suffix]`, the form [`from_f64`] emits) and returns
/// its value in milli-units rounded away from zero, as apimachinery's `MilliValue()` does.
/// For tests and diagnostics; `None` for anything else (fractions, binary suffixes, overflow).
pub fn parse_milli(s: &str) -> Option<i128> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, suffix) = rest.split_at(digits_end);
    if digits.is_empty() || digits.len() > 30 {
        return None;
    }
    let exponent = suffix_exponent(suffix)?;
    let mantissa: i128 = digits.parse().ok()?;
    let shift = exponent + 3;
    let magnitude = if shift >= 0 {
        mantissa.checked_mul(10i128.checked_pow(shift.unsigned_abs())?)?
    } else {
        let scale = 10i128.pow(shift.unsigned_abs());
        let (q, r) = (mantissa / scale, mantissa % scale);
        if r == 0 {
            q
        } else {
            q + 1
        }
    };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(v: f64) -> String {
        from_f64(v)
            .map(|q| q.to_string())
            .unwrap_or_else(|| "None".into())
    }

    #[test]
    fn required_outputs() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1500m"),
            (1000.0, "1k"),
            (1500.0, "1500"),
            (12345000.0, "12345k"),
            (0.0001, "100u"),
            (-2.5, "-2500m"),
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (2000.0, "2k"),
            (2.5e6, "2500k"),
            (3e9, "3G"),
            (12345678.0, "12345678"),
            (0.001, "1m"),
            (1e-9, "1n"),
            (0.5, "500m"),
            (100.0, "100"),
            (123.456, "123456m"),
            (1e15, "1P"),
            (-0.25, "-250m"),
        ];
        for (v, want) in cases {
            assert_eq!(q(*v), *want, "{v}");
        }
    }

    #[test]
    fn sums_are_exact_and_canonical() {
        assert_eq!(sum(["1234567n", "1234567n"]).as_deref(), Some("2469134n"));
        assert_eq!(sum(["1500m", "500m"]).as_deref(), Some("2"));
        assert_eq!(sum(["1k", "1"]).as_deref(), Some("1001"));
        assert_eq!(sum(["12345678", "2"]).as_deref(), Some("12345680"));
        assert_eq!(sum(["-250m", "250m"]).as_deref(), Some("0"));
        assert_eq!(sum([]).as_deref(), Some("0"));
        assert_eq!(sum(["1.5"]), None);
        assert_eq!(sum(["1Ki"]), None);
    }

    #[test]
    fn float_noise_is_removed() {
        assert_eq!(q(0.1 + 0.2), "300m");
        assert_eq!(q(1.1 * 3.0), "3300m");
        assert_eq!(q(0.7 + 0.1), "800m");
        assert_eq!(q(-(0.1 + 0.2)), "-300m");
        // Fifteen significant digits survive.
        assert_eq!(q(123456.789012345), "123456789012345n");
    }

    #[test]
    fn nothing_nonzero_becomes_zero() {
        assert_eq!(q(1e-12), "1n");
        assert_eq!(q(-1e-12), "-1n");
        assert_eq!(q(f64::MIN_POSITIVE), "1n");
        assert_eq!(q(5e-324), "1n");
        assert_eq!(q(1.0000000001), "1000000001n");
        assert_eq!(q(1.5e-9), "2n");
        assert_eq!(q(-1.5e-9), "-2n");
        assert_eq!(q(2e-9), "2n");
    }

    #[test]
    fn huge_values_are_clamped_and_reported() {
        let big = from_f64(1e16).expect("finite");
        assert_eq!(big.as_str(), "9223372036854775");
        assert!(big.is_clamped());
        let neg = from_f64(-1e300).expect("finite");
        assert_eq!(neg.as_str(), "-9223372036854775");
        assert!(neg.is_clamped());
        assert!(from_f64(f64::MAX).expect("finite").is_clamped());
        // At and below the limit nothing is clamped.
        // 9223372036854775 itself rounds (15 digits) to 9223372036854780: clamped.
        assert!(from_f64(9223372036854775.0).expect("finite").is_clamped());
        let edge = from_f64(9.22337203685477e15).expect("finite");
        assert_eq!(edge.as_str(), "9223372036854770");
        assert!(!edge.is_clamped());
        let below = from_f64(9.2e15).expect("finite");
        assert_eq!(below.as_str(), "9200T");
        assert!(!below.is_clamped());
        assert!(!from_f64(1.5).expect("finite").is_clamped());
        // The clamped value still fits the HPA's int64 milli-units.
        assert!(parse_milli(big.as_str()).is_some_and(|m| m <= i128::from(i64::MAX)));
    }

    #[test]
    fn edge_15_digit_rounding_at_the_limit() {
        // 9223372036854775.807 rounds to 9.22337203685478e15, which is above the limit.
        let v = from_f64(9_223_372_036_854_775.807).expect("finite");
        assert!(v.is_clamped());
        assert_eq!(v.as_str(), "9223372036854775");
    }

    #[test]
    fn nan_and_infinities_have_no_quantity() {
        assert!(from_f64(f64::NAN).is_none());
        assert!(from_f64(f64::INFINITY).is_none());
        assert!(from_f64(f64::NEG_INFINITY).is_none());
    }

    #[test]
    fn parse_milli_rounds_away_from_zero() {
        assert_eq!(parse_milli("1500m"), Some(1500));
        assert_eq!(parse_milli("1k"), Some(1_000_000));
        assert_eq!(parse_milli("100u"), Some(1));
        assert_eq!(parse_milli("-100u"), Some(-1));
        assert_eq!(parse_milli("1n"), Some(1));
        assert_eq!(parse_milli("0"), Some(0));
        assert_eq!(parse_milli("12345678"), Some(12_345_678_000));
        assert_eq!(parse_milli("1.5"), None);
        assert_eq!(parse_milli("1Ki"), None);
        assert_eq!(parse_milli(""), None);
        assert_eq!(parse_milli("-"), None);
        assert_eq!(parse_milli("k"), None);
    }

    #[test]
    fn display_and_accessors_agree() {
        let v = from_f64(2.5).expect("finite");
        assert_eq!(v.to_string(), v.as_str());
        assert_eq!(v.clone().into_string(), "2500m");
    }

    /// `s` as (negative, mantissa, suffix exponent), for the proptest's checks.
    fn split(s: &str) -> Option<(bool, i128, i32)> {
        let (neg, rest) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let exp = suffix_exponent(&rest[end..])?;
        Some((neg, rest[..end].parse().ok()?, exp))
    }

    fn sample() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e15..1e15f64,
            -1e3..1e3f64,
            -1e-6..1e-6f64,
            (-1_000_000_000i64..1_000_000_000).prop_map(|n| n as f64 / 1000.0),
            (-1_000_000_000_000_000i64..=1_000_000_000_000_000).prop_map(|n| n as f64),
            (1u32..1000, -12i32..13).prop_map(|(m, e)| f64::from(m) * 10f64.powi(e)),
        ]
    }

    proptest! {
        #[test]
        fn canonical_and_close(v in sample()) {
            let canon = regex::Regex::new(r"^-?(0|[1-9][0-9]*)(n|u|m|k|M|G|T|P|E)?$")
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let quantity = from_f64(v).ok_or_else(|| TestCaseError::fail("finite gave None"))?;
            let s = quantity.as_str();
            prop_assert!(canon.is_match(s), "{} -> {}", v, s);
            prop_assert!(!quantity.is_clamped());
            let (neg, mantissa, exp) = split(s).ok_or_else(|| TestCaseError::fail(s.to_string()))?;
            // No zeros left in the mantissa that a bigger suffix could have absorbed.
            prop_assert!(mantissa == 0 || mantissa % 1000 != 0 || exp == 18, "{} -> {}", v, s);
            prop_assert!(s != "-0");
            prop_assert_eq!(neg, v < 0.0 && mantissa != 0, "sign of {} -> {}", v, s);
            // Within 1e-9 relative, or 1n absolute, of the input rounded to 15 digits.
            let rounded: f64 = format!("{v:.14e}").parse().map_err(|_| TestCaseError::fail("fmt"))?;
            let back: f64 = format!("{}{mantissa}e{exp}", if neg { "-" } else { "" })
                .parse()
                .map_err(|_| TestCaseError::fail("reparse"))?;
            let err = (back - rounded).abs();
            prop_assert!(err <= (rounded.abs() * 1e-9).max(1e-9), "{} -> {} ({} vs {})", v, s, back, rounded);
            if v != 0.0 {
                prop_assert!(mantissa != 0, "{} became 0", v);
            }
            // MilliValue, as the HPA computes it, is available and has the right sign.
            let milli = parse_milli(s).ok_or_else(|| TestCaseError::fail(s.to_string()))?;
            prop_assert_eq!(milli < 0, neg);
        }

        #[test]
        fn any_finite_value_is_canonical(v in any::<f64>()) {
            match from_f64(v) {
                None => prop_assert!(!v.is_finite()),
                Some(q) => {
                    let (_, mantissa, exp) = split(q.as_str()).ok_or_else(|| TestCaseError::fail(q.to_string()))?;
                    prop_assert!((-9..=15).contains(&exp), "{}", q);
                    prop_assert!(mantissa <= i128::from(MAX_MAGNITUDE) * 1_000_000_000);
                    prop_assert!(parse_milli(q.as_str()).is_some_and(|m| m.abs() <= i128::from(i64::MAX)));
                }
            }
        }
    }
}
