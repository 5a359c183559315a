//! `math_acc`: extract the final answer from a math generation and grade it against the gold answer the way the
//! reference does (the PRM800K grader, called as `grade_answer(gold, extracted)`):
//!
//! 1. equal after the MATH dataset normalisation ([`mathd`]) -> correct;
//! 2. else both sides normalised again (`\text{}`, `$`, `%`, units, `^\circ`, LaTeX rendered to text, mixed numbers,
//!    lowercase, integers canonical) and compared as strings;
//! 3. else tuples/intervals are split and compared element by element: two fractions must be written identically
//!    (so an unreduced fraction never equals the reduced one), an integer only equals an integer, and anything else
//!    is equal when the difference evaluates to zero ([`numeric`]; decimals equal their fractions).
//!
//! Where the reference relies on sympy for symbolic algebra or on pylatexenc for LaTeX beyond [`latex`]'s subset,
//! this implementation answers "not equal"; see those modules.

mod algebra;
mod extract;
mod latex;
mod mathd;
mod numeric;
mod words;

use std::sync::LazyLock;

use regex::Regex;

pub use extract::{extract_answer, strip_string};
pub use latex::latex_to_text;

use super::pystr;
use super::{Reward, RewardError};
use crate::config::EvaluatorFunction;

/// `math_acc`: 1 if the answer extracted from the generation equals a gold answer, else 0. Empty gold: error.
#[derive(Debug, Clone, Copy, Default)]
pub struct MathAcc;

impl Reward for MathAcc {
    fn name(&self) -> &str {
        EvaluatorFunction::MathAcc.name()
    }

    fn score(&self, gold: &[String], text: &str) -> Result<f64, RewardError> {
        if gold.is_empty() {
            return Err(RewardError::EmptyGold { reward: self.name().to_string() });
        }
        let predicted = extract_answer(text);
        Ok(if gold.iter().any(|g| grade_answer(g, &predicted)) { 1.0 } else { 0.0 })
    }

    fn extracts_own_answer(&self) -> bool {
        true
    }

    fn extract(&self, text: &str) -> Option<String> {
        Some(extract_answer(text))
    }
}

/// The reference's `grade_answer(given_answer, ground_truth)`, called by it as `grade_answer(gold, extracted)`.
pub fn grade_answer(given: &str, truth: &str) -> bool {
    if mathd::normalize_answer(truth) == mathd::normalize_answer(given) {
        return true;
    }
    let (Some(truth), Some(given)) = (normalize(truth), normalize(given)) else {
        return false;
    };
    if truth == given {
        return true;
    }
    if given.is_empty() {
        return false;
    }
    let truth_elems = split_tuple(&truth);
    let given_elems = split_tuple(&given);
    if truth_elems.len() > 1
        && (truth.chars().next() != given.chars().next() || truth.chars().last() != given.chars().last())
    {
        return false;
    }
    if truth_elems.len() != given_elems.len() {
        return false;
    }
    truth_elems.iter().zip(&given_elems).all(|(t, g)| {
        if is_frac(t) && is_frac(g) {
            t == g
        } else if str_is_int(t) != str_is_int(g) {
            false
        } else {
            equal_under_evaluation(t, g)
        }
    })
}

/// `re.search(r"^\\text\{(?P<text>.+?)\}$", s)`: the content of a `\text{...}` spanning the whole string (Python's
/// `$` also matches before a final newline).
fn python_text_wrapper(s: &str) -> Option<&str> {
    let body = s.strip_prefix("\\text{")?;
    let inner = body.strip_suffix("}\n").or_else(|| body.strip_suffix('}'))?;
    (!inner.is_empty() && !inner.contains('\n')).then_some(inner)
}

/// `k = 5` -> `5`: with exactly one `=`, drop a left side of at most two characters.
fn split_eq_prefix(s: &str) -> String {
    match s.split_once('=') {
        Some((left, right)) if !right.contains('=') && left.chars().count() <= 2 => right.to_string(),
        _ => s.to_string(),
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// `_strip_properly_formatted_commas`: `1,000,000` -> `1000000`, leaving tuple commas alone.
fn strip_thousands_commas(expr: &str) -> String {
    static THOUSANDS: LazyLock<Regex> = LazyLock::new(|| re(r"(\d),(\d\d\d)($|\D)"));
    let mut current = expr.to_string();
    loop {
        let next = THOUSANDS.replace_all(&current, "${1}${2}${3}").into_owned();
        if next == current {
            return next;
        }
        current = next;
    }
}

/// `_is_frac`: a plain `a/b` of integers (one optional character after each side).
fn is_frac(expr: &str) -> bool {
    static FRAC: LazyLock<Regex> = LazyLock::new(|| re(r"^-?[0-9]+.?/0*[1-9][0-9]*.?\n?$"));
    FRAC.is_match(expr)
}

/// Python's `abs(x - int(round(x))) <= 1e-7` with its exceptions (infinity, NaN) read as false.
fn is_int(x: f64) -> bool {
    x.is_finite() && (x - x.round_ties_even()).abs() <= 1e-7
}

/// `_str_is_int`: parses as a float (after thousands commas) within 1e-7 of an integer.
fn str_is_int(s: &str) -> bool {
    pystr::parse_float(&strip_thousands_commas(s)).is_some_and(is_int)
}

/// `_str_to_int`: `str(int(float(s without commas)))` (truncation, as Python's `int`).
fn str_to_int(s: &str) -> Option<String> {
    let x = pystr::parse_float(&s.replace(',', ""))?;
    x.is_finite().then(|| pystr::integral_float_str(x.trunc()))
}

/// `split_tuple`: the elements of `(a, b)` / `[a, b)` style answers, or the answer itself.
fn split_tuple(expr: &str) -> Vec<String> {
    const TUPLE_CHARS: [char; 4] = ['(', ')', '[', ']'];
    let expr = strip_thousands_commas(expr);
    let chars: Vec<char> = expr.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let n = chars.len();
    if n > 2
        && TUPLE_CHARS.contains(&chars[0])
        && TUPLE_CHARS.contains(&chars[n - 1])
        && !chars[1..n - 1].iter().any(|c| TUPLE_CHARS.contains(c))
    {
        let middle: String = chars[1..n - 1].iter().collect();
        return middle.split(',').map(|e| pystr::strip(e).to_string()).collect();
    }
    vec![expr]
}

/// The grader's second normalisation (`_normalize`); `None` when its LaTeX is outside the supported subset.
fn normalize(expr: &str) -> Option<String> {
    static UNITS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        [
            "degree",
            "cm",
            "centimeter",
            "meter",
            "mile",
            "second",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "year",
            "foot",
            "feet",
            "inch",
            "yard",
        ]
        .iter()
        .map(|unit| re(&format!(r"{unit}(es)?(s)? *(\^[0-9]+)?")))
        .collect()
    });
    static CIRC: LazyLock<Regex> = LazyLock::new(|| re(r"\^ *\\circ"));
    static NEGATIVE_SPACE: LazyLock<Regex> = LazyLock::new(|| re(r",\\! *"));
    static MINUS_SPACE: LazyLock<Regex> = LazyLock::new(|| re(r"- *"));
    static MIXED_NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"([0-9]) +([0-9])"));

    let mut s = python_text_wrapper(expr).unwrap_or(expr).to_string();
    s = s.replace("\\%", "%").replace("\\$", "$").replace(['$', '%'], "");
    s = s.replace(" or ", " , ").replace(" and ", " , ");
    s = s.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12");
    for unit in UNITS.iter() {
        s = unit.replace_all(&s, "").into_owned();
    }
    s = CIRC.replace_all(&s, "").into_owned();
    if s.starts_with('{') && s.ends_with('}') {
        let mut chars = s.chars();
        chars.next();
        chars.next_back();
        s = chars.as_str().to_string();
    }
    s = NEGATIVE_SPACE.replace_all(&s, "").into_owned();
    if let Some(x) = pystr::parse_float(&s).filter(|x| is_int(*x)) {
        s = pystr::integral_float_str(x.round_ties_even());
    }
    if s.contains('\\') {
        let prepared = s.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac");
        let text = latex_to_text(&prepared)?;
        let text =
            text.replace('√', "sqrt").replace('π', "pi").replace('∞', "inf").replace('∪', "U").replace(['·', '×'], "*");
        s = pystr::strip(&text).to_string();
    }
    s = MINUS_SPACE.replace_all(&s, "-").into_owned();
    s = MIXED_NUMBER.replace_all(&s, "${1}+${2}").into_owned();
    s = s.replace([' ', '{', '}'], "");
    s = pystr::lower(&s);
    if str_is_int(&s) {
        if let Some(int) = str_to_int(&s) {
            s = int;
        }
    }
    Some(s)
}

/// `are_equal_under_sympy` with its guards: at most two distinct letters, no `^{`/`^(`, no multi-digit or chained
/// powers; then [`numeric::difference_is_zero`].
fn equal_under_evaluation(truth: &str, given: &str) -> bool {
    static CHAINED_POWER: LazyLock<Regex> = LazyLock::new(|| re(r"\^[0-9]+\^"));
    static LONG_POWER: LazyLock<Regex> = LazyLock::new(|| re(r"\^[0-9][0-9]+"));
    let expr = format!("({truth})-({given})");
    let letters_source = expr.replace("sqrt", "").replace("frac", "");
    let mut letters: Vec<char> = letters_source.chars().filter(|&c| pystr::is_alpha(c)).collect();
    letters.sort_unstable();
    letters.dedup();
    if letters.len() > 2
        || expr.contains("^{")
        || expr.contains("^(")
        || CHAINED_POWER.is_match(&expr)
        || LONG_POWER.is_match(&expr)
    {
        return false;
    }
    numeric::difference_is_zero(truth, given)
}

#[cfg(test)]
mod tests;
