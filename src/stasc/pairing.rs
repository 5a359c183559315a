//! Which (initial answer, correction) pairs of the train split an iteration considers: the candidates the filter
//! chooses training data from, and the pairs its train transitions count (the reference counted both over the same
//! cross product).

use std::collections::BTreeMap;

use super::records::{CorrectionRecord, InitialRecord, Split};
use super::spec::Pairing;

/// The train split's candidate pairs in a stable order: by initial answer (question order, then sample), then by
/// correction (the initial answer it was sampled for, then its sample index). Err names a correction whose initial
/// answer is missing.
pub fn candidate_pairs<'a>(
    pairing: Pairing,
    initial: &'a [InitialRecord],
    corrections: &'a [CorrectionRecord],
) -> Result<Vec<(&'a InitialRecord, &'a CorrectionRecord)>, String> {
    let train_initial: Vec<&InitialRecord> = initial.iter().filter(|r| r.split == Split::Train).collect();
    let by_key: BTreeMap<(&str, usize), &InitialRecord> =
        train_initial.iter().map(|r| ((r.id.as_str(), r.sample), *r)).collect();
    let mut by_question: BTreeMap<&str, Vec<&CorrectionRecord>> = BTreeMap::new();
    for c in corrections.iter().filter(|c| c.split == Split::Train) {
        if !by_key.contains_key(&(c.id.as_str(), c.initial_sample)) {
            return Err(format!("correction of {} refers to missing initial answer {}", c.id, c.initial_sample));
        }
        by_question.entry(c.id.as_str()).or_default().push(c);
    }
    for list in by_question.values_mut() {
        list.sort_by_key(|c| (c.initial_sample, c.sample));
    }
    let mut pairs = Vec::new();
    for init in train_initial {
        let Some(of_question) = by_question.get(init.id.as_str()) else { continue };
        match pairing {
            Pairing::PerInitial => {
                pairs.extend(of_question.iter().filter(|c| c.initial_sample == init.sample).map(|c| (init, *c)))
            }
            Pairing::AllPairs => pairs.extend(of_question.iter().map(|c| (init, *c))),
        }
    }
    Ok(pairs)
}
