//! Metrics: how well scores separate labelled positives from negatives, computed once here for
//! `riskstream eval`, the model cards and the benchmarks.
//!
//! In: `(score, positive)` pairs. Out: AUC-ROC (the probability a random positive outscores a
//! random negative, ties counting one half), AUC-PR as average precision (precision at each
//! positive, in descending score order, equal scores taken as one threshold), the best recall
//! at a false-positive rate, the confusion at a threshold, and calibration by score bins.

/// Confusion counts at one threshold (score ≥ threshold = flagged).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl Confusion {
    /// Of the flagged, the share that is positive (1 when nothing is flagged).
    pub fn precision(&self) -> f64 {
        let flagged = self.tp + self.fp;
        if flagged == 0 {
            1.0
        } else {
            self.tp as f64 / flagged as f64
        }
    }
    /// Of the positives, the share flagged (0 without positives).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// Of the negatives, the share flagged (0 without negatives).
    pub fn false_positive_rate(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The pairs sorted by descending score, grouped by equal score: `(score, positives, negatives)`.
fn thresholds(pairs: &[(f64, bool)]) -> Vec<(f64, u64, u64)> {
    let mut sorted: Vec<(f64, bool)> = pairs.iter().filter(|(s, _)| !s.is_nan()).copied().collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<(f64, u64, u64)> = Vec::new();
    for (s, positive) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == s => {
                if positive {
                    last.1 += 1
                } else {
                    last.2 += 1
                }
            }
            _ => out.push((s, positive as u64, !positive as u64)),
        }
    }
    out
}

fn totals(pairs: &[(f64, bool)]) -> (u64, u64) {
    let p = pairs.iter().filter(|(s, y)| *y && !s.is_nan()).count() as u64;
    let n = pairs.iter().filter(|(s, y)| !*y && !s.is_nan()).count() as u64;
    (p, n)
}

/// Area under the ROC curve; `None` without both positives and negatives.
pub fn auc_roc(pairs: &[(f64, bool)]) -> Option<f64> {
    let (p, n) = totals(pairs);
    if p == 0 || n == 0 {
        return None;
    }
    // Walking down the thresholds: each positive beats the negatives below it, ties count half.
    let mut negatives_below = n as f64;
    let mut wins = 0.0;
    for (_, pos, neg) in thresholds(pairs) {
        negatives_below -= neg as f64;
        wins += pos as f64 * (negatives_below + neg as f64 / 2.0);
    }
    Some(wins / (p as f64 * n as f64))
}

/// Area under the precision-recall curve as average precision; `None` without positives.
pub fn auc_pr(pairs: &[(f64, bool)]) -> Option<f64> {
    let (p, _) = totals(pairs);
    if p == 0 {
        return None;
    }
    let (mut tp, mut fp, mut sum) = (0u64, 0u64, 0.0);
    for (_, pos, neg) in thresholds(pairs) {
        tp += pos;
        fp += neg;
        sum += pos as f64 * tp as f64 / (tp + fp) as f64;
    }
    Some(sum / p as f64)
}

/// The highest recall at a threshold whose false-positive rate is at most `max_fpr`, with
/// that threshold; `None` without positives or negatives.
pub fn recall_at_fpr(pairs: &[(f64, bool)], max_fpr: f64) -> Option<(f64, f64)> {
    let (p, n) = totals(pairs);
    if p == 0 || n == 0 {
        return None;
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut best = (0.0, f64::INFINITY);
    for (s, pos, neg) in thresholds(pairs) {
        tp += pos;
        fp += neg;
        if fp as f64 / n as f64 <= max_fpr {
            best = (tp as f64 / p as f64, s);
        } else {
            break;
        }
    }
    Some(best)
}

/// The ROC curve as `(false-positive rate, true-positive rate)` points, one per distinct score
/// from the top, starting at (0, 0); empty without both positives and negatives.
pub fn roc_curve(pairs: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let (p, n) = totals(pairs);
    if p == 0 || n == 0 {
        return Vec::new();
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut out = vec![(0.0, 0.0)];
    for (_, pos, neg) in thresholds(pairs) {
        tp += pos;
        fp += neg;
        out.push((fp as f64 / n as f64, tp as f64 / p as f64));
    }
    out
}

/// The precision-recall curve as `(recall, precision)` points, one per distinct score from the
/// top; empty without positives.
pub fn pr_curve(pairs: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let (p, _) = totals(pairs);
    if p == 0 {
        return Vec::new();
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut out = Vec::new();
    for (_, pos, neg) in thresholds(pairs) {
        tp += pos;
        fp += neg;
        out.push((tp as f64 / p as f64, tp as f64 / (tp + fp) as f64));
    }
    out
}

/// Confusion counts at `threshold` (score ≥ threshold = flagged).
pub fn confusion_at(pairs: &[(f64, bool)], threshold: f64) -> Confusion {
    let mut c = Confusion::default();
    for (s, y) in pairs.iter().filter(|(s, _)| !s.is_nan()) {
        match (*s >= threshold, *y) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, true) => c.fn_ += 1,
            (false, false) => c.tn += 1,
        }
    }
    c
}

/// One calibration bin: scores in `[lo, hi)` (the last bin includes 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
    pub mean_score: f64,
    pub positive_rate: f64,
}

/// Calibration over `bins` equal-width bins of [0, 1] (empty bins omitted).
pub fn calibration(pairs: &[(f64, bool)], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut acc = vec![(0u64, 0.0f64, 0u64); bins];
    for (s, y) in pairs.iter().filter(|(s, _)| !s.is_nan()) {
        let i = ((s.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        acc[i].0 += 1;
        acc[i].1 += s;
        acc[i].2 += *y as u64;
    }
    acc.iter()
        .enumerate()
        .filter(|(_, a)| a.0 > 0)
        .map(|(i, (count, sum, pos))| CalibrationBin {
            lo: i as f64 / bins as f64,
            hi: (i + 1) as f64 / bins as f64,
            count: *count,
            mean_score: sum / *count as f64,
            positive_rate: *pos as f64 / *count as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positives at 0.9, 0.8, 0.6; negatives at 0.7, 0.55, 0.4.
    fn small() -> Vec<(f64, bool)> {
        vec![
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.55, false),
            (0.4, false),
        ]
    }

    #[test]
    fn hand_computed_case() {
        let pairs = small();
        // Pairs won: 0.9 and 0.8 beat all three negatives, 0.6 beats two: 8 of 9.
        assert!((auc_roc(&pairs).unwrap() - 8.0 / 9.0).abs() < 1e-12);
        // Precision at each positive: 1/1, 2/2, 3/4.
        assert!((auc_pr(&pairs).unwrap() - (1.0 + 1.0 + 0.75) / 3.0).abs() < 1e-12);
        // No negative flagged: threshold 0.8, recall 2/3; one of three allowed: recall 1 at 0.6.
        assert_eq!(recall_at_fpr(&pairs, 0.01), Some((2.0 / 3.0, 0.8)));
        assert_eq!(recall_at_fpr(&pairs, 1.0 / 3.0), Some((1.0, 0.6)));
        let c = confusion_at(&pairs, 0.65);
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 2,
                fn_: 1
            }
        );
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.false_positive_rate() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half_and_degenerate_inputs_have_no_auc() {
        assert_eq!(auc_roc(&[(0.5, true), (0.5, false)]), Some(0.5));
        // A tie at the top: precision at that threshold is 1/2 for the one positive.
        assert_eq!(auc_pr(&[(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(auc_roc(&[(0.5, true)]), None);
        assert_eq!(auc_pr(&[(0.5, false)]), None);
        assert_eq!(recall_at_fpr(&[(0.2, false)], 0.01), None);
        // A perfect ranking.
        let perfect = [(0.9, true), (0.1, false), (0.8, true), (0.2, false)];
        assert_eq!(auc_roc(&perfect), Some(1.0));
        assert_eq!(auc_pr(&perfect), Some(1.0));
    }

    #[test]
    fn curves_walk_the_thresholds() {
        let roc = roc_curve(&small());
        assert_eq!(roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
        assert_eq!(roc[2], (0.0, 2.0 / 3.0), "after 0.9 and 0.8");
        let pr = pr_curve(&small());
        assert_eq!(pr[0], (1.0 / 3.0, 1.0));
        assert_eq!(
            pr[3],
            (1.0, 0.75),
            "down to 0.6: 3 of 4 flagged are positive"
        );
        assert!(roc_curve(&[(0.1, true)]).is_empty());
    }

    #[test]
    fn calibration_bins_average_scores_and_outcomes() {
        let bins = calibration(&small(), 2);
        assert_eq!(bins.len(), 2);
        assert_eq!((bins[0].count, bins[1].count), (1, 5));
        assert!((bins[0].positive_rate - 0.0).abs() < 1e-12);
        assert!((bins[1].mean_score - (0.9 + 0.8 + 0.7 + 0.6 + 0.55) / 5.0).abs() < 1e-12);
        assert!((bins[1].positive_rate - 0.6).abs() < 1e-12);
    }

    #[test]
    fn auc_roc_equals_the_pairwise_definition_on_random_data() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20 {
            // Coarse scores, so ties are common.
            let pairs: Vec<(f64, bool)> = (0..200)
                .map(|_| ((next() % 20) as f64 / 20.0, next() % 3 == 0))
                .collect();
            let (pos, neg): (Vec<_>, Vec<_>) = pairs.iter().partition(|(_, y)| *y);
            let mut wins = 0.0;
            for (p, _) in &pos {
                for (n, _) in &neg {
                    wins += if p > n {
                        1.0
                    } else if p == n {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            let brute = wins / (pos.len() * neg.len()) as f64;
            assert!((auc_roc(&pairs).unwrap() - brute).abs() < 1e-12);
        }
    }
}
