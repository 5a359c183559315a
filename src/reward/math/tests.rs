//! Unit tests of `math_acc` grading: each expectation was checked against the reference grader (see
//! scripts/make_reward_goldens.py, which scores the larger fixture).

use super::*;

fn score(gold: &str, generation: &str) -> f64 {
    MathAcc.score(&[gold.to_string()], generation).unwrap()
}

#[test]
fn boxed_answers() {
    assert_eq!(score("5", "The result is \\boxed{5}."), 1.0);
    assert_eq!(score("5", "The result is \\boxed{6}."), 0.0);
    assert_eq!(score("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}"), 1.0);
    assert_eq!(score("\\frac{1}{2}", "\\boxed{\\dfrac{1}{2}}"), 1.0);
    assert_eq!(score("\\frac{1}{2}", "\\boxed{\\frac12}"), 1.0);
    assert_eq!(score("\\frac{1}{2}", "first \\boxed{1} then \\boxed{\\frac{1}{2}}"), 1.0);
    assert_eq!(score("\\sqrt{2}", "\\boxed{\\sqrt2}"), 1.0);
    assert_eq!(score("{1,2}", "\\boxed{\\{1, 2\\}}"), 1.0);
}

#[test]
fn fractions_and_decimals() {
    assert_eq!(score("\\frac{1}{2}", "\\boxed{0.5}"), 1.0);
    assert_eq!(score("\\frac{1}{4}", "\\boxed{0.25}"), 1.0);
    assert_eq!(score("\\frac{3}{4}", "\\boxed{3/4}"), 1.0);
    assert_eq!(score("0.75", "\\boxed{\\frac{3}{4}}"), 1.0);
    assert_eq!(score("\\frac{1}{3}", "\\boxed{0.333}"), 0.0);
    assert_eq!(score("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}"), 0.0, "unreduced fractions differ");
    assert_eq!(score("\\frac{2}{4}", "\\boxed{0.5}"), 1.0, "a decimal equals an unreduced fraction's value");
    assert_eq!(score("-\\frac{1}{2}", "\\boxed{-0.5}"), 1.0);
}

#[test]
fn integers_need_integers() {
    assert_eq!(score("2", "\\boxed{2.0}"), 1.0);
    assert_eq!(score("2", "\\boxed{\\frac{4}{2}}"), 0.0);
    assert_eq!(score("1000", "\\boxed{1,000}"), 1.0);
    assert_eq!(score("1000000", "\\boxed{1,000,000}"), 1.0);
    assert_eq!(score("-3", "so the answer is -3"), 1.0);
    assert_eq!(score("12", "\\boxed{012}"), 1.0);
}

#[test]
fn units_degrees_dollars_percent() {
    assert_eq!(score("90", "\\boxed{90^\\circ}"), 1.0);
    assert_eq!(score("90^\\circ", "\\boxed{90}"), 1.0);
    assert_eq!(score("5", "\\boxed{5 \\text{ cm}}"), 1.0);
    assert_eq!(score("5", "\\boxed{5\\text{ meters}}"), 1.0);
    assert_eq!(score("12", "\\boxed{\\$12}"), 1.0);
    assert_eq!(score("\\$12", "\\boxed{12}"), 1.0);
    assert_eq!(score("25", "\\boxed{25\\%}"), 1.0);
    assert_eq!(score("25\\%", "\\boxed{25}"), 1.0);
    assert_eq!(score("10", "\\boxed{10 inches}"), 1.0);
}

#[test]
fn tuples_and_intervals() {
    assert_eq!(score("(1,2)", "\\boxed{(1, 2)}"), 1.0);
    assert_eq!(score("(1,2)", "\\boxed{(2, 1)}"), 0.0);
    assert_eq!(score("(0.5,2)", "\\boxed{(\\frac{1}{2}, 2)}"), 1.0);
    assert_eq!(score("[1,2)", "\\boxed{(1,2)}"), 0.0);
    assert_eq!(score("(1,2,3)", "\\boxed{(1,2)}"), 0.0);
}

#[test]
fn answer_phrases_and_last_numbers() {
    assert_eq!(score("42", "We get 40 + 2, so the answer is 42."), 1.0);
    assert_eq!(score("7", "Adding gives 3 and then 7"), 1.0);
    assert_eq!(score("7", "Adding gives 7 and then 3"), 0.0);
    assert_eq!(score("1234", "total: 1,234"), 1.0);
    assert_eq!(score("5", "five"), 0.0, "no digits and no marker: nothing is extracted");
    assert_eq!(score("5", "the answer is five"), 1.0);
    assert_eq!(score("3", "no answer at all"), 0.0);
}

#[test]
fn grading_helpers() {
    assert!(is_frac("1/2") && is_frac("-10/20") && !is_frac("1/0") && !is_frac("0.5"));
    assert!(str_is_int("3") && str_is_int("3.0000000001") && str_is_int("1,000") && !str_is_int("1.5"));
    assert!(!str_is_int("inf") && !str_is_int("nan") && !str_is_int("x"));
    assert_eq!(split_tuple("(1,2)"), vec!["1", "2"]);
    assert_eq!(split_tuple("(1,000,2)"), vec!["1000", "2"]);
    assert_eq!(split_tuple("((1,2))"), vec!["((1,2))"]);
    assert_eq!(split_tuple(""), Vec::<String>::new());
    assert_eq!(strip_thousands_commas("1,234,567"), "1234567");
    assert_eq!(split_eq_prefix("x=5"), "5");
    assert_eq!(split_eq_prefix("abc=5"), "abc=5");
    assert_eq!(split_eq_prefix("x=5=y"), "x=5=y");
    assert_eq!(python_text_wrapper("\\text{abc}"), Some("abc"));
    assert_eq!(python_text_wrapper("\\text{abc}\n"), Some("abc"));
    assert_eq!(python_text_wrapper("\\text{}"), None);
    assert_eq!(python_text_wrapper("\\text{a}b"), None);
}

#[test]
fn normalisation_of_the_grader() {
    assert_eq!(normalize("\\frac{1}{2}").as_deref(), Some("1/2"));
    assert_eq!(normalize("\\text{Monday}").as_deref(), Some("mon"), "the reference strips \"day\" anywhere");
    assert_eq!(normalize("5 \\text{cm}^2").as_deref(), Some("5^2"), "\"cm\" goes, the power stays");
    assert_eq!(normalize("2 million").as_deref(), Some("2*10^6"));
    assert_eq!(normalize("1 or 2").as_deref(), Some("1,2"));
    assert_eq!(normalize("7 3/4").as_deref(), Some("7+3/4"));
    assert_eq!(normalize("3.00").as_deref(), Some("3"));
    assert_eq!(normalize("\\sqrt{3}").as_deref(), Some("sqrt(3)"));
    assert_eq!(normalize("\\begin{pmatrix}1\\end{pmatrix}"), None);
}

#[test]
fn empty_gold_is_an_error() {
    assert!(matches!(MathAcc.score(&[], "\\boxed{1}"), Err(RewardError::EmptyGold { .. })));
}

#[test]
fn any_gold_alias_counts() {
    let gold = vec!["4".to_string(), "\\frac{1}{2}".to_string()];
    assert_eq!(MathAcc.score(&gold, "\\boxed{0.5}").unwrap(), 1.0);
}
