//! Small numeric helpers every consumer of events needs: a bias-corrected moving average (the
//! dashboard's smoothed loss, the plots), a median (throughput figures), and numbers written
//! for people.

/// Exponential moving average with bias correction (as in Adam and nanochat's smoothed loss):
/// `m = beta * m + (1 - beta) * x`, reported as `m / (1 - beta^n)`, so the first value equals
/// the first input instead of being pulled towards zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ema {
    beta: f64,
    m: f64,
    beta_pow: f64,
}

impl Ema {
    /// `beta` in `[0, 1)`: 0.9 averages over roughly the last 10 values.
    pub fn new(beta: f64) -> Self {
        Self {
            beta: beta.clamp(0.0, 0.999_999),
            m: 0.0,
            beta_pow: 1.0,
        }
    }

    /// Adds a value and returns the corrected average. Non-finite values are ignored (the
    /// current average is returned).
    pub fn push(&mut self, x: f64) -> Option<f64> {
        if x.is_finite() {
            self.m = self.beta * self.m + (1.0 - self.beta) * x;
            self.beta_pow *= self.beta;
        }
        self.value()
    }

    /// The current corrected average, `None` before the first value.
    pub fn value(&self) -> Option<f64> {
        (self.beta_pow < 1.0).then(|| self.m / (1.0 - self.beta_pow))
    }
}

/// The median of the finite values (the upper one of the two middle values for an even
/// count), `None` when there is none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Bytes in binary units with 3 significant digits: `512 B`, `1.50 KiB`, `21.3 MiB`, `4.00 GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{} {}", fmt_sig3(v), UNITS[u])
    }
}

/// A value with 3 significant digits for axis labels and norms: `0.812`, `12.3`, `1.23e4`.
pub fn fmt_sig3(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}").to_lowercase();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e4).contains(&a) {
        format!("{x:.2e}")
    } else if a < 1.0 {
        // 3 significant digits below 1: 0.812, 0.0123
        let decimals = (2.0 - a.log10().floor()) as usize;
        format!("{x:.decimals$}")
    } else if a < 10.0 {
        format!("{x:.2}")
    } else if a < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_matches_hand_computation() {
        // beta = 0.5, inputs 4, 2, 8:
        // m1 = 0.5*0 + 0.5*4 = 2      -> 2 / (1 - 0.5)   = 4
        // m2 = 0.5*2 + 0.5*2 = 2      -> 2 / (1 - 0.25)  = 2.6667
        // m3 = 0.5*2 + 0.5*8 = 5      -> 5 / (1 - 0.125) = 5.7143
        let mut e = Ema::new(0.5);
        assert_eq!(e.value(), None);
        let got: Vec<f64> = [4.0, 2.0, 8.0].iter().filter_map(|&x| e.push(x)).collect();
        let want = [4.0, 8.0 / 3.0, 40.0 / 7.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        // NaN does not poison the average.
        assert_eq!(e.push(f64::NAN), Some(40.0 / 7.0));
    }

    #[test]
    fn ema_beta_zero_is_identity() {
        let mut e = Ema::new(0.0);
        assert_eq!(e.push(3.0), Some(3.0));
        assert_eq!(e.push(1.0), Some(1.0));
    }

    #[test]
    fn median_skips_non_finite_values() {
        assert_eq!(median([3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median([f64::INFINITY]), None);
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(super::fmt_bytes(512), "512 B");
        assert_eq!(super::fmt_bytes(1536), "1.50 KiB");
        assert_eq!(super::fmt_bytes(21 * 1024 * 1024 + 300 * 1024), "21.3 MiB");
        assert_eq!(super::fmt_bytes(4 << 30), "4.00 GiB");
    }
}
