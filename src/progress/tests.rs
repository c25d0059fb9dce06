use super::*;

/// Seconds after a fixed instant, so the table reads in seconds.
fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// (name, observations as (second, percent), expected ETA in seconds)
type Case = (&'static str, Vec<(i64, u8)>, Option<i64>);

fn fed(samples: &[(i64, u8)]) -> Progress {
    let mut p = Progress::new();
    for &(t, percent) in samples {
        p.observe(at(t), percent);
    }
    p
}

/// Linear progress of `per_poll` percent every 10 s from `from` to `to` percent, starting at `start` s.
fn linear(start: i64, from: u8, to: u8, per_poll: u8) -> Vec<(i64, u8)> {
    (from..=to).step_by(usize::from(per_poll)).enumerate().map(|(i, p)| (start + 10 * i as i64, p)).collect()
}

#[test]
fn eta_table() {
    let speed_up: Vec<(i64, u8)> = linear(0, 0, 50, 1).into_iter().chain(linear(510, 55, 70, 5)).collect();
    let plateau_then_resume: Vec<(i64, u8)> =
        [linear(0, 0, 20, 1), (21..=30).map(|i| (i * 10, 20)).collect(), linear(310, 21, 24, 1)].concat();
    let cases: Vec<Case> = vec![
        ("nothing observed", vec![], None),
        ("one sample", vec![(0, 40)], None),
        ("INIT: no progress yet", vec![(0, 0), (10, 0), (20, 0)], None),
        ("one rise: rate from the sample before it", vec![(0, 0), (10, 0), (20, 5)], Some(20 + 190)),
        ("linear 1 % per 10 s", vec![(0, 10), (10, 11), (20, 12)], Some(20 + 880)),
        (
            "rises between polls: anchored where the value was first seen",
            vec![(0, 10), (10, 11), (15, 11), (20, 12), (25, 12)],
            Some(900),
        ),
        ("jumps of 30 %", vec![(0, 0), (60, 30), (120, 60)], Some(120 + 80)),
        ("done", vec![(0, 10), (10, 50), (20, 100)], None),
        ("more than 100 counts as 100", vec![(0, 10), (10, 50), (20, 150)], None),
        ("held, predicted end not yet passed", vec![(0, 0), (10, 50), (20, 50)], Some(20)),
        ("stuck past the predicted end", vec![(0, 0), (10, 50), (21, 50)], None),
        ("progress went back: starts afresh", vec![(0, 10), (10, 20), (20, 5)], None),
        ("afresh, then one rise", vec![(0, 10), (10, 20), (20, 5), (30, 10)], Some(30 + 180)),
        ("an older observation is ignored", vec![(0, 10), (10, 11), (20, 12), (5, 90)], Some(900)),
        // Whole history says 540 + 30 / (69/530) = 770; the last rises say 5 % per 10 s.
        ("a late phase speeds up: caught by the recent rate", speed_up, Some(600)),
        // The plateau drags the whole-history rate down (23/330); the last 4 rises (21..24 over 30 s) do not.
        ("plateau, then the old speed again", plateau_then_resume, Some(340 + 760)),
    ];
    for (name, samples, expected) in cases {
        let eta = fed(&samples).eta().map(|t| t.duration_since(at(0)).as_secs_f64().round() as i64);
        assert_eq!(eta, expected, "{name}");
    }
}

#[test]
fn slow_down_keeps_the_faster_rate() {
    // 10 % per 10 s, then 1 % per 10 s: the rate since the first rise stays the faster one.
    let p = fed(&[linear(0, 0, 50, 10), linear(60, 51, 55, 1)].concat());
    let since_first = (55.0 - 10.0) / (100.0 - 10.0);
    assert!((p.rate().unwrap() - since_first).abs() < 1e-9, "{:?}", p.rate());
}

#[test]
fn remaining_counts_down_to_zero() {
    let p = fed(&[(0, 0), (10, 0), (20, 5)]);
    assert_eq!(p.remaining(at(20)), Some(Duration::from_secs(190)));
    assert_eq!(p.remaining(at(200)), Some(Duration::from_secs(10)));
    assert_eq!(p.remaining(at(500)), Some(Duration::ZERO));
    assert_eq!(fed(&[(0, 5)]).remaining(at(0)), None);
}

#[test]
fn history_stays_bounded() {
    let mut p = Progress::new();
    for i in 0..10_000 {
        p.observe(at(i), (i / 101) as u8);
    }
    assert!(p.recent.len() <= RECENT);
    assert_eq!(p.percent(), Some(99));
    assert!(p.eta().is_some());
}
