//! Results: the table of targets and measurements the bench prints, the
//! machine-independent checks `--ci` asserts, and small statistics.

use std::time::Instant;

use crate::cluster::Bench;
use crate::processes::cpu_seconds;

#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub context: Vec<(String, String)>,
    pub checks: Vec<(String, bool)>,
    /// Tables printed after the main one: a title, the header and the rows.
    pub tables: Vec<(String, Vec<String>, Vec<Vec<String>>)>,
}

pub struct Row {
    pub target: String,
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Results {
    pub fn row(
        &mut self,
        target: impl Into<String>,
        goal: impl Into<String>,
        measured: impl Into<String>,
        met: Option<bool>,
    ) {
        self.rows.push(Row { target: target.into(), goal: goal.into(), measured: measured.into(), met });
    }
    pub fn ctx(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.context.push((k.into(), v.into()));
    }
    /// A machine-independent assertion (checked with --ci).
    pub fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.checks.push((what.into(), ok));
    }
}

pub fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| format!("{:.0} GiB", kib / 1048576.0))
        .unwrap_or_default();
    format!("{cores} cores ({model}), {mem} RAM")
}

pub struct CpuSample {
    pub at: Instant,
    pub per_pid: Vec<(String, Option<f64>)>,
}

pub fn cpu_sample(procs: &[(String, Option<u32>)]) -> CpuSample {
    CpuSample { at: Instant::now(), per_pid: procs.iter().map(|(n, p)| (n.clone(), p.and_then(cpu_seconds))).collect() }
}

pub fn cpu_usage(a: &CpuSample, b: &CpuSample) -> Vec<(String, Option<f64>)> {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    a.per_pid
        .iter()
        .zip(&b.per_pid)
        .map(|((n, x), (_, y))| (n.clone(), x.zip(*y).map(|(x, y)| 100.0 * (y - x) / wall)))
        .collect()
}

pub fn fmt_pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1} %"))
}

pub fn print_results(bench: &Bench, res: &Results) {
    println!();
    println!("## imagejob-operator scale benchmark ({} ImageJobs)", bench.args.jobs);
    println!();
    println!("| target | goal | measured | met |");
    println!("|---|---|---|---|");
    for r in &res.rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        println!("| {} | {} | {} | {} |", r.target, r.goal, r.measured, met);
    }
    println!();
    for (title, header, rows) in &res.tables {
        println!("{title}");
        println!();
        println!("| {} |", header.join(" | "));
        println!("|{}", "---|".repeat(header.len()));
        for r in rows {
            println!("| {} |", r.join(" | "));
        }
        println!();
    }
    for (k, v) in &res.context {
        println!("- {k}: {v}");
    }
    if bench.args.keep_logs {
        println!("- operator logs and scenarios: {}", bench.dir.path().display());
    }
    println!();
}
