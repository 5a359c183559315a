//! Example stasc reward plugin `math-tolerance`: 1.0 when the answer's number is within a relative tolerance of a
//! gold number, else 0.0. Unlike the built-in `math_acc` (exact, as the reference grades), it accepts rounded
//! answers such as 3.1416 for 3.14159265.
//!
//! The answer's number is the content of its last `\boxed{...}`, else the last number in the text. Numbers may be
//! integers, decimals, `a/b` or `\frac{a}{b}` (also `\dfrac`, `\tfrac`), with thousands commas, `$` signs or a
//! trailing `%` (dropped, not divided by 100). A gold answer that is not a number is an error: the reward does not
//! fit that task.

/// Largest accepted |answer - gold| relative to |gold|.
const RELATIVE_TOLERANCE: f64 = 1e-4;
/// Absolute slack, so a gold answer of 0 accepts answers that differ only by rounding noise.
const ABSOLUTE_TOLERANCE: f64 = 1e-12;

fn score(gold: &[String], answer: &str) -> Result<f64, String> {
    let golds = gold
        .iter()
        .map(|g| parse_number(g).ok_or_else(|| format!("gold answer {g:?} is not a number")))
        .collect::<Result<Vec<f64>, String>>()?;
    let candidate = last_boxed(answer).map(str::to_string).or_else(|| last_number(answer));
    let Some(value) = candidate.as_deref().and_then(parse_number) else {
        return Ok(0.0);
    };
    let close = golds.iter().any(|&g| (value - g).abs() <= (RELATIVE_TOLERANCE * g.abs()).max(ABSOLUTE_TOLERANCE));
    Ok(if close { 1.0 } else { 0.0 })
}

stasc_plugin::export_reward!("math-tolerance", score);

/// The argument of the last `\boxed{...}`, braces balanced.
fn last_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The last number written in the text (sign, digits with thousands commas, decimals, an optional `/b`).
fn last_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut last = None;
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
            || (chars[i] == '-' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit() || *c == '.'));
        if !starts_number {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < chars.len() {
            let next_is_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if chars[i].is_ascii_digit() || (matches!(chars[i], ',' | '.' | '/') && next_is_digit) {
                i += 1;
            } else {
                break;
            }
        }
        last = Some(chars[start..i].iter().collect());
    }
    last
}

/// Reads a number written as described in the crate documentation.
fn parse_number(text: &str) -> Option<f64> {
    let cleaned: String = text
        .replace("\\$", "")
        .replace("\\%", "")
        .replace("\\!", "")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .chars()
        .filter(|c| !matches!(c, '$' | '%' | ',' | ' '))
        .collect();
    let (negative, body) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.as_str()),
    };
    let magnitude = if let Some(args) = body.strip_prefix("\\frac{") {
        let (numerator, rest) = args.split_once("}{")?;
        let denominator = rest.strip_suffix('}')?;
        parse_number(numerator)? / parse_number(denominator)?
    } else if let Some((numerator, denominator)) = body.split_once('/') {
        numerator.parse::<f64>().ok()? / denominator.parse::<f64>().ok()?
    } else {
        body.parse::<f64>().ok()?
    };
    let value = if negative { -magnitude } else { magnitude };
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(gold: &str, answer: &str) -> f64 {
        score(&[gold.to_string()], answer).unwrap()
    }

    #[test]
    fn numbers_within_tolerance() {
        assert_eq!(s("3.14159265", "about \\boxed{3.1416}"), 1.0);
        assert_eq!(s("3.14159265", "about \\boxed{3.14}"), 0.0);
        assert_eq!(s("\\frac{1}{3}", "so x = 0.33333"), 1.0);
        assert_eq!(s("1/3", "\\boxed{\\dfrac{1}{3}}"), 1.0);
        assert_eq!(s("-\\frac{1}{2}", "\\boxed{-0.5}"), 1.0);
        assert_eq!(s("1,000", "it costs $1,000.00"), 1.0);
        assert_eq!(s("0", "the value is 0.0"), 1.0);
        assert_eq!(s("0", "the value is 0.001"), 0.0);
        assert_eq!(s("42", "no number here"), 0.0);
        assert_eq!(s("7", "first 7 then 8"), 0.0);
    }

    #[test]
    fn non_numeric_gold_is_an_error() {
        assert!(score(&["Paris".to_string()], "\\boxed{1}").is_err());
    }

    #[test]
    fn extraction_helpers() {
        assert_eq!(last_boxed("\\boxed{1} and \\boxed{\\frac{1}{2}}"), Some("\\frac{1}{2}"));
        assert_eq!(last_number("a -3.5, then 1,234 and 3/4."), Some("3/4".to_string()));
        assert_eq!(last_number("none"), None);
        assert_eq!(parse_number("25\\%"), Some(25.0));
    }
}
