//! Latency histograms and the summary of repeated measurements.
//!
//! Latencies are recorded in microseconds in an HDR histogram (3 significant digits, up to
//! one minute), one per client task so the hot path takes no lock; the phase merges them.
//! Repetitions are summarised as median and min–max range, which says more about a noisy
//! shared machine than a mean and standard deviation would.

use hdrhistogram::Histogram;

/// Longest latency a histogram records exactly; longer values are clamped to it.
const MAX_US: u64 = 60_000_000;

pub fn new_hist() -> Histogram<u64> {
    // Bounds are constants that are always valid; fall back to an auto-resizing one anyway.
    Histogram::new_with_bounds(1, MAX_US, 3).or_else(|_| Histogram::new(3)).unwrap_or_else(|_| unreachable_hist())
}

#[allow(clippy::expect_used)]
fn unreachable_hist() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for sigfig > 5.
    Histogram::new(2).expect("a 2-digit histogram is always valid")
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// p50, p99 and max in milliseconds (0 for an empty histogram).
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self { p50_ms: ms(h.value_at_quantile(0.50)), p99_ms: ms(h.value_at_quantile(0.99)), max_ms: ms(h.max()) }
    }
}

/// Median and range of one metric over the repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Self { median: f64::NAN, min: f64::NAN, max: f64::NAN, n };
        }
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Self { median, min: v[0], max: v[n - 1], n }
    }

    /// "12.3 (11.0–14.2)" with `digits` decimals; just the value for one repetition.
    pub fn show(&self, digits: usize) -> String {
        if self.n <= 1 {
            format!("{:.*}", digits, self.median)
        } else {
            format!("{:.*} ({:.*}–{:.*})", digits, self.median, digits, self.min, digits, self.max)
        }
    }

    /// Like [`show`](Self::show) for large counts: thousands separated by commas.
    pub fn show_int(&self) -> String {
        if self.n <= 1 {
            group(self.median)
        } else {
            format!("{} ({}–{})", group(self.median), group(self.min), group(self.max))
        }
    }
}

/// 51234.7 → "51,235".
pub fn group(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(group(1234567.4), "1,234,567");
        assert_eq!(group(999.0), "999");
    }
}
