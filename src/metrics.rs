//! Counters for `GET /metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::queue::JobState;

/// Step durations observed by the worker.
#[derive(Default)]
pub struct Metrics {
    /// step name -> (count, total seconds).
    steps: Mutex<BTreeMap<&'static str, (u64, f64)>>,
    /// (metric, kind) -> count: drift found and repairs queued by reconcile passes.
    reconcile: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Event streams open now.
    streams: AtomicU64,
    /// Event streams cut because their client fell behind.
    lagged: AtomicU64,
}

/// Counts an open event stream while it lives ([`Metrics::stream_opened`]).
pub struct OpenStream<'m>(&'m Metrics);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The reconcile counters' metric names.
const DRIFT: &str = "creepy_meow_drift_total";
const REPAIRS: &str = "creepy_meow_repairs_total";
/// Creates refused by cluster mode, by reason (`held`, `unavailable`).
const CLUSTER_REFUSED: &str = "creepy_meow_cluster_refused_total";

/// What the store says at the moment of a scrape.
pub struct Snapshot {
    /// Jobs by state.
    pub jobs: BTreeMap<JobState, usize>,
    /// Jobs waiting.
    pub queued: usize,
    /// Whether the worker is paused.
    pub paused: bool,
    /// Cluster mode: whether this server is a member in good standing, and how many other
    /// live members it knows; `None` without a cluster.
    pub cluster: Option<(bool, usize)>,
}

impl Metrics {
    /// Records that `step` took `seconds` to apply.
    pub fn observe_step(&self, step: &'static str, seconds: f64) {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let entry = steps.entry(step).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    /// Counts drift of `kind` found by a reconcile pass.
    pub fn observe_drift(&self, kind: &'static str) {
        self.count(DRIFT, kind);
    }

    /// Counts a repair job of `kind` queued by a reconcile pass.
    pub fn observe_repair(&self, kind: &'static str) {
        self.count(REPAIRS, kind);
    }

    /// Counts an event stream as open until the guard is dropped.
    pub fn stream_opened(&self) -> OpenStream<'_> {
        self.streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(self)
    }

    /// Counts an event stream cut because its client fell behind.
    pub fn observe_lagged(&self) {
        self.lagged.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a create cluster mode refused for `reason` (`held`, `unavailable`).
    pub fn observe_cluster_refusal(&self, reason: &'static str) {
        self.count(CLUSTER_REFUSED, reason);
    }

    fn count(&self, metric: &'static str, kind: &'static str) {
        let mut counts = self.reconcile.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((metric, kind)).or_default() += 1;
    }

    /// The exposition text.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP creepy_meow_jobs Jobs in the store by state.");
        let _ = writeln!(out, "# TYPE creepy_meow_jobs gauge");
        for state in JobState::ALL {
            let n = snap.jobs.get(&state).copied().unwrap_or(0);
            let _ = writeln!(out, "creepy_meow_jobs{{state=\"{}\"}} {n}", state.as_str());
        }
        let _ = writeln!(
            out,
            "# HELP creepy_meow_queue_depth Jobs waiting for the worker."
        );
        let _ = writeln!(out, "# TYPE creepy_meow_queue_depth gauge");
        let _ = writeln!(out, "creepy_meow_queue_depth {}", snap.queued);
        let _ = writeln!(
            out,
            "# HELP creepy_meow_queue_paused 1 while the worker is paused."
        );
        let _ = writeln!(out, "# TYPE creepy_meow_queue_paused gauge");
        let _ = writeln!(out, "creepy_meow_queue_paused {}", u8::from(snap.paused));
        let _ = writeln!(
            out,
            "# HELP creepy_meow_step_duration_seconds Time to apply each provisioning step."
        );
        let _ = writeln!(out, "# TYPE creepy_meow_step_duration_seconds summary");
        let steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        for (step, (count, sum)) in steps.iter() {
            let _ = writeln!(
                out,
                "creepy_meow_step_duration_seconds_sum{{step=\"{step}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "creepy_meow_step_duration_seconds_count{{step=\"{step}\"}} {count}"
            );
        }
        drop(steps);
        self.render_counts(&mut out, snap.cluster.is_some());
        self.render_streams(&mut out);
        if let Some((member, peers)) = snap.cluster {
            render_cluster(&mut out, member, peers);
        }
        out
    }

    fn render_streams(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP creepy_meow_event_streams Event streams open.");
        let _ = writeln!(out, "# TYPE creepy_meow_event_streams gauge");
        let open = self.streams.load(Ordering::Relaxed);
        let _ = writeln!(out, "creepy_meow_event_streams {open}");
        let _ = writeln!(
            out,
            "# HELP creepy_meow_event_streams_lagged_total Event streams cut because their client fell behind."
        );
        let _ = writeln!(out, "# TYPE creepy_meow_event_streams_lagged_total counter");
        let lagged = self.lagged.load(Ordering::Relaxed);
        let _ = writeln!(out, "creepy_meow_event_streams_lagged_total {lagged}");
    }

    fn render_counts(&self, out: &mut String, cluster: bool) {
        let counts = self.reconcile.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics = vec![
            (DRIFT, "kind", "Drift found by reconcile passes, by kind."),
            (
                REPAIRS,
                "kind",
                "Repair jobs queued by reconcile passes, by kind.",
            ),
        ];
        if cluster {
            metrics.push((CLUSTER_REFUSED, "reason", "Creates refused by cluster mode, by reason (held: another server holds the ID or address; unavailable: etcd did not answer)."));
        }
        for (metric, label, help) in metrics {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} counter");
            for ((m, kind), n) in counts.iter() {
                if *m == metric {
                    let _ = writeln!(out, "{metric}{{{label}=\"{kind}\"}} {n}");
                }
            }
        }
    }
}

fn render_cluster(out: &mut String, member: bool, peers: usize) {
    let _ = writeln!(
        out,
        "# HELP creepy_meow_cluster_member 1 while this server is registered in the cluster and etcd answers."
    );
    let _ = writeln!(out, "# TYPE creepy_meow_cluster_member gauge");
    let _ = writeln!(out, "creepy_meow_cluster_member {}", u8::from(member));
    let _ = writeln!(
        out,
        "# HELP creepy_meow_cluster_peers Other live members, as last read from etcd."
    );
    let _ = writeln!(out, "# TYPE creepy_meow_cluster_peers gauge");
    let _ = writeln!(out, "creepy_meow_cluster_peers {peers}");
}
