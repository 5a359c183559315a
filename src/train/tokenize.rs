//! Turns conversations into training examples: token ids of the chat-template rendering and labels that cover only
//! the last assistant message, up to and including its end-of-turn token.
//!
//! The span is found by rendering twice: the whole conversation, and the conversation without its last message
//! with the generation prompt (`<|im_start|>assistant\n` in ChatML). The assistant's tokens start where the two
//! token sequences stop agreeing (normally the end of the shorter one), and end at the last stop token (the
//! tokenizer's EOS ids: `<|im_end|>`, `<|eot_id|>`, `<|end|>`) in the rest; what the template prints after it (a
//! newline) carries no loss. Without a stop token in the rest, the rest is labelled whole.
//!
//! Examples longer than `data.block_size` follow `data.truncation`; the counts are reported in [`TokenizeStats`].

use serde::Serialize;

use super::error::TrainError;
use crate::config::Truncation;
use crate::model::Tokenizer;
use crate::prompt::ChatMessage;

/// The label of a position that carries no loss (HF's `IGNORE_INDEX`).
pub const IGNORE_INDEX: i64 = -100;

/// One tokenised training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Token ids of the rendered conversation.
    pub input_ids: Vec<i64>,
    /// Per position: the token id where it is a loss target, else [`IGNORE_INDEX`] (unshifted, as HF labels are).
    pub labels: Vec<i64>,
}

impl TokenizedExample {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the example has no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Loss targets after the causal shift (labels of positions 1..), the count HF's `num_items_in_batch` uses.
    pub fn num_targets(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// What tokenisation did to the examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenizeStats {
    /// Conversations given.
    pub given: usize,
    /// Examples kept for training.
    pub kept: usize,
    /// Kept examples that were cut to block_size.
    pub truncated: usize,
    /// Dropped for being longer than block_size (policy `drop`).
    pub dropped_too_long: usize,
    /// Dropped because no loss token was left (after truncation).
    pub dropped_no_labels: usize,
    /// Tokens of the kept examples.
    pub tokens: usize,
    /// Loss targets of the kept examples.
    pub label_tokens: usize,
}

/// The label span `[start, end)` of the last assistant message inside `full`, given the tokens of the prompt that
/// precedes it (`prompt`, rendered with the generation prompt) and the stop ids.
pub fn last_assistant_span(full: &[u32], prompt: &[u32], stop_ids: &[u32]) -> (usize, usize) {
    let start = full.iter().zip(prompt).take_while(|(a, b)| a == b).count();
    let end = full[start..].iter().rposition(|t| stop_ids.contains(t)).map_or(full.len(), |i| start + i + 1);
    (start, end)
}

/// Tokenises one conversation whose last message is the assistant's.
pub fn tokenize_chat(
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    index: usize,
) -> Result<TokenizedExample, TrainError> {
    let bad = |message: String| TrainError::Example { index, message };
    let (last, prompt) = messages.split_last().ok_or_else(|| bad("has no messages".into()))?;
    if last.role != "assistant" {
        return Err(bad(format!(
            "the last message must be the assistant's (it carries the loss), found role {:?}",
            last.role
        )));
    }
    let full = tokenizer.encode_chat(messages, false)?;
    let prompt_ids = tokenizer.encode_chat(prompt, true)?;
    let (start, end) = last_assistant_span(&full, &prompt_ids, tokenizer.eos_token_ids());
    if start >= end {
        return Err(bad("the chat template renders the last assistant message as no tokens".into()));
    }
    let input_ids: Vec<i64> = full.iter().map(|&t| t as i64).collect();
    let labels =
        input_ids.iter().enumerate().map(|(i, &t)| if (start..end).contains(&i) { t } else { IGNORE_INDEX }).collect();
    Ok(TokenizedExample { input_ids, labels })
}

/// Applies the truncation policy to `example`: `None` when it is dropped, with the reason counted in `stats`.
pub fn apply_block_size(
    mut example: TokenizedExample,
    block_size: usize,
    policy: Truncation,
    stats: &mut TokenizeStats,
) -> Option<TokenizedExample> {
    stats.given += 1;
    if example.len() > block_size {
        let cut = example.len() - block_size;
        match policy {
            Truncation::Drop => {
                stats.dropped_too_long += 1;
                return None;
            }
            Truncation::TruncateRight => {
                example.input_ids.truncate(block_size);
                example.labels.truncate(block_size);
            }
            Truncation::TruncateLeft => {
                example.input_ids.drain(..cut);
                example.labels.drain(..cut);
            }
        }
        if example.num_targets() == 0 {
            stats.dropped_no_labels += 1;
            return None;
        }
        stats.truncated += 1;
    } else if example.num_targets() == 0 {
        stats.dropped_no_labels += 1;
        return None;
    }
    stats.kept += 1;
    stats.tokens += example.len();
    stats.label_tokens += example.num_targets();
    Some(example)
}

/// Every conversation tokenised ([`tokenize_chat`]), in order, on all CPU cores: a paper-scale iteration trains on
/// up to 12,500 pairs, each rendered and encoded twice (whole, and its prompt) at ~1 ms an encoding on one core,
/// seconds of the fine-tuning phase with the GPU idle. The first failing conversation's error is returned.
fn tokenize_chats(tokenizer: &Tokenizer, chats: &[Vec<ChatMessage>]) -> Result<Vec<TokenizedExample>, TrainError> {
    crate::parallel::map_in_order(chats, 16, |i, chat| tokenize_chat(tokenizer, chat, i))
}

/// Tokenises every conversation and applies the block size; errors name the example.
pub fn tokenize_all(
    tokenizer: &Tokenizer,
    chats: &[Vec<ChatMessage>],
    block_size: usize,
    policy: Truncation,
) -> Result<(Vec<TokenizedExample>, TokenizeStats), TrainError> {
    let mut stats = TokenizeStats::default();
    let mut kept = Vec::with_capacity(chats.len());
    for example in tokenize_chats(tokenizer, chats)? {
        kept.extend(apply_block_size(example, block_size, policy, &mut stats));
    }
    if kept.is_empty() {
        return Err(TrainError::NoExamples {
            given: stats.given,
            too_long: stats.dropped_too_long,
            no_labels: stats.dropped_no_labels,
            block_size,
        });
    }
    Ok((kept, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(ids: &[i64], labelled: std::ops::Range<usize>) -> TokenizedExample {
        let labels =
            ids.iter().enumerate().map(|(i, &t)| if labelled.contains(&i) { t } else { IGNORE_INDEX }).collect();
        TokenizedExample { input_ids: ids.to_vec(), labels }
    }

    #[test]
    fn span_starts_after_prompt_and_ends_at_last_stop_token() {
        // prompt ... <start> assistant \n | a b c <end> \n
        let full = [1, 10, 11, 2, 5, 1, 20, 5, 30, 31, 32, 2, 5];
        let prompt = [1, 10, 11, 2, 5, 1, 20, 5];
        assert_eq!(last_assistant_span(&full, &prompt, &[2]), (8, 12));
        // No stop token after the prompt: everything after it.
        assert_eq!(last_assistant_span(&full[..11], &prompt, &[2]), (8, 11));
        // A BPE merge across the boundary: the span starts where the token sequences part.
        assert_eq!(last_assistant_span(&[7, 8, 9, 2], &[7, 99], &[2]), (1, 4));
    }

    #[test]
    fn truncation_policies_and_counts() {
        let ids: Vec<i64> = (0..10).collect();
        let mut stats = TokenizeStats::default();
        assert!(apply_block_size(example(&ids, 6..10), 8, Truncation::Drop, &mut stats).is_none());
        let left = apply_block_size(example(&ids, 6..10), 8, Truncation::TruncateLeft, &mut stats).unwrap();
        assert_eq!(left.input_ids, (2..10).collect::<Vec<_>>());
        assert_eq!(left.num_targets(), 4);
        let right = apply_block_size(example(&ids, 6..10), 8, Truncation::TruncateRight, &mut stats).unwrap();
        assert_eq!(right.input_ids, (0..8).collect::<Vec<_>>());
        assert_eq!(right.num_targets(), 2);
        // Cut from the right past every label: dropped, like the reference's label filter.
        assert!(apply_block_size(example(&ids, 9..10), 8, Truncation::TruncateRight, &mut stats).is_none());
        let fits = apply_block_size(example(&ids, 5..10), 10, Truncation::Drop, &mut stats).unwrap();
        assert_eq!(fits.num_targets(), 5);
        let expected = TokenizeStats {
            given: 5,
            kept: 3,
            truncated: 2,
            dropped_too_long: 1,
            dropped_no_labels: 1,
            tokens: 26,
            label_tokens: 11,
        };
        assert_eq!(stats, expected);
    }

    #[test]
    fn a_label_on_the_first_token_is_not_a_target() {
        assert_eq!(example(&[4, 5, 6], 0..3).num_targets(), 2);
    }
}
