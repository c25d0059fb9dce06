//! Adaptive polling from the progress model: seldom while the predicted end
//! is far, often near it, the fixed interval whenever progress says nothing.
//!
//! With the reference interval T, the delay is [`SHARE`] of the predicted
//! time left, between T/4 and 2T. Where the model cannot be trusted it is T,
//! as a fixed poller would wait:
//! - no rise seen yet (INIT, no `process_percent`, one value only);
//! - the job moves in steps bigger than its rate explains (its end can come
//!   with any step, unannounced);
//! - long past the predicted end (stuck, or slower than anything seen).
//!
//! Near and just past the predicted end the delay is short: a prediction
//! from the faster rate errs early, so the end is usually shortly after it.
//! Once past it, the slower of the two rates is tried before the job counts
//! as late, and the delay grows with the overdue time back to T. At 100 %
//! while still running the job ends any moment: short delays, growing the
//! same way.

use std::time::Duration;

use jiff::Timestamp;

use super::{Progress, Sample};

/// Share of the predicted time left to wait before the next poll. 0.3 came
/// out best in the pure model (`tests.rs`): lower costs requests, higher
/// costs lateness on jobs whose last phase is slower than the rest.
pub const SHARE: f64 = 0.3;

/// A rise of more points than this, and more than twice what the rate makes
/// in the longest delay, marks a job that moves in steps.
const STEP_POINTS: u8 = 5;

impl Progress {
    /// How long to wait before the next poll of a running job under the
    /// Adaptive policy with reference interval `interval` (T).
    pub fn poll_delay(&self, interval: Duration, now: Timestamp) -> Duration {
        let (min, max) = (interval / 4, interval * 2);
        let grow_back = |since: f64| clamp(SHARE * since, min, interval);
        let (Some(last), Some(&latest)) = (self.last, self.recent.back()) else { return interval };
        if last.percent >= 100 {
            return grow_back(seconds_between(latest.at, now));
        }
        let Some((fast, slow)) = self.rates() else { return interval };
        if self.moves_in_steps(fast, max) {
            return interval;
        }
        let left = |rate: f64| seconds_between(now, latest.at) + f64::from(100 - latest.percent) / rate;
        match (left(fast), left(slow)) {
            (l, _) if l >= 0.0 => clamp(SHARE * l, min, max),
            (_, l) if l >= 0.0 => clamp(SHARE * l, min, max),
            (_, l) => grow_back(-l),
        }
    }

    /// True when a recent rise is bigger than [`STEP_POINTS`] and than twice
    /// what `rate` makes in `longest` (the longest delay).
    fn moves_in_steps(&self, rate: f64, longest: Duration) -> bool {
        let steady = rate * 2.0 * longest.as_secs_f64();
        let before = self.before_first_rise.filter(|_| self.recent.front() == self.first_rise.as_ref());
        let rises = before.iter().chain(self.recent.iter()).collect::<Vec<&Sample>>();
        rises.windows(2).map(|w| w[1].percent - w[0].percent).any(|r| r > STEP_POINTS && f64::from(r) > steady)
    }
}

/// Seconds from `from` to `to`, negative when `to` is earlier.
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

fn clamp(seconds: f64, min: Duration, max: Duration) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// A model fed with (seconds, percent) observations.
    fn seen(samples: &[(i64, u8)]) -> Progress {
        let mut p = Progress::new();
        for &(t, percent) in samples {
            p.observe(at(t), percent);
        }
        p
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn without_a_trustworthy_estimate_it_is_the_fixed_interval() {
        type Case<'a> = (&'a str, &'a [(i64, u8)], i64);
        let cases: &[Case] = &[
            ("nothing observed (INIT, no process_percent)", &[], 0),
            ("one value", &[(0, 10)], 5),
            ("a value that never moves", &[(0, 10), (10, 10), (20, 10), (30, 10)], 35),
            // Rises of 15–20 points every 100 s: 0.18 %/s, 7 points in 2T.
            ("steps", &[(0, 5), (10, 5), (100, 20), (110, 20), (200, 40), (210, 40), (300, 55)], 305),
            // 1 %/10 s predicted the end at 1000 s; at 2000 s it is long late.
            ("long past the predicted end (stuck)", &[(0, 0), (10, 1), (20, 2), (30, 3)], 2000),
        ];
        for (what, samples, now) in cases {
            assert_eq!(seen(samples).poll_delay(T, at(*now)), T, "{what}");
        }
    }

    #[test]
    fn the_delay_follows_the_predicted_time_left_between_a_quarter_and_twice_the_interval() {
        // 1 % every 10 s, polled every 20 s: the end is predicted at 1000 s.
        let steady: Vec<(i64, u8)> = (0..=48).map(|k| (20 * k, (2 * k) as u8)).collect();
        let p = seen(&steady);
        let cases = [
            (0, 2 * T),                     // far: capped at 2T
            (960, Duration::from_secs(12)), // 40 s left → 12 s
            (990, Duration::from_secs(3)),  // 10 s left → 3 s
            (999, T / 4),                   // 1 s left → at least T/4
            (1002, T / 4),                  // just past: still often
            (1020, Duration::from_secs(6)), // 20 s overdue → 6 s
            (2000, T),                      // long overdue → fixed
        ];
        for (now, want) in cases {
            assert_eq!(ms(p.poll_delay(T, at(now))), ms(want), "at {now} s");
        }
    }

    #[test]
    fn at_one_hundred_percent_while_running_it_ends_any_moment() {
        let p = seen(&[(0, 90), (10, 95), (20, 100)]);
        assert_eq!(p.poll_delay(T, at(21)), T / 4);
        assert_eq!(ms(p.poll_delay(T, at(40))), 6000, "20 s at 100 % → 0.3 × 20 s");
        assert_eq!(p.poll_delay(T, at(300)), T, "stuck at 100 %: fixed");
    }

    #[test]
    fn a_fast_smooth_job_is_not_taken_for_steps() {
        // 0.3 %/s seen every 20 s: rises of 6 points, as the rate explains.
        let p = seen(&[(0, 0), (20, 6), (40, 12), (60, 18), (80, 24)]);
        let left = (100.0 - 24.0) / 0.3;
        assert_eq!(ms(p.poll_delay(T, at(80))), ms(clamp(SHARE * left, T / 4, 2 * T)));
    }

    /// The failure mode of a whole-history rate: half the progress in 80 %
    /// of the time, the other half in the last 20 %. The recent rate sees the
    /// speed-up within a few polls, so the delay shrinks before the end.
    #[test]
    fn a_late_phase_that_speeds_up_is_caught_before_the_end() {
        // 0.05 %/s for 1000 s (to 50 %), then 0.2 %/s: the end is at 1250 s.
        let mut samples: Vec<(i64, u8)> = (0..=50).map(|k| (20 * k, k as u8)).collect();
        let fast: Vec<(i64, u8)> = (1..=5).map(|k| (1000 + 20 * k, 50 + 4 * k as u8)).collect();
        samples.extend(&fast);
        let p = seen(&samples);
        // At 70 % (1100 s): a whole-history rate (70 % in 1100 s) predicts
        // the end at 1571 s, and would poll every 2T until 1500 s.
        let eta = p.eta().unwrap().duration_since(at(0)).as_secs_f64();
        assert!((eta - 1250.0).abs() < 30.0, "predicted end {eta} s, real 1250 s");
        assert_eq!(p.poll_delay(T, at(1200)), Duration::from_secs(15), "50 s left → 15 s, not 2T");
        // Near the end the polls come every T/4.
        assert_eq!(p.poll_delay(T, at(1245)), T / 4);
    }
}
