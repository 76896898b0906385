//! Latency summaries (nearest-rank percentiles over every sample: the sample counts here are at
//! most tens of thousands, so sorting beats a histogram's rounding) and RFC 3339 arithmetic on
//! the job JSON's step timestamps.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Smallest.
    pub min: Duration,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

impl Summary {
    /// Summarizes `samples` (panics when empty: a bench that measured nothing must say so).
    pub fn of(samples: &[Duration]) -> Self {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort_unstable();
        let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        let total: Duration = s.iter().sum();
        Self {
            n: s.len(),
            min: s[0],
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: s[s.len() - 1],
            mean: total / s.len() as u32,
        }
    }
}

/// Milliseconds with a precision that suits the size.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table cells `rate | rate/base× | p50 | p99 | max` of a load run.
pub fn rate_cells(rate: f64, base: f64, lat: &Summary) -> String {
    format!(
        "{rate:.0} | {:.2}× | {} | {} | {}",
        rate / base,
        ms(lat.p50),
        ms(lat.p99),
        ms(lat.max)
    )
}

/// `a / b` as `1.23×`.
pub fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}

/// "met" or "MISSED".
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Parses an RFC 3339 timestamp of the job JSON.
pub fn ts(v: &serde_json::Value) -> OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// `to - from` of two timestamps of the job JSON, as a `Duration` (zero if negative).
pub fn between(from: &serde_json::Value, to: &serde_json::Value) -> Duration {
    Duration::try_from(ts(to) - ts(from)).unwrap_or(Duration::ZERO)
}

/// Resident set size of process `pid` in KiB, from `/proc/<pid>/status` `VmRSS`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
