//! Progress shapes of real IMS jobs, as scenario phases: several phases at
//! their own speeds, plateaus, a last phase that speeds up (the case that
//! fools a whole-history rate), steps, no progress at all, and a job that
//! ends before it reaches 100 %. One definition for the fixture
//! (`tests/fixtures/scenarios/progress-shapes.yaml`), the scale bench and
//! the pure policy tests, at any duration (the bench compresses time).

use std::time::Duration;

use serde_json::{Value, json};

/// How `process_percent` moves over a job's running time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// 0 → 100 % at one speed.
    Linear,
    /// Three phases: slow, fast, slow.
    Phases,
    /// Half the progress in 80 % of the time, the other half in the last 20 %.
    LateSpeedup,
    /// 80 % of the progress in 40 % of the time, then slow.
    LateSlowdown,
    /// Rises, stays at 40 % for 30 % of the time, rises again.
    Plateau,
    /// Irregular steps of 10–30 points, nothing in between.
    Jumps,
    /// RUNNING without `process_percent`.
    NoProgress,
    /// Rises to 80 %, then SUCCESS without reaching 100 %.
    EndsEarly,
}

impl Shape {
    pub const ALL: [Shape; 8] = [
        Self::Linear,
        Self::Phases,
        Self::LateSpeedup,
        Self::LateSlowdown,
        Self::Plateau,
        Self::Jumps,
        Self::NoProgress,
        Self::EndsEarly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Phases => "three phases",
            Self::LateSpeedup => "late speed-up",
            Self::LateSlowdown => "late slow-down",
            Self::Plateau => "plateau",
            Self::Jumps => "jumps",
            Self::NoProgress => "no progress",
            Self::EndsEarly => "ends at 80 %",
        }
    }

    /// Progress over the running time: (fraction of the time, percent as a
    /// 0–1 fraction) breakpoints; between two, linear (`steps` false) or
    /// held (`steps` true). None: no progress reported.
    fn breakpoints(self) -> Option<(&'static [(f64, f64)], bool)> {
        Some(match self {
            Self::Linear => (&[(0.0, 0.0), (1.0, 1.0)], false),
            Self::Phases => (&[(0.0, 0.0), (0.5, 0.3), (0.8, 0.9), (1.0, 1.0)], false),
            Self::LateSpeedup => (&[(0.0, 0.0), (0.8, 0.5), (1.0, 1.0)], false),
            Self::LateSlowdown => (&[(0.0, 0.0), (0.4, 0.8), (1.0, 1.0)], false),
            Self::Plateau => (&[(0.0, 0.0), (0.3, 0.4), (0.6, 0.4), (1.0, 1.0)], false),
            Self::Jumps => (&[(0.0, 0.05), (0.15, 0.2), (0.3, 0.35), (0.5, 0.5), (0.7, 0.8), (0.9, 0.9)], true),
            Self::NoProgress => return None,
            Self::EndsEarly => (&[(0.0, 0.0), (1.0, 0.8)], false),
        })
    }

    /// Scenario phases: INIT for `init`, RUNNING in this shape for
    /// `running`, then SUCCESS with `image_id`.
    pub fn phases(self, init: Duration, running: Duration, image_id: &str) -> Vec<Value> {
        let at = |f: f64| (init + running.mul_f64(f)).as_secs_f64();
        let mut phases = vec![json!({"after": 0.0, "status": "INIT"})];
        let task = "CreateImageByInstanceTask";
        match self.breakpoints() {
            None => phases.push(json!({"after": at(0.0), "status": "RUNNING", "current_task": task})),
            Some((points, steps)) => {
                for (i, &(f, p)) in points.iter().enumerate() {
                    if f >= 1.0 {
                        break;
                    }
                    let progress = match points.get(i + 1) {
                        Some(&(_, next)) if !steps => json!([p, next]),
                        _ => json!(p),
                    };
                    phases
                        .push(json!({"after": at(f), "status": "RUNNING", "progress": progress, "current_task": task}));
                }
            }
        }
        phases.push(json!({"after": at(1.0), "status": "SUCCESS", "image_id": image_id,
            "results": [{"image_id": image_id, "status": "success"}]}));
        phases
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ims::model::Job;
    use crate::sim::lifecycle::{JobTime, job_body};
    use crate::sim::scenario::{JobDef, TimeFormat};

    fn job(shape: Shape) -> JobDef {
        let phases = shape.phases(Duration::from_secs(30), Duration::from_secs(600), "img");
        let def = json!({"project_id": "p", "job_id": "j", "job_type": "t", "phases": phases});
        let job = JobDef::parse(&def.to_string()).unwrap();
        job.validate().unwrap();
        job
    }

    fn percent(job: &JobDef, secs: f64) -> Option<u8> {
        let at = JobTime { created_at: jiff::Timestamp::UNIX_EPOCH, age: Duration::from_secs_f64(secs) };
        Job::from_value(&job_body(job, at, TimeFormat::Rfc3339)).unwrap().progress
    }

    #[test]
    fn shapes_are_valid_scenarios_with_their_progress() {
        for shape in Shape::ALL {
            let j = job(shape);
            assert_eq!(percent(&j, 10.0), None, "{shape:?}: INIT has no progress");
            assert_eq!(percent(&j, 700.0), Some(100), "{shape:?}: SUCCESS is 100 %");
        }
        // Halfway through the running time (30 s + 300 s).
        let mid = |s| percent(&job(s), 330.0);
        assert_eq!(mid(Shape::Linear), Some(50));
        assert_eq!(mid(Shape::LateSpeedup), Some(31));
        assert_eq!(mid(Shape::LateSlowdown), Some(83));
        assert_eq!(mid(Shape::Plateau), Some(40));
        assert_eq!(mid(Shape::Jumps), Some(50));
        assert_eq!(mid(Shape::NoProgress), None);
        // Just before the end.
        assert_eq!(percent(&job(Shape::EndsEarly), 620.0), Some(79));
        assert_eq!(percent(&job(Shape::Jumps), 620.0), Some(90));
        assert_eq!(percent(&job(Shape::LateSpeedup), 620.0), Some(96));
    }
}
