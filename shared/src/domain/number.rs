//! Numbers as a person writes them: `21`, not `21.0`; `0.3`, not `0.30000000000000004`.
//! Used wherever a number becomes text or JSON: calculator results and the references
//! between steps.

/// Number of significant digits kept by [`format_number`] and
/// [`to_json_number`] for values that are not exact integers.
pub const SIGNIFICANT_DIGITS: usize = 12;

/// 2^53: integers strictly below this magnitude are exactly representable and
/// are rendered digit for digit.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Renders a number the way a person writes it.
///
/// * Integers below 2^53 in magnitude are printed exactly, without a decimal
///   point: `21`, `-1125899906842624`.
/// * Other values are rounded to [`SIGNIFICANT_DIGITS`] significant digits,
///   which removes floating-point noise (`0.1 + 0.2` is `0.3`, `1/3` is
///   `0.333333333333`), and trailing zeros are dropped.
/// * Those rounded values use plain notation from 10^-6 up to 10^12; outside
///   that range (where plain notation would show made-up zeros) they use
///   scientific notation: `1e21`, `1.5e-7`, `1.15292150461e18` (2^60).
/// * Zero is always `0`, never `-0`. Non-finite values (which the calculator
///   never returns) are `NaN`, `inf` and `-inf`.
pub fn format_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    if is_exact_integer(v) {
        return format!("{v}");
    }
    let r = denoise(v);
    if (1e-6..1e12).contains(&r.abs()) {
        format!("{r}")
    } else {
        format!("{r:e}")
    }
}

/// The same number as JSON.
///
/// An integral value below 2^53 in magnitude becomes a JSON integer (`21`,
/// never `21.0` or `-0`). Anything else is first rounded like
/// [`format_number`] does; if that leaves an integer (noise such as
/// `3.0000000000000004`) it is a JSON integer too, otherwise a JSON float.
/// Non-finite values (which the calculator never returns) have no JSON
/// representation and become `null`.
pub fn to_json_number(v: f64) -> serde_json::Value {
    if !v.is_finite() {
        return serde_json::Value::Null;
    }
    if is_exact_integer(v) {
        // Exact: |v| < 2^53 and v has no fractional part (`-0.0` becomes `0`).
        return serde_json::Value::from(v as i64);
    }
    let r = denoise(v);
    if v.abs() < EXACT_INTEGER_LIMIT && r.fract() == 0.0 {
        return serde_json::Value::from(r as i64);
    }
    serde_json::Number::from_f64(r).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Whether `v` is an integer small enough to be printed digit for digit.
fn is_exact_integer(v: f64) -> bool {
    v.fract() == 0.0 && v.abs() < EXACT_INTEGER_LIMIT
}

/// Rounds `v` to [`SIGNIFICANT_DIGITS`] significant digits, removing
/// floating-point noise. Falls back to `v` if rounding up would overflow.
fn denoise(v: f64) -> f64 {
    // `{:.N e}` rounds the exact binary value correctly to N+1 significant digits.
    format!("{:.*e}", SIGNIFICANT_DIGITS - 1, v)
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite())
        .unwrap_or(v)
}
