//! How many optimiser steps a run takes and the learning rate of each, exactly as HF Trainer (transformers 5.x,
//! `Trainer.set_initial_training_values` and `optimization.py`) computes them:
//! - update steps per epoch = ceil(micro-batches per epoch / gradient_accumulation_steps) (the last step of an epoch
//!   takes the remaining micro-batches);
//! - total steps = max_steps when set, else ceil(num_train_epochs * steps per epoch);
//! - warm-up steps = warmup_steps when > 0, else ceil(total * warmup_ratio);
//! - step k (0-based) uses base_lr * lambda(k), where lambda is the `LambdaLR` factor of the schedule, so a run with
//!   warm-up starts at lr 0.

use std::f64::consts::PI;

use crate::config::LrSchedulerType;

/// The schedule of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Which decay follows the warm-up.
    pub kind: LrSchedulerType,
    /// The peak learning rate.
    pub base_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Total optimiser steps.
    pub total_steps: usize,
}

impl LrSchedule {
    /// HF's rule for the warm-up length: an explicit count wins, else the ratio of the total, rounded up.
    pub fn warmup_steps(total_steps: usize, warmup_steps: usize, warmup_ratio: f64) -> usize {
        if warmup_steps > 0 {
            warmup_steps
        } else {
            (total_steps as f64 * warmup_ratio).ceil() as usize
        }
    }

    /// The multiplier of the base rate at 0-based step `step` (transformers' lr_lambda functions).
    pub fn factor(&self, step: usize) -> f64 {
        let (k, w, n) = (step as f64, self.warmup_steps as f64, self.total_steps as f64);
        let warming = step < self.warmup_steps;
        let warm = k / w.max(1.0);
        match self.kind {
            LrSchedulerType::Constant => 1.0,
            LrSchedulerType::ConstantWithWarmup => {
                if warming {
                    warm
                } else {
                    1.0
                }
            }
            LrSchedulerType::Linear => {
                if warming {
                    warm
                } else {
                    ((n - k) / (n - w).max(1.0)).max(0.0)
                }
            }
            LrSchedulerType::Cosine => {
                if warming {
                    warm
                } else {
                    let progress = (k - w) / (n - w).max(1.0);
                    (0.5 * (1.0 + (PI * 0.5 * 2.0 * progress).cos())).max(0.0)
                }
            }
        }
    }

    /// The learning rate at 0-based step `step`.
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }
}

/// How the micro-batches of a run map to optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPlan {
    /// Micro-batches in one pass over the data.
    pub micro_batches_per_epoch: usize,
    /// Optimiser steps in one pass over the data.
    pub steps_per_epoch: usize,
    /// Optimiser steps of the run.
    pub total_steps: usize,
    /// Passes over the data started (the last may stop early).
    pub epochs: usize,
}

impl StepPlan {
    /// HF's step arithmetic for `examples` examples.
    pub fn new(examples: usize, batch_size: usize, accumulation: usize, epochs: f64, max_steps: Option<usize>) -> Self {
        let micro = examples.div_ceil(batch_size.max(1));
        let per_epoch = micro.div_ceil(accumulation.max(1)).max(1);
        let total = max_steps.unwrap_or_else(|| (epochs * per_epoch as f64).ceil() as usize);
        StepPlan {
            micro_batches_per_epoch: micro,
            steps_per_epoch: per_epoch,
            total_steps: total,
            epochs: total.div_ceil(per_epoch),
        }
    }

    /// The number of micro-batches accumulated by step `index_in_epoch` (0-based) of an epoch.
    pub fn micro_batches_of_step(&self, index_in_epoch: usize, accumulation: usize) -> usize {
        let start = index_in_epoch * accumulation;
        accumulation.min(self.micro_batches_per_epoch.saturating_sub(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_and_total_steps_follow_hf() {
        assert_eq!(LrSchedule::warmup_steps(100, 0, 0.03), 3);
        assert_eq!(LrSchedule::warmup_steps(10, 0, 0.03), 1);
        assert_eq!(LrSchedule::warmup_steps(10, 4, 0.5), 4);
        let plan = StepPlan::new(11, 2, 4, 1.0, None);
        assert_eq!((plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps, plan.epochs), (6, 2, 2, 1));
        assert_eq!((plan.micro_batches_of_step(0, 4), plan.micro_batches_of_step(1, 4)), (4, 2));
        let plan = StepPlan::new(11, 2, 4, 1.5, None);
        assert_eq!((plan.total_steps, plan.epochs), (3, 2));
        let plan = StepPlan::new(11, 2, 1, 3.0, Some(7));
        assert_eq!((plan.total_steps, plan.epochs), (7, 2));
    }

    #[test]
    fn warmup_starts_at_zero_and_cosine_ends_near_zero() {
        let s = LrSchedule { kind: LrSchedulerType::Cosine, base_lr: 1e-4, warmup_steps: 2, total_steps: 10 };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(1), 0.5e-4);
        assert_eq!(s.lr(2), 1e-4);
        assert!(s.lr(9) < 0.05e-4 && s.lr(9) > 0.0);
        let c = LrSchedule { kind: LrSchedulerType::Constant, ..s };
        assert_eq!(c.lr(0), 1e-4);
    }
}
