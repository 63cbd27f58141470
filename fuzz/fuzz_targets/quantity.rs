//! Quantity formatting: `quantity::from_f64` on every f64 bit pattern, and `parse_milli` on
//! any text. Invariants: finite values always give a canonical DecimalSI string (integer
//! mantissa without three trailing zeros unless it has no suffix to move to, no `E`), whose
//! value is the sample's to 15 significant digits (or the clamp bound), with the sign kept.
#![no_main]

use kube_metrics_bridge::quantity::{self, MAX_MAGNITUDE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kube_metrics_bridge_fuzz::let_caught_panics_unwind();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quantity::parse_milli(text);
    }
    let Some(bytes) = data.get(..8) else {
        return;
    };
    let v = f64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    let Some(q) = quantity::from_f64(v) else {
        assert!(!v.is_finite(), "{v:e} gave no quantity");
        return;
    };
    assert!(v.is_finite());
    let s = q.as_str();
    if v == 0.0 {
        assert_eq!(s, "0", "{v:e}");
        return;
    }
    let body = s.strip_prefix('-').unwrap_or(s);
    assert_eq!(s.starts_with('-'), v < 0.0 && s != "0", "{v:e} -> {s}");
    let digits_end = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (digits, suffix) = body.split_at(digits_end);
    assert!(
        ["n", "u", "m", "", "k", "M", "G", "T", "P"].contains(&suffix),
        "{v:e} -> {s}"
    );
    assert!(
        !digits.is_empty() && (digits == "0" || !digits.starts_with('0')),
        "{v:e} -> {s}"
    );
    if suffix != "P" {
        // A mantissa ending in 000 would have been written with the next suffix.
        assert!(!digits.ends_with("000"), "{v:e} -> {s}");
    }
    let milli = quantity::parse_milli(s).unwrap_or_else(|| panic!("{v:e} -> {s} unreadable"));
    let max_milli = i128::from(MAX_MAGNITUDE) * 1000;
    if q.is_clamped() {
        assert_eq!(milli.abs(), max_milli, "{v:e} -> {s}");
        assert!(
            v.abs() > MAX_MAGNITUDE as f64 * (1.0 - 1e-14),
            "{v:e} clamped"
        );
    } else {
        assert!(milli.abs() <= max_milli, "{v:e} -> {s}");
        // Compare in nano units: the string's value is exact there.
        let nano = s_to_nano(digits, suffix);
        let want = v.abs() * 1e9;
        // 15 significant digits, then rounded away from zero to a whole nano.
        let (lo, hi) = (want * (1.0 - 1e-14), want * (1.0 + 1e-14) + 1.0);
        assert!(nano >= 1, "{v:e} -> {s}");
        assert!(
            lo <= nano as f64 && nano as f64 <= hi,
            "{v:e} -> {s} ({lo:e}..{hi:e})"
        );
    }
});

fn s_to_nano(digits: &str, suffix: &str) -> i128 {
    let exp = match suffix {
        "n" => 0,
        "u" => 3,
        "m" => 6,
        "" => 9,
        "k" => 12,
        "M" => 15,
        "G" => 18,
        "T" => 21,
        "P" => 24,
        _ => unreachable!(),
    };
    digits.parse::<i128>().expect("digits") * 10i128.pow(exp)
}
