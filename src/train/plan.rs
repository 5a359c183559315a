//! Step planning: which of a worker's examples of one optimiser step run together in one packed forward/backward
//! pass. The user's batch settings (per-device batch, accumulation, ranks) fix the optimisation: which examples form
//! the step and what each example's loss is divided by. They no longer fix the kernel shapes: a worker runs all the
//! examples its ranks own in a step in as few passes as a token budget allows, since gradients of one step add up
//! whichever pass an example ran in.
//!
//! Passes are filled first-fit decreasing (longest example first, into the first pass with room), which needs at
//! most one pass more than the fewest possible for these lengths in practice and never splits an example; an
//! example longer than the budget runs alone. Inside a pass the examples keep the step's order, so a plan reads
//! like the step it came from.

/// One example of a step as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedExample {
    /// Index into the training examples.
    pub example: usize,
    /// Its tokens.
    pub len: usize,
    /// What its summed token loss is divided by (its micro-batch's denominator, see
    /// [`super::trainer::Hyperparameters::loss_denominators`]).
    pub denominator: f64,
}

/// Groups `items` (a worker's examples of one step, in step order) into passes of at most `budget` tokens each
/// (an item longer than the budget gets a pass of its own). Every item lands in exactly one pass.
pub fn plan_passes(items: &[PlannedExample], budget: usize) -> Vec<Vec<PlannedExample>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Stable: equal lengths keep step order, so the plan is a function of the step alone.
    order.sort_by(|&a, &b| items[b].len.cmp(&items[a].len));
    let mut passes: Vec<(usize, Vec<usize>)> = Vec::new();
    for i in order {
        let len = items[i].len;
        match passes.iter_mut().find(|(used, _)| used + len <= budget) {
            Some((used, members)) => {
                *used += len;
                members.push(i);
            }
            None => passes.push((len, vec![i])),
        }
    }
    passes
        .into_iter()
        .map(|(_, mut members)| {
            members.sort_unstable();
            members.into_iter().map(|i| items[i]).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(lengths: &[usize]) -> Vec<PlannedExample> {
        lengths.iter().enumerate().map(|(k, &len)| PlannedExample { example: 10 + k, len, denominator: 1.0 }).collect()
    }

    fn examples_of(plan: &[Vec<PlannedExample>]) -> Vec<Vec<usize>> {
        plan.iter().map(|p| p.iter().map(|e| e.example).collect()).collect()
    }

    #[test]
    fn everything_fits_in_one_pass_when_the_budget_allows() {
        let plan = plan_passes(&items(&[560, 480, 610, 530]), 8192);
        assert_eq!(examples_of(&plan), vec![vec![10, 11, 12, 13]]);
    }

    #[test]
    fn passes_respect_the_budget_and_cover_every_example_once() {
        let lengths = [500, 300, 700, 200, 600, 400, 100, 650];
        for budget in [700, 1000, 1500, 2200] {
            let plan = plan_passes(&items(&lengths), budget);
            let mut seen: Vec<usize> = plan.concat().iter().map(|e| e.example).collect();
            seen.sort_unstable();
            assert_eq!(seen, (10..18).collect::<Vec<_>>(), "budget {budget}");
            for pass in &plan {
                assert!(pass.iter().map(|e| e.len).sum::<usize>() <= budget, "budget {budget}: {plan:?}");
                assert!(pass.windows(2).all(|w| w[0].example < w[1].example), "step order inside a pass");
            }
            // First-fit decreasing is within one pass of the lower bound on these lengths.
            let lower = lengths.iter().sum::<usize>().div_ceil(budget);
            assert!(plan.len() <= lower + 1, "budget {budget}: {} passes, bound {lower}", plan.len());
        }
        // 3450 tokens in budget 1000: four passes of [700, 300], [650, 200, 100], [600, 400], [500].
        assert_eq!(examples_of(&plan_passes(&items(&lengths), 1000)).len(), 4);
    }

    #[test]
    fn an_example_longer_than_the_budget_runs_alone() {
        let plan = plan_passes(&items(&[900, 100, 50]), 500);
        assert_eq!(examples_of(&plan), vec![vec![10], vec![11, 12]]);
        assert!(plan_passes(&[], 100).is_empty());
    }

    #[test]
    fn denominators_travel_with_their_examples() {
        let mut it = items(&[5, 6, 7]);
        it[1].denominator = 22.0;
        let plan = plan_passes(&it, 100);
        assert_eq!(plan[0][1], PlannedExample { example: 11, len: 6, denominator: 22.0 });
    }
}
