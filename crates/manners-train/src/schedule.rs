//! Learning-rate schedules: a pure function of the step, so resuming needs no scheduler state.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Half a cosine from the peak down to the floor.
    #[default]
    Cosine,
    /// A straight line from the peak down to the floor.
    Linear,
    /// The peak, held.
    Constant,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(ScheduleKind::Cosine),
            "linear" => Ok(ScheduleKind::Linear),
            "constant" => Ok(ScheduleKind::Constant),
            other => Err(format!(
                "unknown schedule `{other}` (cosine, linear, constant)"
            )),
        }
    }
}

/// Warmup then decay, with a floor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Floor as a fraction of the peak (e.g. 0.1).
    pub min_lr_ratio: f64,
    /// Steps of linear warmup from lr/warmup to lr.
    pub warmup: u64,
    /// Total optimiser steps.
    pub total: u64,
}

impl Schedule {
    /// Learning rate of step `step` (1-based: the first optimiser step is step 1).
    pub fn lr_at(&self, step: u64) -> f64 {
        let step = step.max(1);
        if step <= self.warmup {
            return self.lr * step as f64 / self.warmup as f64;
        }
        let floor = self.lr * self.min_lr_ratio;
        let span = self.total.saturating_sub(self.warmup);
        if span == 0 {
            return self.lr;
        }
        let progress = ((step - self.warmup) as f64 / span as f64).clamp(0.0, 1.0);
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Linear => floor + (self.lr - floor) * (1.0 - progress),
            ScheduleKind::Cosine => {
                floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn warmup_then_cosine_with_floor() {
        let s = Schedule {
            kind: ScheduleKind::Cosine,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup: 10,
            total: 110,
        };
        assert!(close(s.lr_at(1), 1e-4));
        assert!(close(s.lr_at(10), 1e-3));
        // Half way through the decay: floor + (peak - floor) / 2.
        assert!(close(s.lr_at(60), 1e-4 + 0.5 * 9e-4));
        assert!(close(s.lr_at(110), 1e-4));
        assert!(
            close(s.lr_at(500), 1e-4),
            "past the end it stays at the floor"
        );
        // Monotone non-increasing after warmup.
        let v: Vec<f64> = (10..=110).map(|i| s.lr_at(i)).collect();
        assert!(v.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn linear_and_constant() {
        let l = Schedule {
            kind: ScheduleKind::Linear,
            lr: 2.0,
            min_lr_ratio: 0.0,
            warmup: 0,
            total: 4,
        };
        assert_eq!([l.lr_at(1), l.lr_at(2), l.lr_at(4)], [1.5, 1.0, 0.0]);
        let c = Schedule {
            kind: ScheduleKind::Constant,
            lr: 2.0,
            min_lr_ratio: 0.0,
            warmup: 2,
            total: 4,
        };
        assert_eq!(
            [c.lr_at(1), c.lr_at(2), c.lr_at(3), c.lr_at(4)],
            [1.0, 2.0, 2.0, 2.0]
        );
    }
}
