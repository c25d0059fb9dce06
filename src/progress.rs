//! The one model of a job's progress: from observed `process_percent`
//! values it estimates when the job will end. Pure; used by `job wait` (the
//! ETA it shows), the status's `estimatedCompletionTime` and adaptive polling.
//!
//! The model: progress is a step function of whole percents, seen only when
//! someone polls. A *rise* is an observation whose percent is higher than the
//! one before; its time is when the new value was first seen. Rises are all
//! seen late by up to one poll interval, so the distance between two rises is
//! unbiased, while the time of the first sample is not (a job may sit in INIT
//! or at some percent for long before anyone looks).
//!
//! The rate is the faster of two estimates:
//! - *since the first rise*: from the first rise to the latest one (with one
//!   rise only: from the sample just before it);
//! - *recent*: over the last [`RECENT`] rises, so a late phase that speeds
//!   up is caught within a few polls (a whole-history rate would predict the
//!   end far too late, which is what makes a naive adaptive poller late).
//!
//! The ETA extrapolates from the latest rise. There is none before the first
//! rise (INIT, no progress yet), at 100 %, and once the latest observation is
//! past the predicted end: the job is stuck or slower than anything seen so
//! far, and callers fall back to what they do without an estimate.
//!
//! [`poll`] turns the estimate into the delay of the Adaptive poll policy.
//!
//! Memory is constant: a few samples, however long the job runs.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// How many rises the recent rate spans (its base is the oldest of them).
pub const RECENT: usize = 4;

/// One observation: when, and the whole percent seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    at: Timestamp,
    percent: u8,
}

/// Observed progress of one job; feed it with [`Progress::observe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The latest observation.
    last: Option<Sample>,
    /// The last sample before the first rise: the rate's base while only one rise is known.
    before_first_rise: Option<Sample>,
    first_rise: Option<Sample>,
    /// The latest rises, oldest first, at most [`RECENT`].
    recent: VecDeque<Sample>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the job reported `percent` (clamped to 100) at `at`.
    /// Observations older than the latest are ignored; a percent lower than
    /// the last one starts the history afresh (the job reports another phase).
    pub fn observe(&mut self, at: Timestamp, percent: u8) {
        let sample = Sample { at, percent: percent.min(100) };
        let Some(last) = self.last else {
            self.last = Some(sample);
            return;
        };
        if at < last.at {
            return;
        }
        if sample.percent < last.percent {
            *self = Self { last: Some(sample), ..Self::default() };
            return;
        }
        if sample.percent > last.percent {
            if self.first_rise.is_none() {
                self.before_first_rise = Some(last);
                self.first_rise = Some(sample);
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(sample);
        }
        self.last = Some(sample);
    }

    /// The latest percent observed.
    pub fn percent(&self) -> Option<u8> {
        self.last.map(|s| s.percent)
    }

    /// Estimated progress in percent per second, once progress has risen.
    pub fn rate(&self) -> Option<f64> {
        self.rates().map(|(faster, _)| faster)
    }

    /// The faster and the slower of the two rates (module docs).
    fn rates(&self) -> Option<(f64, f64)> {
        let first = self.first_rise?;
        let latest = *self.recent.back()?;
        let since_first = if latest == first {
            self.before_first_rise.and_then(|b| rate_between(b, first))
        } else {
            rate_between(first, latest)
        };
        let recent = self.recent.front().and_then(|&oldest| rate_between(oldest, latest));
        match (since_first, recent) {
            (Some(a), Some(b)) => Some((a.max(b), a.min(b))),
            (a, b) => a.or(b).map(|r| (r, r)),
        }
    }

    /// When the job should reach 100 %, if that can be estimated (see the
    /// module docs for when it cannot).
    pub fn eta(&self) -> Option<Timestamp> {
        let last = self.last?;
        let latest = *self.recent.back()?;
        if last.percent >= 100 {
            return None;
        }
        let seconds = f64::from(100 - latest.percent) / self.rate()?;
        let eta = latest.at.checked_add(SignedDuration::try_from_secs_f64(seconds).ok()?).ok()?;
        (eta >= last.at).then_some(eta)
    }

    /// Time left until [`Progress::eta`] as seen at `now`; zero once it has
    /// passed (until the next observation says whether the job is late).
    pub fn remaining(&self, now: Timestamp) -> Option<Duration> {
        let left = self.eta()?.duration_since(now);
        Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
    }
}

/// Percent per second from `from` to `to`; none unless both time and percent advanced.
fn rate_between(from: Sample, to: Sample) -> Option<f64> {
    let seconds = to.at.duration_since(from.at).as_secs_f64();
    let gained = f64::from(to.percent) - f64::from(from.percent);
    (seconds > 0.0 && gained > 0.0).then(|| gained / seconds)
}

pub mod poll;
#[cfg(test)]
mod tests;
