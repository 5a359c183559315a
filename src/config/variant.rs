//! The paper's three-letter variant names (`EIE`, `FNF`, ...): the one place letters are mapped to settings and back.
//! The first letter says where initial answers come from (E evolving, F fixed: `initial_answer_with_new_model`), the
//! second which correction filter keeps pairs (I improving, N the protocol's N filter: `only_better_correction`; a
//! sweep grid also takes C for `correct_to_correct`), the third which model fine-tuning starts from (E from M_n, F from
//! M0: `train_from_initial_model`). The loop names its runs with [`Variant`], sweeps read letters with the
//! `from_letter` functions, and the report asks [`FilterLetter::of_variant`] which filter a variant name says.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::choices::CorrectionFilter;

/// The letter of an evolving choice (first and third positions).
const EVOLVING: char = 'E';
/// The letter of a fixed choice (first and third positions).
const FIXED: char = 'F';

/// A choice between evolving (E: the current model M_n) and fixed (F: M0): the variant's first and third letters.
pub trait EvolvingOrFixed: Sized {
    /// Whether it is the evolving choice.
    fn is_evolving(&self) -> bool;

    /// The evolving choice (`true`) or the fixed one.
    fn evolving(evolving: bool) -> Self;

    /// Its letter, E or F.
    fn letter(&self) -> char {
        if self.is_evolving() {
            EVOLVING
        } else {
            FIXED
        }
    }

    /// The choice a letter names, if it is E or F.
    fn from_letter(letter: char) -> Option<Self> {
        match letter {
            EVOLVING => Some(Self::evolving(true)),
            FIXED => Some(Self::evolving(false)),
            _ => None,
        }
    }
}

/// Where initial answers come from (`initial_answer_with_new_model`); the variant's first letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initialization {
    /// E: at every iteration, sampled from the current model M_n.
    Evolving,
    /// F: sampled once from M0 before the loop and reused.
    Fixed,
}

impl Initialization {
    /// The choice `initial_answer_with_new_model: new_model` makes: the new model's answers are evolving ones.
    pub fn from_new_model(new_model: bool) -> Self {
        Self::evolving(new_model)
    }

    /// The value of `initial_answer_with_new_model` that makes this choice.
    pub fn new_model(self) -> bool {
        self.is_evolving()
    }
}

/// Which model a fine-tuning run starts from (`train_from_initial_model`); the variant's third letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FineTuning {
    /// E: M_{n+1} is fine-tuned from M_n.
    Evolving,
    /// F: M_{n+1} is fine-tuned from M0.
    Fixed,
}

impl FineTuning {
    /// The choice `train_from_initial_model: from_initial` makes: training from M0 is the fixed choice.
    pub fn from_initial_model(from_initial: bool) -> Self {
        Self::evolving(!from_initial)
    }

    /// The value of `train_from_initial_model` that makes this choice.
    pub fn initial_model(self) -> bool {
        !self.is_evolving()
    }
}

/// Implements [`EvolvingOrFixed`] for enums with the variants `Evolving` and `Fixed`.
macro_rules! evolving_or_fixed {
    ($($name:ident),+) => {
        $(impl EvolvingOrFixed for $name {
            fn is_evolving(&self) -> bool {
                *self == $name::Evolving
            }

            fn evolving(evolving: bool) -> Self {
                if evolving {
                    $name::Evolving
                } else {
                    $name::Fixed
                }
            }
        })+
    };
}

evolving_or_fixed!(Initialization, FineTuning);

/// The variant's second letter: which correction filter keeps pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterLetter {
    /// I: the improving filter (`only_better_correction: true`).
    Improving,
    /// N: `only_better_correction: false`, whichever N filter the protocol gives it (stasc: non_decreasing, paper:
    /// correct_to_correct).
    N,
    /// C: correct_to_correct whatever the protocol. Sweep grids accept it; run names never carry it (such a run is
    /// an N run, and its filter is in the resolved config).
    CorrectToCorrect,
}

impl FilterLetter {
    /// Its letter, I, N or C.
    pub fn letter(self) -> char {
        match self {
            FilterLetter::Improving => 'I',
            FilterLetter::N => 'N',
            FilterLetter::CorrectToCorrect => 'C',
        }
    }

    /// The filter a letter names, if it is I, N or C.
    pub fn from_letter(letter: char) -> Option<Self> {
        [FilterLetter::Improving, FilterLetter::N, FilterLetter::CorrectToCorrect]
            .into_iter()
            .find(|f| f.letter() == letter)
    }

    /// The letter a run with `filter` is named by: I for improving, N for either N filter.
    pub fn of(filter: CorrectionFilter) -> Self {
        match filter {
            CorrectionFilter::Improving => FilterLetter::Improving,
            CorrectionFilter::NonDecreasing | CorrectionFilter::CorrectToCorrect => FilterLetter::N,
        }
    }

    /// The filter letter of a variant name (its second letter), if it is one.
    pub fn of_variant(variant: &str) -> Option<Self> {
        variant.chars().nth(1).and_then(Self::from_letter)
    }

    /// The stasc_config settings the letter makes: `only_better_correction`, and the `filter` it names (None: the
    /// protocol's default for that `only_better_correction` decides).
    pub fn settings(self) -> (bool, Option<CorrectionFilter>) {
        match self {
            FilterLetter::Improving => (true, None),
            FilterLetter::N => (false, None),
            FilterLetter::CorrectToCorrect => (false, Some(CorrectionFilter::CorrectToCorrect)),
        }
    }
}

/// A three-letter variant name, e.g. `EIE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// The first letter.
    pub initialization: Initialization,
    /// The second letter.
    pub filter: FilterLetter,
    /// The third letter.
    pub fine_tuning: FineTuning,
}

impl Variant {
    /// The name of a run with these choices. The letter N stands for `only_better_correction: false`, whichever N
    /// filter (non_decreasing, correct_to_correct) the protocol gives it.
    pub fn of(initialization: Initialization, filter: CorrectionFilter, fine_tuning: FineTuning) -> Self {
        Variant { initialization, filter: FilterLetter::of(filter), fine_tuning }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.initialization.letter(), self.filter.letter(), self.fine_tuning.letter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip() {
        for i in [Initialization::Evolving, Initialization::Fixed] {
            assert_eq!(Initialization::from_letter(i.letter()), Some(i));
            assert_eq!(Initialization::from_new_model(i.new_model()), i);
        }
        for f in [FineTuning::Evolving, FineTuning::Fixed] {
            assert_eq!(FineTuning::from_letter(f.letter()), Some(f));
            assert_eq!(FineTuning::from_initial_model(f.initial_model()), f);
        }
        for f in [FilterLetter::Improving, FilterLetter::N, FilterLetter::CorrectToCorrect] {
            assert_eq!(FilterLetter::from_letter(f.letter()), Some(f));
        }
        assert_eq!(Initialization::from_letter('X'), None);
        assert_eq!(FilterLetter::from_letter('E'), None);
    }

    #[test]
    fn names_follow_the_paper() {
        let name = |i, f, t| Variant::of(i, f, t).to_string();
        assert_eq!(name(Initialization::Evolving, CorrectionFilter::Improving, FineTuning::Evolving), "EIE");
        assert_eq!(name(Initialization::Fixed, CorrectionFilter::NonDecreasing, FineTuning::Fixed), "FNF");
        assert_eq!(name(Initialization::Evolving, CorrectionFilter::CorrectToCorrect, FineTuning::Fixed), "ENF");
        // train_from_initial_model: true is Fixed fine-tuning (F), initial_answer_with_new_model: true Evolving (E).
        assert_eq!(FineTuning::from_initial_model(true).letter(), 'F');
        assert_eq!(Initialization::from_new_model(true).letter(), 'E');
        assert_eq!(FilterLetter::of_variant("FNF"), Some(FilterLetter::N));
        assert_eq!(FilterLetter::of_variant("?"), None);
        assert_eq!(FilterLetter::CorrectToCorrect.settings(), (false, Some(CorrectionFilter::CorrectToCorrect)));
    }
}
