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

#[cfg(test)]
mod tests {
    use super::*;

    // --- formatting ------------------------------------------------------

    #[test]
    fn given_integral_value_when_formatted_then_no_decimal_point() {
        assert_eq!(format_number(21.0), "21");
        assert_eq!(format_number(-3.0), "-3");
        assert_eq!(format_number(1_125_899_906_842_624.0), "1125899906842624");
    }

    #[test]
    fn given_float_noise_when_formatted_then_it_is_rounded_away() {
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(0.1 * 3.0), "0.3");
        assert_eq!(format_number(1.0 / 3.0), "0.333333333333");
        assert_eq!(format_number(2.0 / 3.0), "0.666666666667");
        assert_eq!(format_number(3.0 * (1.0 / 3.0) - 1e-16), "1");
    }

    #[test]
    fn given_simple_fractions_when_formatted_then_exact() {
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(-0.125), "-0.125");
        assert_eq!(format_number(0.000_001), "0.000001");
    }

    #[test]
    fn given_negative_zero_when_formatted_then_zero() {
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn given_very_large_or_small_values_when_formatted_then_scientific() {
        assert_eq!(format_number(1e21), "1e21");
        assert_eq!(format_number(-2.5e30), "-2.5e30");
        assert_eq!(format_number(1.5e-7), "1.5e-7");
        assert_eq!(format_number(2f64.powi(60)), "1.15292150461e18");
        assert_eq!(format_number(f64::MAX), "1.79769313486e308");
    }

    #[test]
    fn given_non_finite_values_when_formatted_then_symbolic() {
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "inf");
        assert_eq!(format_number(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn given_integral_value_when_converted_to_json_then_integer() {
        assert_eq!(to_json_number(21.0), serde_json::json!(21));
        assert_eq!(to_json_number(21.0).to_string(), "21");
        assert_eq!(to_json_number(-0.0).to_string(), "0");
        assert_eq!(to_json_number(0.1 * 30.0), serde_json::json!(3));
        assert!(to_json_number(-7.0).is_i64());
    }

    #[test]
    fn given_fractional_or_huge_value_when_converted_to_json_then_rounded_float() {
        assert_eq!(to_json_number(0.1 + 0.2).to_string(), "0.3");
        assert_eq!(to_json_number(1.0 / 3.0).to_string(), "0.333333333333");
        assert_eq!(to_json_number(2.5), serde_json::json!(2.5));
        assert!(to_json_number(1e21).is_f64());
        assert!(to_json_number(2f64.powi(53)).is_f64());
        assert!(to_json_number(2f64.powi(53) - 1.0).is_i64());
    }

    #[test]
    fn given_non_finite_value_when_converted_to_json_then_null() {
        assert_eq!(to_json_number(f64::NAN), serde_json::Value::Null);
        assert_eq!(to_json_number(f64::INFINITY), serde_json::Value::Null);
    }
}
