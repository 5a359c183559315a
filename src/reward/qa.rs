//! Question-answering rewards: `in_acc` (gold alias contained as a token sequence), `em` (exact match) and `f1`
//! (token F1), each the maximum over the gold aliases, with the reference's DPR/SQuAD-style answer normalisation.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::pystr::{self, WORD_CLASS};
use super::{Reward, RewardError};
use crate::config::EvaluatorFunction;

/// SQuAD answer normalisation as the reference writes it: lowercase, ASCII punctuation to spaces, the articles
/// a/an/the removed as whole words, whitespace collapsed to single spaces.
pub fn normalize_answer(s: &str) -> String {
    let lowered = pystr::lower(s);
    let no_punct: String = lowered.chars().map(|c| if c.is_ascii_punctuation() { ' ' } else { c }).collect();
    let no_articles = remove_articles(&no_punct);
    pystr::split_ws(&no_articles).join(" ")
}

/// `re.sub(r"\b(a|an|the)\b", " ", text)`: an article is removed only when it is a whole run of word characters.
fn remove_articles(text: &str) -> String {
    static WORD_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!("[{WORD_CLASS}]+")).expect("static regex"));
    WORD_RUN
        .replace_all(text, |caps: &regex::Captures| match &caps[0] {
            "a" | "an" | "the" => " ".to_string(),
            word => word.to_string(),
        })
        .into_owned()
}

/// DPR's SimpleTokenizer: runs of letters/numbers/marks, or any single character that is neither a separator nor
/// a control/unassigned character; tokens lowercased.
pub fn tokenize(text: &str) -> Vec<String> {
    static TOKEN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]").expect("static regex"));
    TOKEN.find_iter(text).map(|m| pystr::lower(m.as_str())).collect()
}

/// NFD, then [`normalize_answer`], then [`tokenize`]: how `in_acc` sees both the answer and each gold alias.
fn in_acc_tokens(text: &str) -> Vec<String> {
    let decomposed: String = text.nfd().collect();
    tokenize(&normalize_answer(&decomposed))
}

/// `in_acc`: 1 if any gold alias occurs in the answer as a contiguous token sequence, else 0.
///
/// Like the reference, an alias that normalises to nothing matches every answer, and an empty gold list scores 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct InAcc;

impl Reward for InAcc {
    fn name(&self) -> &str {
        EvaluatorFunction::InAcc.name()
    }

    fn score(&self, gold: &[String], text: &str) -> Result<f64, RewardError> {
        let text_tokens = in_acc_tokens(text);
        let found = gold.iter().any(|alias| {
            let alias_tokens = in_acc_tokens(alias);
            alias_tokens.is_empty() || text_tokens.windows(alias_tokens.len()).any(|window| window == alias_tokens)
        });
        Ok(if found { 1.0 } else { 0.0 })
    }
}

/// `em`: 1 if the normalised answer equals some normalised gold alias, else 0. An empty gold list is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactMatch;

impl Reward for ExactMatch {
    fn name(&self) -> &str {
        EvaluatorFunction::Em.name()
    }

    fn score(&self, gold: &[String], text: &str) -> Result<f64, RewardError> {
        if gold.is_empty() {
            return Err(RewardError::EmptyGold { reward: self.name().to_string() });
        }
        let answer = normalize_answer(text);
        Ok(if gold.iter().any(|alias| normalize_answer(alias) == answer) { 1.0 } else { 0.0 })
    }
}

/// `f1`: SQuAD token F1 between the answer and each gold alias, maximised over aliases. Empty gold list: error.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenF1;

fn f1_tokens(s: &str) -> Vec<String> {
    pystr::split_ws(&normalize_answer(s)).into_iter().map(str::to_string).collect()
}

fn token_f1(gold: &[String], pred: &[String]) -> f64 {
    if gold.is_empty() || pred.is_empty() {
        // Either side has no tokens: 1 if both are empty, else 0 (SQuAD's no-answer rule).
        return if gold == pred { 1.0 } else { 0.0 };
    }
    let mut gold_counts: HashMap<&str, usize> = HashMap::new();
    for token in gold {
        *gold_counts.entry(token).or_default() += 1;
    }
    let mut common = 0usize;
    for token in pred {
        if let Some(count) = gold_counts.get_mut(token.as_str()) {
            if *count > 0 {
                *count -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    // Same operation order as the reference so the float result is bit-identical.
    let precision = 1.0 * common as f64 / pred.len() as f64;
    let recall = 1.0 * common as f64 / gold.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

impl Reward for TokenF1 {
    fn name(&self) -> &str {
        EvaluatorFunction::F1.name()
    }

    fn score(&self, gold: &[String], text: &str) -> Result<f64, RewardError> {
        if gold.is_empty() {
            return Err(RewardError::EmptyGold { reward: self.name().to_string() });
        }
        let pred = f1_tokens(text);
        Ok(gold.iter().map(|alias| token_f1(&f1_tokens(alias), &pred)).fold(f64::NEG_INFINITY, f64::max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gold(aliases: &[&str]) -> Vec<String> {
        aliases.iter().map(|s| s.to_string()).collect()
    }

    fn in_acc(aliases: &[&str], text: &str) -> f64 {
        InAcc.score(&gold(aliases), text).unwrap()
    }

    fn em(aliases: &[&str], text: &str) -> f64 {
        ExactMatch.score(&gold(aliases), text).unwrap()
    }

    fn f1(aliases: &[&str], text: &str) -> f64 {
        TokenF1.score(&gold(aliases), text).unwrap()
    }

    #[test]
    fn normalisation_follows_squad() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffel tower");
        assert_eq!(normalize_answer("An apple a day"), "apple day");
        assert_eq!(normalize_answer("theatre another"), "theatre another");
        assert_eq!(normalize_answer("the_end"), "end");
        assert_eq!(normalize_answer("¡Hola! ¿qué?"), "¡hola ¿qué");
        assert_eq!(normalize_answer("a\u{1c}b"), "b");
        assert_eq!(normalize_answer(""), "");
    }

    #[test]
    fn articles_next_to_combining_marks_are_whole_words() {
        // After NFD "thé" is "the" + U+0301; Python's \b sees the mark as a non-word character.
        assert_eq!(normalize_answer("the\u{301}"), "\u{301}");
    }

    #[test]
    fn tokenizer_splits_like_dpr() {
        assert_eq!(tokenize("u.s. 1,000 café"), vec!["u", ".", "s", ".", "1", ",", "000", "café"]);
        assert_eq!(tokenize("e\u{301}t\u{e9}"), vec!["e\u{301}t\u{e9}"]);
        assert_eq!(tokenize("a\tb\u{200b}c"), vec!["a", "b", "c"]);
    }

    #[test]
    fn in_acc_matches_token_sequences() {
        assert_eq!(in_acc(&["Paris"], "The capital is Paris."), 1.0);
        assert_eq!(in_acc(&["Paris"], "The capital is Parisian."), 0.0);
        assert_eq!(in_acc(&["New York City"], "I live in new york city now"), 1.0);
        assert_eq!(in_acc(&["New York City"], "new york is a city"), 0.0);
        assert_eq!(in_acc(&["London", "Paris"], "paris"), 1.0);
        assert_eq!(in_acc(&["The Beatles"], "beatles"), 1.0);
        assert_eq!(in_acc(&["Beyoncé"], "BEYONCE\u{301} sang"), 1.0);
        assert_eq!(in_acc(&["Beyoncé"], "Beyonce sang"), 0.0);
        assert_eq!(in_acc(&["U.S."], "the u s army"), 1.0);
        assert_eq!(in_acc(&["1,000"], "about 1 000 people"), 1.0);
        assert_eq!(in_acc(&["1,000"], "about 1000 people"), 0.0);
    }

    #[test]
    fn in_acc_edge_cases_follow_the_reference() {
        assert_eq!(in_acc(&[], "anything"), 0.0);
        assert_eq!(in_acc(&["the"], "anything"), 1.0, "an alias that normalises to nothing matches");
        assert_eq!(in_acc(&[""], ""), 1.0);
        assert_eq!(in_acc(&["x"], ""), 0.0);
    }

    #[test]
    fn exact_match_is_normalised_and_maxed() {
        assert_eq!(em(&["Paris"], "paris!"), 1.0);
        assert_eq!(em(&["Paris"], "Paris, France"), 0.0);
        assert_eq!(em(&["London", "The Paris"], "a paris"), 1.0);
        assert_eq!(em(&[""], "the"), 1.0);
        assert!(ExactMatch.score(&[], "x").is_err());
    }

    #[test]
    fn f1_counts_shared_tokens() {
        assert_eq!(f1(&["Paris"], "Paris"), 1.0);
        assert_eq!(f1(&["New York City"], "New York"), 0.8);
        assert_eq!(f1(&["a b c d"], "b x"), 2.0 * (1.0 / 2.0) * (1.0 / 3.0) / (1.0 / 2.0 + 1.0 / 3.0));
        assert_eq!(f1(&["x y"], "y y y"), 2.0 * (1.0 / 3.0) * (1.0 / 2.0) / (1.0 / 3.0 + 1.0 / 2.0));
        assert_eq!(f1(&["zzz", "new york"], "new york city"), 0.8);
        assert_eq!(f1(&["the"], ""), 1.0);
        assert_eq!(f1(&["x"], ""), 0.0);
        assert_eq!(f1(&["x"], "y"), 0.0);
        assert!(TokenF1.score(&[], "x").is_err());
    }
}
