//! What happens to a completion before it is scored and reused (`answer_cleaning`). The reference cleaned every
//! completion with `clean_completion_text` before storing it, so its rewards, correction prompts and SFT data all
//! saw the cleaned text; the paper protocol does the same.

use super::spec::AnswerCleaning;
use crate::reward::pystr;

/// The marker the reference cuts at (matched in any case).
const ASSISTANT_MARKER: &str = "assistant:";

impl AnswerCleaning {
    /// The text to score and reuse, and the raw completion when cleaning changed it.
    pub fn apply(self, completion: String) -> (String, Option<String>) {
        match self {
            AnswerCleaning::None => (completion, None),
            AnswerCleaning::Reference => {
                let cleaned = reference_clean(&completion);
                if cleaned == completion {
                    (completion, None)
                } else {
                    (cleaned, Some(completion))
                }
            }
        }
    }
}

/// The reference's `clean_completion_text`: Python `strip()`; find the first "assistant:" in the lower-cased text;
/// if found, keep what follows it and strip again. As in Python, the position found in the lower-cased text is
/// applied to the original by character count (lower-casing can change the length, e.g. 'İ' becomes two
/// characters; the reference's slice is off by as much, and so is this one).
pub fn reference_clean(text: &str) -> String {
    let stripped = pystr::strip(text);
    let lowered = pystr::lower(stripped);
    match lowered.find(ASSISTANT_MARKER) {
        None => stripped.to_string(),
        Some(byte_index) => {
            let skip = lowered[..byte_index].chars().count() + ASSISTANT_MARKER.chars().count();
            let rest: String = stripped.chars().skip(skip).collect();
            pystr::strip(&rest).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_and_keeps_what_follows_the_first_assistant_marker() {
        assert_eq!(reference_clean("  Final Answer: Paris \n"), "Final Answer: Paris");
        assert_eq!(reference_clean("System: hi\nAssistant: Final Answer: Paris\n"), "Final Answer: Paris");
        assert_eq!(reference_clean("ASSISTANT:x assistant: y"), "x assistant: y");
        assert_eq!(reference_clean("assistant:"), "");
        // Python's strip() also removes U+001C..U+001F.
        assert_eq!(reference_clean("\u{1f} answer \u{1c}"), "answer");
    }

    #[test]
    fn lower_casing_that_lengthens_text_shifts_the_cut_as_in_python() {
        // 'İ'.lower() is two characters in Python, so the reference keeps one character less than intended:
        // "İassistant:ok".lower().find("assistant:") == 2, and "İassistant:ok"[12:] == "k".
        assert_eq!(reference_clean("İassistant:ok"), "k");
    }

    #[test]
    fn only_changed_completions_keep_their_raw_text() {
        assert_eq!(AnswerCleaning::Reference.apply("done".into()), ("done".to_string(), None));
        assert_eq!(AnswerCleaning::Reference.apply(" done ".into()), ("done".to_string(), Some(" done ".to_string())));
        assert_eq!(AnswerCleaning::None.apply(" done ".into()), (" done ".to_string(), None));
    }
}
