//! The Hermes marketplace's trust formula, over the tasks an agent reported.
//!
//! Hermes (an agent marketplace) scores an agent from its contract records: each record says
//! whether the task succeeded, how long it took against the time promised, and optionally a
//! 1–5 star rating. This module keeps the running totals of those records ([`Tally`]) and turns
//! them into Hermes's five components, its 0.0–1.0 trust score, its letter grade and its
//! badges. Nothing here knows about heartbeats: `lib.rs` decides which heartbeat is a record.

/// Weights of the five components, in Hermes's order.
pub const WEIGHTS: Components = Components {
    success_rate: 0.40,
    latency_score: 0.20,
    rating_score: 0.20,
    uptime_score: 0.10,
    consistency_score: 0.10,
};
/// What every component and the trust score are before the first record (Hermes's default).
pub const NEUTRAL: f64 = 0.5;
/// Days on the network at which the uptime component is full.
pub const FULL_TENURE_DAYS: i64 = 365;
const DAY_MS: i64 = 86_400_000;

/// One task an agent reported (a Hermes contract record).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Task {
    /// Whether it succeeded.
    pub success: bool,
    /// How long it ran, in milliseconds, if reported.
    pub execution_ms: Option<f64>,
    /// The time promised for it, in milliseconds, if reported.
    pub promised_ms: Option<f64>,
    /// The user's rating, 1 to 5 stars, if reported.
    pub rating: Option<f64>,
}

/// Running totals of every task reported: all a score needs, in constant space.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tally {
    /// Tasks reported.
    pub tasks: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that reported an execution time.
    pub timed: u64,
    /// Sum of the reported execution times, in milliseconds.
    pub execution_ms_sum: f64,
    /// Latency samples (tasks with an execution time and a promised time above 0).
    pub latency_n: u64,
    /// Their mean (Welford's running mean).
    pub latency_mean: f64,
    /// Their sum of squared deviations from the mean (Welford's M2).
    pub latency_m2: f64,
    /// Ratings reported.
    pub rated: u64,
    /// Their sum, in stars.
    pub rating_sum: f64,
}

/// The five components, each 0.0 to 1.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Components {
    /// Share of tasks that succeeded.
    pub success_rate: f64,
    /// Mean latency sample: 1.0 at or under the promised time, minus the overrun's share of
    /// it (twice the promised time or more scores 0).
    pub latency_score: f64,
    /// Mean rating, 1 star = 0.0 to 5 stars = 1.0.
    pub rating_score: f64,
    /// Whole days since registration / 365, capped at 1.0.
    pub uptime_score: f64,
    /// 1.0 minus the variance of the latency samples, floored at 0.0.
    pub consistency_score: f64,
}

/// The latency sample of one task (Hermes: `max(0, min(1, 1 - (execution/promised - 1)))`).
pub fn latency_sample(execution_ms: f64, promised_ms: f64) -> f64 {
    (2.0 - execution_ms / promised_ms).clamp(0.0, 1.0)
}

impl Tally {
    /// Adds one task.
    pub fn add(&mut self, task: &Task) {
        self.tasks = self.tasks.saturating_add(1);
        if task.success {
            self.succeeded = self.succeeded.saturating_add(1);
        }
        if let Some(execution) = task.execution_ms {
            self.timed = self.timed.saturating_add(1);
            self.execution_ms_sum += execution;
            if let Some(promised) = task.promised_ms.filter(|p| *p > 0.0) {
                let sample = latency_sample(execution, promised);
                self.latency_n = self.latency_n.saturating_add(1);
                let delta = sample - self.latency_mean;
                self.latency_mean += delta / self.latency_n as f64;
                self.latency_m2 += delta * (sample - self.latency_mean);
            }
        }
        if let Some(stars) = task.rating {
            self.rated = self.rated.saturating_add(1);
            self.rating_sum += stars.clamp(1.0, 5.0);
        }
    }

    /// Tasks that failed.
    pub fn failed(&self) -> u64 {
        self.tasks - self.succeeded
    }

    /// Mean execution time in seconds over the tasks that reported one (0 when none did).
    pub fn avg_execution_seconds(&self) -> f64 {
        if self.timed == 0 {
            0.0
        } else {
            self.execution_ms_sum / self.timed as f64 / 1000.0
        }
    }

    /// The five components at `now_ms` for an agent registered at `registered_at_ms`.
    ///
    /// Before the first task, Hermes's defaults: 0.5 each and uptime 0.0.
    pub fn components(&self, registered_at_ms: i64, now_ms: i64) -> Components {
        if self.tasks == 0 {
            return Components {
                success_rate: NEUTRAL,
                latency_score: NEUTRAL,
                rating_score: NEUTRAL,
                uptime_score: 0.0,
                consistency_score: NEUTRAL,
            };
        }
        let days = now_ms.saturating_sub(registered_at_ms).max(0) / DAY_MS;
        Components {
            success_rate: self.succeeded as f64 / self.tasks as f64,
            latency_score: if self.latency_n == 0 {
                NEUTRAL
            } else {
                self.latency_mean
            },
            rating_score: if self.rated == 0 {
                NEUTRAL
            } else {
                (self.rating_sum / self.rated as f64 - 1.0) / 4.0
            },
            uptime_score: (days as f64 / FULL_TENURE_DAYS as f64).min(1.0),
            consistency_score: if self.latency_n > 1 {
                (1.0 - self.latency_m2 / self.latency_n as f64).max(0.0)
            } else {
                NEUTRAL
            },
        }
    }

    /// The trust score, 0.0 to 1.0: the weighted sum, or 0.5 before the first task.
    pub fn trust_score(&self, c: &Components) -> f64 {
        if self.tasks == 0 {
            return NEUTRAL;
        }
        (c.success_rate * WEIGHTS.success_rate
            + c.latency_score * WEIGHTS.latency_score
            + c.rating_score * WEIGHTS.rating_score
            + c.uptime_score * WEIGHTS.uptime_score
            + c.consistency_score * WEIGHTS.consistency_score)
            .clamp(0.0, 1.0)
    }

    /// Hermes's badges for this tally (the trust, count and performance ladders each give at
    /// most one).
    pub fn badges(&self, trust: f64, c: &Components) -> Vec<&'static str> {
        let mut badges = Vec::new();
        if trust >= 0.95 {
            badges.push("elite");
        } else if trust >= 0.85 {
            badges.push("verified-pro");
        } else if trust >= 0.70 {
            badges.push("verified");
        }
        if self.tasks >= 1000 {
            badges.push("veteran");
        } else if self.tasks >= 100 {
            badges.push("experienced");
        }
        if c.success_rate >= 0.99 {
            badges.push("perfect");
        } else if c.success_rate >= 0.95 {
            badges.push("reliable");
        }
        if c.latency_score >= 0.90 {
            badges.push("lightning-fast");
        }
        badges
    }
}

/// Hermes's letter grade of a trust score (A+ from 0.95 down to C- from 0.55, then D), with
/// F added below 0.50: worse than an agent nobody knows anything about (0.5).
pub fn grade(trust: f64) -> &'static str {
    const GRADES: [(f64, &str); 10] = [
        (0.95, "A+"),
        (0.90, "A"),
        (0.85, "A-"),
        (0.80, "B+"),
        (0.75, "B"),
        (0.70, "B-"),
        (0.65, "C+"),
        (0.60, "C"),
        (0.55, "C-"),
        (0.50, "D"),
    ];
    GRADES
        .iter()
        .find(|(min, _)| trust >= *min)
        .map_or("F", |(_, letter)| letter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(success: bool, execution: f64, promised: f64, rating: f64) -> Task {
        Task {
            success,
            execution_ms: Some(execution),
            promised_ms: Some(promised),
            rating: Some(rating),
        }
    }

    /// Hermes's own example run (`reputation.py`'s self-test: 2.5 s of 3, 1.8 s of 2, a
    /// failed 5 s of 3; ratings 5, 4, 2), computed here the way Hermes does, two-pass.
    #[test]
    fn matches_hermes_on_its_own_example() {
        let mut tally = Tally::default();
        for t in [
            task(true, 2500.0, 3000.0, 5.0),
            task(true, 1800.0, 2000.0, 4.0),
            task(false, 5000.0, 3000.0, 2.0),
        ] {
            tally.add(&t);
        }
        let registered = 0;
        let now = 73 * DAY_MS + 5_000; // 73 whole days: uptime 0.2
        let c = tally.components(registered, now);
        let samples = [1.0, 1.0, 2.0 - 5.0 / 3.0];
        let mean = samples.iter().sum::<f64>() / 3.0;
        let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
        assert!((c.success_rate - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.latency_score - mean).abs() < 1e-12);
        assert!((c.rating_score - (11.0 / 3.0 - 1.0) / 4.0).abs() < 1e-12);
        assert!((c.uptime_score - 0.2).abs() < 1e-12);
        assert!((c.consistency_score - (1.0 - variance)).abs() < 1e-12);
        let expected = 0.4 * (2.0 / 3.0)
            + 0.2 * mean
            + 0.2 * ((11.0 / 3.0 - 1.0) / 4.0)
            + 0.1 * 0.2
            + 0.1 * (1.0 - variance);
        let trust = tally.trust_score(&c);
        assert!((trust - expected).abs() < 1e-12);
        assert_eq!(grade(trust), "C+");
        assert!(tally.badges(trust, &c).is_empty());
        assert_eq!(tally.failed(), 1);
        assert!((tally.avg_execution_seconds() - 3.1).abs() < 1e-12);
    }

    #[test]
    fn before_any_task_everything_is_neutral() {
        let tally = Tally::default();
        let c = tally.components(0, 400 * DAY_MS);
        assert_eq!(tally.trust_score(&c), 0.5);
        assert_eq!(c.uptime_score, 0.0);
        assert_eq!(grade(0.5), "D");
        assert!(tally.badges(0.5, &c).is_empty());
    }

    #[test]
    fn grades_and_badge_ladders() {
        assert_eq!(grade(1.0), "A+");
        assert_eq!(grade(0.95), "A+");
        assert_eq!(grade(0.9499), "A");
        assert_eq!(grade(0.80), "B+");
        assert_eq!(grade(0.55), "C-");
        assert_eq!(grade(0.4999), "F");
        let mut tally = Tally::default();
        for _ in 0..1000 {
            tally.add(&task(true, 900.0, 1000.0, 5.0));
        }
        let c = tally.components(0, 365 * DAY_MS);
        let trust = tally.trust_score(&c);
        assert_eq!(trust, 1.0);
        assert_eq!(
            tally.badges(trust, &c),
            ["elite", "veteran", "perfect", "lightning-fast"]
        );
        let mut hundred = Tally::default();
        for i in 0..100 {
            hundred.add(&task(i >= 4, 1000.0, 1000.0, 3.0));
        }
        let c = hundred.components(0, 0);
        let trust = hundred.trust_score(&c);
        assert_eq!(
            hundred.badges(trust, &c),
            ["verified", "experienced", "reliable", "lightning-fast"]
        );
    }
}
