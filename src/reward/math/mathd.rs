//! The MATH dataset's answer normalisation (Hendrycks et al., "math_equivalence"), as the reference's grader applies
//! it first: two answers that normalise to the same string are equal. Where the original raises on malformed input
//! (a trailing `\frac` or `\sqrt`, two `\text{ ` units), the answer is kept as it was after `\text{}` unwrapping.

use super::super::pystr;
use super::{python_text_wrapper, split_eq_prefix};

/// `normalize_answer`: strip, unwrap a whole-answer `\text{...}`, then the MATH normalisation.
pub fn normalize_answer(answer: &str) -> String {
    let mut answer = pystr::strip(answer).to_string();
    if let Some(inner) = python_text_wrapper(&answer) {
        answer = pystr::strip(inner).to_string();
    }
    strip_string(&answer).unwrap_or(answer)
}

/// `_strip_string`; `None` where the original raises.
fn strip_string(input: &str) -> Option<String> {
    let mut s = input.replace('\n', "").replace("\\!", "").replace("\\\\", "\\");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "");
    s = remove_right_units(&s)?;
    s = s.replace("\\%", "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.is_empty() {
        return Some(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    s = split_eq_prefix(&s);
    s = fix_sqrt(&s)?;
    s = s.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    Some(fix_a_slash_b(&s))
}

/// `_remove_right_units`: drop everything from `\text{ ` on; two of them is an error in the original.
fn remove_right_units(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split("\\text{ ").collect();
    match parts.len() {
        1 => Some(s.to_string()),
        2 => Some(parts[0].to_string()),
        _ => None,
    }
}

/// `_fix_sqrt`: `\sqrt3` -> `\sqrt{3}` (one character); a `\sqrt` with nothing after it is an error.
fn fix_sqrt(s: &str) -> Option<String> {
    if !s.contains("\\sqrt") {
        return Some(s.to_string());
    }
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        let first = chars.next()?;
        if first == '{' {
            out.push_str("\\sqrt");
            out.push_str(part);
        } else {
            out.push_str(&format!("\\sqrt{{{first}}}{}", chars.as_str()));
        }
    }
    Some(out)
}

/// `_fix_fracs` of the MATH code: `\frac12` -> `\frac{1}{2}`, `\frac1{2}` -> `\frac{1}{2}`; an empty piece after
/// `\frac` is an error, a one-character piece returns the input unchanged.
pub(super) fn fix_fracs_with(s: &str, empty_is_error: bool) -> Option<String> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        let chars: Vec<char> = part.chars().collect();
        if chars.is_empty() && empty_is_error {
            return None;
        }
        if chars.first() == Some(&'{') {
            out.push_str(part);
            continue;
        }
        if chars.len() < 2 {
            return Some(s.to_string());
        }
        let (a, b) = (chars[0], chars[1]);
        let rest: String = chars[2..].iter().collect();
        if b != '{' {
            out.push_str(&format!("{{{a}}}{{{b}}}{rest}"));
        } else {
            out.push_str(&format!("{{{a}}}{b}{rest}"));
        }
    }
    Some(out)
}

fn fix_fracs(s: &str) -> Option<String> {
    fix_fracs_with(s, true)
}

/// `_fix_a_slash_b`: `3/4` -> `\frac{3}{4}` when both sides are integers written canonically.
fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() == 2 && is_canonical_int(parts[0]) && is_canonical_int(parts[1]) {
        return format!("\\frac{{{}}}{{{}}}", parts[0], parts[1]);
    }
    s.to_string()
}

/// True when `str(int(s)) == s`, i.e. `s` is exactly how Python prints an integer.
pub(super) fn is_canonical_int(s: &str) -> bool {
    pystr::int_str(s).is_some_and(|printed| printed == s)
}

#[cfg(test)]
mod tests {
    use super::normalize_answer as n;

    #[test]
    fn math_normalisation() {
        assert_eq!(n("\\dfrac{1}{2}"), "\\frac{1}{2}");
        assert_eq!(n("\\frac12"), "\\frac{1}{2}");
        assert_eq!(n("\\frac1{72}"), "\\frac{1}{72}");
        assert_eq!(n("0.5"), "\\frac{1}{2}");
        assert_eq!(n(".5"), "\\frac{1}{2}");
        assert_eq!(n(".25"), "0.25");
        assert_eq!(n("3/4"), "\\frac{3}{4}");
        assert_eq!(n("03/4"), "03/4");
        assert_eq!(n("\\text{ 12 }"), "12");
        assert_eq!(n("10\\text{ cm}"), "10");
        assert_eq!(n("90^\\circ"), "90");
        assert_eq!(n("\\$5"), "5");
        assert_eq!(n("50\\%"), "50");
        assert_eq!(n("x = 5"), "5");
        assert_eq!(n("\\sqrt3"), "\\sqrt{3}");
        assert_eq!(n("\\left( 1, 2 \\right)"), "(1,2)");
    }

    #[test]
    fn malformed_input_is_kept() {
        assert_eq!(n("2\\sqrt"), "2\\sqrt");
        assert_eq!(n("\\frac"), "\\frac");
        assert_eq!(n("1\\text{ a}\\text{ b}"), "1\\text{ a}\\text{ b}");
        assert_eq!(n("\\frac1"), "\\frac1");
    }
}
