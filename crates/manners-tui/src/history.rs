//! Bounded-memory metric history: every point ever pushed is represented, downsampled by
//! merging neighbouring buckets, so a million-step run costs the same memory as a short one.

/// The default number of buckets a [`LossHistory`] keeps before it halves its resolution.
pub const DEFAULT_HISTORY_CAP: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    x_sum: f64,
    y_sum: f64,
    n: u64,
    y_min: f64,
    y_max: f64,
}

impl Bucket {
    fn new(x: f64, y: f64) -> Self {
        Self {
            x_sum: x,
            y_sum: y,
            n: 1,
            y_min: y,
            y_max: y,
        }
    }

    fn add(&mut self, x: f64, y: f64) {
        self.merge(&Bucket::new(x, y));
    }

    fn merge(&mut self, o: &Bucket) {
        self.x_sum += o.x_sum;
        self.y_sum += o.y_sum;
        self.n += o.n;
        self.y_min = self.y_min.min(o.y_min);
        self.y_max = self.y_max.max(o.y_max);
    }

    fn mean(&self) -> (f64, f64) {
        let n = self.n as f64;
        (self.x_sum / n, self.y_sum / n)
    }
}

/// A whole-run series of `(x, y)` points (x = step) in bounded memory.
///
/// Points are gathered into buckets of `width` consecutive points; when the number of buckets
/// reaches the cap, neighbouring buckets are merged pairwise and `width` doubles. Each bucket
/// is drawn at its mean x and mean y. The very first and the latest point are kept exactly, so
/// a chart always starts at the run's first loss and ends at the current one. Non-finite
/// values are ignored (they are counted in [`LossHistory::rejected`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LossHistory {
    cap: usize,
    width: u64,
    buckets: Vec<Bucket>,
    pending: Option<Bucket>,
    first: Option<(f64, f64)>,
    last: Option<(f64, f64)>,
    y_min: f64,
    y_max: f64,
    count: u64,
    rejected: u64,
}

impl Default for LossHistory {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY_CAP)
    }
}

impl LossHistory {
    /// A history that keeps at most `cap` buckets (at least 4).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(4),
            width: 1,
            buckets: Vec::new(),
            pending: None,
            first: None,
            last: None,
            y_min: f64::INFINITY,
            y_max: f64::NEG_INFINITY,
            count: 0,
            rejected: 0,
        }
    }

    /// Adds a point. Points should arrive in increasing x.
    pub fn push(&mut self, x: f64, y: f64) {
        if !x.is_finite() || !y.is_finite() {
            self.rejected += 1;
            return;
        }
        self.count += 1;
        self.first.get_or_insert((x, y));
        self.last = Some((x, y));
        self.y_min = self.y_min.min(y);
        self.y_max = self.y_max.max(y);
        match &mut self.pending {
            Some(b) => b.add(x, y),
            None => self.pending = Some(Bucket::new(x, y)),
        }
        if self.pending.is_some_and(|b| b.n >= self.width)
            && let Some(b) = self.pending.take()
        {
            self.buckets.push(b);
            if self.buckets.len() >= self.cap {
                self.halve();
            }
        }
    }

    fn halve(&mut self) {
        let mut merged = Vec::with_capacity(self.cap / 2 + 1);
        for pair in self.buckets.chunks(2) {
            let mut b = pair[0];
            if let Some(o) = pair.get(1) {
                b.merge(o);
            }
            merged.push(b);
        }
        self.buckets = merged;
        self.width *= 2;
    }

    /// Points pushed so far (finite ones).
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True before the first finite point.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Non-finite points that were ignored.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Stored buckets (the memory bound: always below the cap).
    pub fn stored(&self) -> usize {
        self.buckets.len() + usize::from(self.pending.is_some())
    }

    /// How many raw points each stored bucket stands for.
    pub fn points_per_bucket(&self) -> u64 {
        self.width
    }

    /// The first point pushed.
    pub fn first(&self) -> Option<(f64, f64)> {
        self.first
    }

    /// The latest point pushed.
    pub fn last(&self) -> Option<(f64, f64)> {
        self.last
    }

    /// Smallest and largest y ever pushed (exact, not downsampled).
    pub fn y_extent(&self) -> Option<(f64, f64)> {
        (self.count > 0).then_some((self.y_min, self.y_max))
    }

    /// The downsampled series in increasing x: the first point, one point per bucket, the
    /// latest point. At most `cap + 2` points.
    pub fn points(&self) -> Vec<(f64, f64)> {
        fn push(out: &mut Vec<(f64, f64)>, p: (f64, f64)) {
            if out.last().is_none_or(|q| p.0 > q.0) {
                out.push(p);
            }
        }
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(self.stored() + 2);
        if let Some(f) = self.first {
            push(&mut out, f);
        }
        for b in self.buckets.iter().chain(self.pending.iter()) {
            push(&mut out, b.mean());
        }
        if let Some(l) = self.last {
            // The latest point is exact: drop a bucket mean that sits at or after it.
            if out.last().is_some_and(|q| q.0 >= l.0) && out.len() > 1 {
                out.pop();
            }
            push(&mut out, l);
        }
        out
    }

    /// The downsampled series restricted to `x >= from` (for a "recent" view of the whole
    /// history when no finer series is at hand).
    pub fn points_since(&self, from: f64) -> Vec<(f64, f64)> {
        self.points().into_iter().filter(|p| p.0 >= from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_history_is_exact() {
        let mut h = LossHistory::new(16);
        for i in 1..=10 {
            h.push(i as f64, 10.0 - i as f64);
        }
        let pts = h.points();
        assert_eq!(pts.len(), 10);
        assert_eq!(pts[0], (1.0, 9.0));
        assert_eq!(pts[9], (10.0, 0.0));
        assert_eq!(h.points_per_bucket(), 1);
    }

    #[test]
    fn million_steps_stay_bounded_and_keep_the_ends() {
        let cap = 512;
        let mut h = LossHistory::new(cap);
        let n = 1_000_000u64;
        for i in 1..=n {
            let x = i as f64;
            h.push(x, 10.0 / x.sqrt());
            assert!(h.stored() <= cap, "stored {} at step {i}", h.stored());
        }
        assert_eq!(h.len(), n);
        let pts = h.points();
        assert!(pts.len() <= cap + 2, "{} points", pts.len());
        assert!(pts.len() >= cap / 2, "{} points: too coarse", pts.len());
        assert_eq!(pts.first().copied(), Some((1.0, 10.0)));
        assert_eq!(
            pts.last().copied(),
            Some((n as f64, 10.0 / (n as f64).sqrt()))
        );
        // Strictly increasing x, and the values follow the curve (bucket means lie between
        // the curve's values at the bucket's ends).
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        for &(x, y) in &pts {
            let w = h.points_per_bucket() as f64;
            assert!(y <= 10.0 / (x - w).max(1.0).sqrt() + 1e-9 && y >= 10.0 / (x + w).sqrt());
        }
        assert_eq!(h.y_extent(), Some((10.0 / (n as f64).sqrt(), 10.0)));
    }

    #[test]
    fn non_finite_points_are_counted_not_stored() {
        let mut h = LossHistory::new(8);
        h.push(1.0, 2.0);
        h.push(2.0, f64::NAN);
        h.push(3.0, f64::INFINITY);
        h.push(4.0, 1.0);
        assert_eq!(h.len(), 2);
        assert_eq!(h.rejected(), 2);
        assert_eq!(h.points(), vec![(1.0, 2.0), (4.0, 1.0)]);
    }

    #[test]
    fn mean_of_merged_buckets() {
        // cap 4: after 4 points the buckets halve to 2 buckets of width 2.
        let mut h = LossHistory::new(4);
        for (x, y) in [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0), (4.0, 7.0)] {
            h.push(x, y);
        }
        assert_eq!(h.points_per_bucket(), 2);
        assert_eq!(h.stored(), 2);
        // first (1,1), bucket means (1.5,2) and (3.5,6), then the latest (4,7).
        assert_eq!(
            h.points(),
            vec![(1.0, 1.0), (1.5, 2.0), (3.5, 6.0), (4.0, 7.0)]
        );
    }
}
