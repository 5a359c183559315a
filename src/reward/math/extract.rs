//! Final-answer extraction from a math generation and its clean-up, as the reference does it (the Qwen2.5-Math
//! evaluation parser): the last `\boxed{...}` (nested braces), else the text after "the answer is", else the last
//! number; then units, `\text{}`, degrees, dollars, percent, number words, trailing zeros and fractions normalised.

use std::sync::LazyLock;

use regex::Regex;

use super::super::pystr::{self, WORD_CLASS};
use super::mathd::{fix_fracs_with, is_canonical_int};
use super::split_eq_prefix;
use super::words::convert_word_number;

/// Units (mostly from MathQA) removed as whole words, in this order, each then again in a plural form.
/// They are regular expressions as in the reference: a `.` in "q ." matches any character.
const UNIT_TEXTS: &[&str] = &[
    "east",
    "degree",
    "mph",
    "kmph",
    "ft",
    "m sqaure",
    " m east",
    "sq m",
    "deg",
    "mile",
    "q .",
    "monkey",
    "prime",
    "ratio",
    "profit of rs",
    "rd",
    "o",
    "gm",
    "p . m",
    "lb",
    "tile",
    "per",
    "dm",
    "lt",
    "gain",
    "ab",
    "way",
    "west",
    "a .",
    "b .",
    "c .",
    "d .",
    "e .",
    "f .",
    "g .",
    "h .",
    "t",
    "a",
    "h",
    "no change",
    "men",
    "soldier",
    "pie",
    "bc",
    "excess",
    "st",
    "inches",
    "noon",
    "percent",
    "by",
    "gal",
    "kmh",
    "c",
    "acre",
    "rise",
    "a . m",
    "th",
    "π r 2",
    "sq",
    "mark",
    "l",
    "toy",
    "coin",
    "sq . m",
    "gallon",
    "° f",
    "profit",
    "minw",
    "yr",
    "women",
    "feet",
    "am",
    "pm",
    "hr",
    "cu cm",
    "square",
    "v â € ™",
    "are",
    "rupee",
    "rounds",
    "cubic",
    "cc",
    "mtr",
    "s",
    "ohm",
    "number",
    "kmph",
    "day",
    "hour",
    "minute",
    "min",
    "second",
    "man",
    "woman",
    "sec",
    "cube",
    "mt",
    "sq inch",
    "mp",
    "∏ cm ³",
    "hectare",
    "more",
    "sec",
    "unit",
    "cu . m",
    "cm 2",
    "rs .",
    "rs",
    "kg",
    "g",
    "month",
    "km",
    "m",
    "cm",
    "mm",
    "apple",
    "liter",
    "loss",
    "yard",
    "pure",
    "year",
    "increase",
    "decrease",
    "d",
    "less",
    "Surface",
    "litre",
    "pi sq m",
    "s .",
    "metre",
    "meter",
    "inch",
];

static UNIT_PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    let plural = UNIT_TEXTS.iter().map(|u| format!("{u}s"));
    UNIT_TEXTS
        .iter()
        .map(|u| u.to_string())
        .chain(plural)
        .map(|unit| {
            Regex::new(&format!(r"(^|[^{WORD_CLASS}]){unit}($|[^{WORD_CLASS}])")).expect("unit patterns are valid")
        })
        .collect()
});

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// `extract_answer`: the answer the generation states, normalised by [`strip_string`].
pub fn extract_answer(generation: &str) -> String {
    static LAST_NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"-?\d*\.?\d+"));
    static NEWLINE_RUN: LazyLock<Regex> = LazyLock::new(|| re(r"\n[\s\x1c-\x1f]*"));
    let text = generation.replace("\u{43a}\u{438}", "");
    let mut pred = if text.contains("final answer is $") && text.contains("$. I hope") {
        let after = text.split_once("final answer is $").map_or("", |(_, rest)| rest);
        pystr::strip(after.split_once("$. I hope").map_or(after, |(before, _)| before)).to_string()
    } else if text.contains("boxed") {
        let after = text.rsplit("boxed").next().unwrap_or_default();
        if after.is_empty() {
            return String::new();
        }
        match after.strip_prefix('{') {
            Some(inner) => balanced_prefix(inner),
            None => pystr::strip(after.split('$').next().unwrap_or_default()).to_string(),
        }
    } else if text.contains("he answer is") {
        pystr::strip(text.rsplit("he answer is").next().unwrap_or_default()).to_string()
    } else if text.contains("final answer is") {
        pystr::strip(text.rsplit("final answer is").next().unwrap_or_default()).to_string()
    } else if text.contains("答案是") {
        // Python's split(...)[1]: the text between the first and the second occurrence.
        let first = pystr::strip(text.split("答案是").nth(1).unwrap_or_default());
        pystr::strip(first.split("\n\n").next().unwrap_or_default()).to_string()
    } else {
        let no_commas = text.replace(',', "");
        LAST_NUMBER.find_iter(&no_commas).last().map_or(String::new(), |m| m.as_str().to_string())
    };
    pred = NEWLINE_RUN.replace_all(&pred, "").into_owned();
    if let Some(rest) = pred.strip_prefix(':') {
        pred = rest.to_string();
    }
    for suffix in ['.', '/'] {
        if let Some(rest) = pred.strip_suffix(suffix) {
            pred = rest.to_string();
        }
    }
    strip_string(&pred)
}

/// The text of a `\boxed{` argument: characters up to the brace that closes it (or to the end if none does).
fn balanced_prefix(inner: &str) -> String {
    let mut depth = 1usize;
    let mut out = String::new();
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// `strip_string` of the Qwen2.5-Math parser (with unit removal).
pub fn strip_string(input: &str) -> String {
    static ARRAY_BEGIN: LazyLock<Regex> = LazyLock::new(|| re(r"\\begin\{array\}\{.*?\}"));
    static TEXT_AT_END: LazyLock<Regex> = LazyLock::new(|| re(r"\\text\{.*?\}$"));
    static TEXT_WRAPPER: LazyLock<Regex> = LazyLock::new(|| re(r"\\text\{(.*?)\}"));
    static MBOX: LazyLock<Regex> = LazyLock::new(|| re(r"\\mbox\{.*?\}"));
    static TRAILING_ZEROS_MID: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+)\.0*([^\d])"));
    static TRAILING_ZEROS_END: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+)\.0*$"));
    static SQRT_WORD: LazyLock<Regex> = LazyLock::new(|| re(&format!(r"\\sqrt([{WORD_CLASS}]+)")));

    let mut s = pystr::strip(input).replace('\n', "");
    s = s.trim_end_matches('.').to_string();
    s = s.replace("\\!", "");
    s = ARRAY_BEGIN.replace_all(&s, "\\begin{pmatrix}").into_owned();
    s = s.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge");
    s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}");

    // A trailing \text{...} is a unit ("5 \text{ miles}") unless it is the whole answer.
    let without_unit = pystr::strip(&TEXT_AT_END.replace_all(&s, "")).to_string();
    if !without_unit.is_empty() && without_unit != s {
        s = without_unit;
    }
    for _ in 0..2 {
        for pattern in UNIT_PATTERNS.iter() {
            let replaced = pattern.replace_all(&s, "${1}${2}");
            if !replaced.is_empty() {
                s = replaced.into_owned();
            }
        }
    }
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "").replace('$', "").replace("\\(", "").replace("\\)", "");
    s = convert_word_number(&s);
    s = TEXT_WRAPPER.replace_all(&s, "${1}").into_owned();
    for key in ["x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"] {
        s = s.replace(key, "");
    }
    s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}");
    s = s.replace("\\%", "").replace('%', "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    // The reference's "strip enclosing brackets when alphanumeric" test can never pass (a bracket is not
    // alphanumeric), so it is not reproduced.
    s = s.replace("infinity", "\\infty");
    if !s.contains("\\infty") {
        s = s.replace("inf", "\\infty");
    }
    s = s.replace("+\\inity", "\\infty");
    s = s.replace("and", "").replace("\\mathbf", "");
    s = MBOX.replace_all(&s, "").into_owned();
    if s.contains('j') && !s.contains('i') {
        s = s.replace('j', "i");
    }
    s = TRAILING_ZEROS_MID.replace_all(&s, "${1}${2}").into_owned();
    s = TRAILING_ZEROS_END.replace_all(&s, "${1}").into_owned();
    if s.is_empty() {
        return s;
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    s = split_eq_prefix(&s);
    s = SQRT_WORD.replace_all(&s, "\\sqrt{${1}}").into_owned();
    s = s.replace(' ', "");
    s = fix_fracs_with(&s, false).unwrap_or(s);
    fix_a_slash_b(&s)
}

/// `_fix_a_slash_b` of the Qwen parser: like MATH's, but a side containing "sqrt" is kept as written.
fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    let side_ok = |side: &str| side.contains("sqrt") || is_canonical_int(side);
    if parts.len() == 2 && side_ok(parts[0]) && side_ok(parts[1]) {
        return format!("\\frac{{{}}}{{{}}}", parts[0], parts[1]);
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_order() {
        assert_eq!(extract_answer("so \\boxed{\\frac{1}{2}} and \\boxed{3}"), "3");
        assert_eq!(extract_answer("\\boxed{\\frac{1}{\\sqrt{2}}}"), "\\frac{1}{\\sqrt{2}}");
        assert_eq!(extract_answer("\\boxed{\\{1,2\\}}"), "{1,2}");
        assert_eq!(extract_answer("\\boxed 5$ done"), "5");
        assert_eq!(extract_answer("boxed"), "");
        assert_eq!(extract_answer("\\boxed{12"), "12");
        assert_eq!(extract_answer("Thus the answer is 42."), "42");
        assert_eq!(extract_answer("The final answer is 7"), "7");
        assert_eq!(extract_answer("The final answer is $8$. I hope it is correct."), "8");
        assert_eq!(extract_answer("1, 2 and finally 3,000.50 units"), "3000.50");
        assert_eq!(extract_answer("it is 3,000.00 units"), "3000");
        assert_eq!(extract_answer("it is -7 or -.5"), "-.5");
        assert_eq!(extract_answer("no numbers here"), "");
        assert_eq!(extract_answer("答案是 5\n\n其他"), "5");
        assert_eq!(extract_answer("答案是 5 答案是 6"), "5");
    }

    #[test]
    fn strip_string_normalisations() {
        assert_eq!(strip_string("\\dfrac{1}{2}"), "\\frac{1}{2}");
        assert_eq!(strip_string("3/4"), "\\frac{3}{4}");
        assert_eq!(strip_string("\\sqrt{2}/2"), "\\frac{\\sqrt{2}}{2}");
        assert_eq!(strip_string("\\frac12"), "\\frac{1}{2}");
        assert_eq!(strip_string("5 \\text{ miles}"), "5");
        assert_eq!(strip_string("\\text{(B)}"), "(B)");
        assert_eq!(strip_string("10 cm"), "10");
        assert_eq!(strip_string("45^\\circ"), "45");
        assert_eq!(strip_string("45 degrees"), "45");
        assert_eq!(strip_string("\\$12.50"), "12.50");
        assert_eq!(strip_string("\\$12.00"), "12");
        assert_eq!(strip_string("20\\%"), "20");
        assert_eq!(strip_string("2.000"), "2");
        assert_eq!(strip_string("x = 3"), "3");
        assert_eq!(strip_string("k=10"), "10");
        assert_eq!(strip_string("five apples"), "5");
        assert_eq!(strip_string("\\sqrt3"), "\\sqrt{3}");
        assert_eq!(strip_string("(-\\infty, \\infty)"), "(-\\infty,\\infty)");
        assert_eq!(strip_string("\\left( 1, 2 \\right)"), "(1,2)");
        assert_eq!(strip_string(".5"), "0.5");
        assert_eq!(strip_string("3j"), "3i");
        assert_eq!(strip_string("a"), "a");
    }
}
