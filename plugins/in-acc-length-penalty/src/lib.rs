//! Example stasc reward plugin `in-acc-length-penalty`: in_acc (1.0 when a gold answer occurs in the answer as a
//! sequence of words) minus 0.01 per word beyond the first 20, never below 0. It rewards correct and short answers.
//!
//! The matching is a simplified in_acc: lowercase, ASCII punctuation to spaces, the articles a/an/the removed,
//! whitespace-separated words. The built-in `in_acc` is the reference-exact one (Unicode decomposition, DPR tokens).

/// Words an answer may have before the penalty starts.
const FREE_WORDS: usize = 20;
/// Score removed for each word beyond [`FREE_WORDS`].
const PENALTY_PER_WORD: f64 = 0.01;

fn words(text: &str) -> Vec<String> {
    let cleaned: String = text.to_lowercase().chars().map(|c| if c.is_ascii_punctuation() { ' ' } else { c }).collect();
    cleaned.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).map(str::to_string).collect()
}

fn score(gold: &[String], answer: &str) -> Result<f64, String> {
    let answer_words = words(answer);
    let found = gold.iter().any(|g| {
        let gold_words = words(g);
        gold_words.is_empty() || answer_words.windows(gold_words.len()).any(|w| w == gold_words)
    });
    if !found {
        return Ok(0.0);
    }
    let extra = answer.split_whitespace().count().saturating_sub(FREE_WORDS);
    Ok((1.0 - PENALTY_PER_WORD * extra as f64).max(0.0))
}

stasc_plugin::export_reward!("in-acc-length-penalty", score);

#[cfg(test)]
mod tests {
    use super::*;

    fn s(gold: &str, answer: &str) -> f64 {
        score(&[gold.to_string()], answer).unwrap()
    }

    #[test]
    fn short_correct_answers_score_one() {
        assert_eq!(s("Paris", "The answer is Paris."), 1.0);
        assert_eq!(s("New York", "I'd say new york!"), 1.0);
        assert_eq!(s("Paris", "London"), 0.0);
        assert_eq!(s("Paris", "Parisian"), 0.0);
    }

    #[test]
    fn long_answers_are_penalised() {
        let padding = "word ".repeat(29);
        assert!((s("Paris", &format!("{padding}Paris")) - 0.9).abs() < 1e-12);
        let very_long = "word ".repeat(500);
        assert_eq!(s("Paris", &format!("{very_long}Paris")), 0.0);
        assert_eq!(s("Paris", &very_long), 0.0);
    }
}
