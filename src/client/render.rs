//! How the client shows a job: a live step display on a terminal, plain lines otherwise, and
//! its outcome. The tables are in `tables.rs`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{JobView, StepView};

/// Milliseconds a step took, from its timestamps.
fn step_ms(step: &StepView) -> Option<f64> {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    let (a, b) = (parse(&step.started_at)?, parse(&step.finished_at)?);
    Some((b - a).as_seconds_f64() * 1000.0)
}

fn describe(step: &StepView) -> String {
    let took = step_ms(step)
        .map(|ms| format!(" ({ms:.0} ms)"))
        .unwrap_or_default();
    match step.state.as_str() {
        "done" => format!("✓ {}{took}", step.name),
        "failed" => format!(
            "✗ {}: {}",
            step.name,
            step.error.as_deref().unwrap_or("failed")
        ),
        "undone" => match &step.undo_error {
            Some(e) => format!("! {} could not be undone: {e}", step.name),
            None => format!("↺ {} undone", step.name),
        },
        "running" => format!("… {}", step.name),
        other => format!("  {} {other}", step.name),
    }
}

/// Shows a job's steps as they change.
pub struct Follower {
    tty: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    shown: HashMap<String, String>,
}

impl Default for Follower {
    fn default() -> Self {
        Self::new()
    }
}

impl Follower {
    /// A display suited to stdout: live on a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            multi: MultiProgress::new(),
            bars: HashMap::new(),
            shown: HashMap::new(),
        }
    }

    /// Updates the display with the job's current state. Polling can miss a state: a step
    /// that failed and was undone between two polls is still shown failed first (its error
    /// stays in the record), and undone steps are shown newest first, as the rollback ran.
    pub fn update(&mut self, job: &JobView) {
        for step in self.changes(job) {
            if self.tty {
                self.update_bar(&step);
            } else {
                println!("{}", describe(&step));
            }
        }
    }

    /// The step states to show since the last update, in the order to show them.
    fn changes(&mut self, job: &JobView) -> Vec<StepView> {
        let mut changed: Vec<StepView> = Vec::new();
        for step in job.steps.iter().filter(|s| s.state != "pending") {
            let before = self.shown.get(&step.name).cloned();
            if before.as_deref() == Some(step.state.as_str()) {
                continue;
            }
            if step.error.is_some() && step.state == "undone" && before.as_deref() != Some("failed")
            {
                changed.push(StepView {
                    state: "failed".into(),
                    ..step.clone()
                });
            }
            self.shown.insert(step.name.clone(), step.state.clone());
            changed.push(step.clone());
        }
        let (undone, forward): (Vec<StepView>, Vec<StepView>) =
            changed.into_iter().partition(|s| s.state == "undone");
        forward
            .into_iter()
            .chain(undone.into_iter().rev())
            .collect()
    }

    fn update_bar(&mut self, step: &StepView) {
        let bar = self.bars.entry(step.name.clone()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(80));
            b
        });
        if step.state == "running" {
            bar.set_message(step.name.clone());
        } else {
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.finish_with_message(describe(step));
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}

/// A job's outcome as lines, including what rollback did.
pub fn outcome(job: &JobView) -> String {
    let mut out = format!("job {} {}", job.id, job.state);
    if let Some(e) = &job.error {
        out.push_str(&format!(": {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(state: &str) -> StepView {
        StepView {
            name: "create_veth".into(),
            state: state.into(),
            started_at: Some("2026-11-28T10:00:00Z".into()),
            finished_at: Some("2026-11-28T10:00:00.002Z".into()),
            error: Some("boom".into()),
            undo_error: None,
        }
    }

    #[test]
    fn steps_read_as_sentences_with_their_time() {
        assert_eq!(describe(&step("done")), "✓ create_veth (2 ms)");
        assert_eq!(describe(&step("failed")), "✗ create_veth: boom");
        assert_eq!(describe(&step("undone")), "↺ create_veth undone");
    }

    fn job(states: &[(&str, &str)]) -> JobView {
        JobView {
            id: "j".into(),
            kind: "create".into(),
            container_id: Some(5),
            state: "failed".into(),
            steps: states
                .iter()
                .map(|(n, st)| StepView {
                    name: n.to_string(),
                    state: st.to_string(),
                    started_at: None,
                    finished_at: None,
                    error: (*n == "b").then(|| "boom".to_string()),
                    undo_error: None,
                })
                .collect(),
            error: None,
        }
    }

    #[test]
    fn a_failure_missed_between_polls_is_still_shown_and_undo_reads_newest_first() {
        let mut f = Follower::new();
        let shown = |f: &mut Follower, j: &JobView| -> Vec<String> {
            f.changes(j).iter().map(describe).collect()
        };
        assert_eq!(
            shown(&mut f, &job(&[("a", "done"), ("b", "running")])),
            ["✓ a", "… b"]
        );
        assert_eq!(
            shown(&mut f, &job(&[("a", "undone"), ("b", "undone")])),
            ["✗ b: boom", "↺ b undone", "↺ a undone"]
        );
        assert!(shown(&mut f, &job(&[("a", "undone"), ("b", "undone")])).is_empty());
    }
}
