//! The dead-letter cap (after rust-arroyo's `DlqLimit`): when a deploy bug upstream makes
//! every record invalid, a worker should stop loudly instead of dead-lettering all traffic
//! forever.
//!
//! Two limits, either may trip: `max_consecutive` invalid records in a row, or more than
//! `max_ratio` of the last [`WINDOW`] records invalid (checked once a tenth of the window has
//! been seen, so a worker's first records do not decide alone). Defaults tolerate bursts (the
//! demo injects three bad records in a row; a bad producer instance among many stays under the
//! ratio).

use std::collections::VecDeque;

/// Records the ratio is computed over.
pub const WINDOW: usize = 10_000;

/// The limits; `0` / `≥ 1.0` turn one off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DlqLimit {
    pub max_consecutive: u64,
    pub max_ratio: f64,
}

impl Default for DlqLimit {
    fn default() -> Self {
        DlqLimit {
            max_consecutive: 1_000,
            max_ratio: 0.5,
        }
    }
}

/// Why the cap tripped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapTripped {
    #[error("{0} invalid records in a row (dead-letter cap --dlq-max-consecutive)")]
    Consecutive(u64),
    #[error("{invalid} of the last {seen} records invalid, more than {max_ratio} (dead-letter cap --dlq-max-ratio)")]
    Ratio {
        invalid: u64,
        seen: u64,
        max_ratio: f64,
    },
}

/// The running counts.
#[derive(Debug)]
pub struct DlqLimitState {
    limit: DlqLimit,
    consecutive: u64,
    recent: VecDeque<bool>,
    invalid_in_window: u64,
}

impl DlqLimitState {
    pub fn new(limit: DlqLimit) -> Self {
        DlqLimitState {
            limit,
            consecutive: 0,
            recent: VecDeque::with_capacity(WINDOW),
            invalid_in_window: 0,
        }
    }

    /// Records one record's outcome (`true` = invalid, dead-lettered); `Err` once a limit is
    /// exceeded.
    pub fn observe(&mut self, invalid: bool) -> Result<(), CapTripped> {
        if invalid {
            self.consecutive += 1;
        } else {
            self.consecutive = 0;
        }
        if self.recent.len() == WINDOW && self.recent.pop_front() == Some(true) {
            self.invalid_in_window -= 1;
        }
        self.recent.push_back(invalid);
        self.invalid_in_window += invalid as u64;
        if self.limit.max_consecutive > 0 && self.consecutive >= self.limit.max_consecutive {
            return Err(CapTripped::Consecutive(self.consecutive));
        }
        let seen = self.recent.len() as u64;
        if self.limit.max_ratio < 1.0
            && seen >= (WINDOW / 10) as u64
            && self.invalid_in_window as f64 > self.limit.max_ratio * seen as f64
        {
            return Err(CapTripped::Ratio {
                invalid: self.invalid_in_window,
                seen,
                max_ratio: self.limit.max_ratio,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_floods_trip() {
        let mut s = DlqLimitState::new(DlqLimit {
            max_consecutive: 5,
            max_ratio: 0.5,
        });
        // Bursts of four with valid records between: never five in a row, ratio under half.
        for _ in 0..500 {
            for _ in 0..4 {
                s.observe(true).unwrap();
            }
            for _ in 0..6 {
                s.observe(false).unwrap();
            }
        }
        for _ in 0..4 {
            s.observe(true).unwrap();
        }
        assert_eq!(s.observe(true), Err(CapTripped::Consecutive(5)));
    }

    #[test]
    fn the_ratio_needs_a_tenth_of_the_window_and_forgets_old_records() {
        let mut s = DlqLimitState::new(DlqLimit {
            max_consecutive: 0,
            max_ratio: 0.5,
        });
        // Alternating bad, bad, good: two thirds invalid, but only decided after 1 000 records.
        let mut tripped_at = None;
        for i in 0..3_000u64 {
            if s.observe(i % 3 != 2).is_err() {
                tripped_at = Some(i + 1);
                break;
            }
        }
        assert_eq!(tripped_at, Some(1_000));
        // A long clean history pushes an old flood out of the window.
        let mut s = DlqLimitState::new(DlqLimit {
            max_consecutive: 0,
            max_ratio: 0.5,
        });
        for _ in 0..400 {
            s.observe(true).unwrap();
        }
        for _ in 0..WINDOW {
            s.observe(false).unwrap();
        }
        // Exactly half of the window: fine only if the first 400 were forgotten.
        for _ in 0..5_000 {
            s.observe(true).unwrap();
        }
        assert!(s.observe(true).is_err(), "5 001 of 10 000 is over half");
        // Off.
        let mut s = DlqLimitState::new(DlqLimit {
            max_consecutive: 0,
            max_ratio: 1.0,
        });
        for _ in 0..20_000 {
            s.observe(true).unwrap();
        }
    }
}
