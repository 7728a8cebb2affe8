//! Metric series and their downsampling: charts are served with at most about a thousand points per line, and
//! min/max buckets keep every spike (a loss blow-up must stay visible after reduction).

/// One point of a series: x (step or epoch) and y (the value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }
}

/// The default cap on points per chart line.
pub const MAX_POINTS: usize = 1000;

/// The heaviest smoothing a chart offers: beyond it a curve is a flat line.
pub const MAX_SMOOTHING: f64 = 0.999;

/// `points` smoothed by an exponential moving average with `weight` (0: none, up to [`MAX_SMOOTHING`]), debiased at
/// the start as TensorBoard does, so the first points are not pulled towards zero. Non-finite values are skipped.
pub fn ema(points: &[Point], weight: f64) -> Vec<Point> {
    let weight = if weight.is_finite() { weight.clamp(0.0, MAX_SMOOTHING) } else { 0.0 };
    if weight == 0.0 {
        return points.to_vec();
    }
    let (mut last, mut steps) = (0.0, 0i32);
    points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .map(|p| {
            last = last * weight + (1.0 - weight) * p.y;
            steps += 1;
            Point::new(p.x, last / (1.0 - weight.powi(steps)))
        })
        .collect()
}

/// Reduces `points` (ordered by x) to at most `limit` points, keeping order and the extremes.
///
/// The series is cut into `limit / 2` buckets of consecutive points; each bucket contributes its minimum and its
/// maximum (in their original order, once if they are the same point). The first and last point of the series are
/// always in some bucket, so a spike anywhere survives. Non-finite values are dropped first: they cannot be drawn.
/// A `limit` below 2 is treated as 2.
pub fn downsample(points: &[Point], limit: usize) -> Vec<Point> {
    let finite: Vec<Point> = points.iter().copied().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
    let limit = limit.max(2);
    if finite.len() <= limit {
        return finite;
    }
    let buckets = limit / 2;
    let mut out = Vec::with_capacity(buckets * 2);
    let n = finite.len();
    for b in 0..buckets {
        // Even split by index: bucket b covers [b*n/buckets, (b+1)*n/buckets).
        let start = b * n / buckets;
        let end = (b + 1) * n / buckets;
        let chunk = &finite[start..end];
        let Some((min_i, max_i)) = extremes(chunk) else { continue };
        let (first, second) = if min_i <= max_i { (min_i, max_i) } else { (max_i, min_i) };
        out.push(chunk[first]);
        if second != first {
            out.push(chunk[second]);
        }
    }
    out
}

/// Indices of the minimum and maximum y in `chunk` (first occurrence each), or None when empty.
fn extremes(chunk: &[Point]) -> Option<(usize, usize)> {
    let first = chunk.first()?;
    let (mut min_i, mut max_i) = (0, 0);
    let (mut min_y, mut max_y) = (first.y, first.y);
    for (i, p) in chunk.iter().enumerate().skip(1) {
        if p.y < min_y {
            min_y = p.y;
            min_i = i;
        }
        if p.y > max_y {
            max_y = p.y;
            max_i = i;
        }
    }
    Some((min_i, max_i))
}

/// The bucket width (in x units) the store can aggregate by so that a series spanning `[x_min, x_max]` comes back
/// with at most `limit` points: the store groups by `floor((x - x_min) / width)` and returns the min and the max point
/// of each group. Always at least 1, since steps and epochs are integers.
pub fn bucket_width(x_min: f64, x_max: f64, limit: usize) -> i64 {
    let buckets = (limit.max(2) / 2) as f64;
    let span = (x_max - x_min).max(0.0) + 1.0;
    let w = (span / buckets).ceil();
    if w.is_finite() && w >= 1.0 { w as i64 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> Vec<Point> {
        (0..n).map(|i| Point::new(i as f64, (i as f64 * 0.01).sin())).collect()
    }

    #[test]
    fn short_series_are_unchanged() {
        let s = series(10);
        assert_eq!(downsample(&s, 1000), s);
        assert!(downsample(&[], 1000).is_empty());
    }

    #[test]
    fn never_more_than_the_limit() {
        for n in [1001, 1500, 9_999, 100_000, 1_000_000] {
            for limit in [2, 3, 10, 999, 1000] {
                let out = downsample(&series(n), limit);
                assert!(out.len() <= limit, "n={n} limit={limit} got {}", out.len());
                assert!(out.len() >= limit / 2, "n={n} limit={limit} got only {}", out.len());
            }
        }
    }

    #[test]
    fn a_spike_survives() {
        let mut s: Vec<Point> = (0..100_000).map(|i| Point::new(i as f64, 1.0)).collect();
        s[54_321].y = 50.0;
        s[77_777].y = -3.0;
        let out = downsample(&s, 1000);
        assert!(out.iter().any(|p| p.x == 54_321.0 && p.y == 50.0), "the high spike was lost");
        assert!(out.iter().any(|p| p.x == 77_777.0 && p.y == -3.0), "the low spike was lost");
    }

    #[test]
    fn order_is_kept_and_ends_are_present() {
        let s = series(12_345);
        let out = downsample(&s, 1000);
        assert!(out.windows(2).all(|w| w[0].x < w[1].x), "x must stay strictly increasing");
        // The global extremes of the series are kept.
        let max = s.iter().map(|p| p.y).fold(f64::MIN, f64::max);
        let min = s.iter().map(|p| p.y).fold(f64::MAX, f64::min);
        assert!(out.iter().any(|p| p.y == max) && out.iter().any(|p| p.y == min));
    }

    #[test]
    fn non_finite_values_are_dropped() {
        let s = vec![Point::new(0.0, 1.0), Point::new(1.0, f64::NAN), Point::new(2.0, f64::INFINITY)];
        assert_eq!(downsample(&s, 10), vec![Point::new(0.0, 1.0)]);
    }

    #[test]
    fn bucket_width_caps_groups() {
        assert_eq!(bucket_width(0.0, 99.0, 1000), 1);
        let w = bucket_width(0.0, 999_999.0, 1000);
        assert_eq!(w, 2000);
        // groups * 2 points per group stays within the limit, wherever the series starts
        for (lo, hi) in [(0i64, 999_999i64), (1, 1_000_000), (7, 1_234_567), (0, 1000)] {
            let w = bucket_width(lo as f64, hi as f64, 1000);
            let groups = (hi - lo) / w + 1;
            assert!(groups * 2 <= 1000, "{lo}..{hi}: {groups} groups of {w}");
        }
        assert_eq!(bucket_width(5.0, 5.0, 1000), 1);
        assert_eq!(bucket_width(0.0, f64::NAN, 1000), 1);
    }

    #[test]
    fn ema_smooths_without_pulling_the_start_to_zero() {
        let pts: Vec<Point> = [4.0, 0.0, 4.0, 0.0].iter().enumerate().map(|(i, y)| Point::new(i as f64, *y)).collect();
        assert_eq!(ema(&pts, 0.0), pts, "no smoothing");
        let s = ema(&pts, 0.5);
        assert_eq!(s[0], Point::new(0.0, 4.0), "debiased: the first point is itself");
        assert!(s.iter().skip(1).all(|p| p.y > 0.0 && p.y < 4.0), "{s:?}");
        let spread = |v: &[Point]| {
            v.iter().map(|p| p.y).fold(f64::MIN, f64::max) - v.iter().map(|p| p.y).fold(f64::MAX, f64::min)
        };
        assert!(spread(&ema(&pts, 0.9)[1..]) < spread(&s[1..]), "heavier is smoother");
        assert_eq!(ema(&pts, 5.0).len(), 4, "clamped, not refused");
    }
}
