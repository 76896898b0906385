//! Unit tests of the job types: the lifecycle, the step-event mapping, the stored JSON.

use time::macros::datetime;

use super::job::{Job, JobKind, JobRequest, JobState, Origin, StepState};
use super::test_support::{cid, spec};
use super::QueueError;
use crate::spec::{StepEvent, StepName};

#[test]
fn lifecycle_allows_exactly_the_listed_moves() {
    use JobState::{Cancelled, Failed, Queued, Running, Succeeded};
    let allowed = [
        (Queued, Running),
        (Queued, Cancelled),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Queued),
    ];
    for from in JobState::ALL {
        for to in JobState::ALL {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
    // A sample of forbidden moves, spelled out.
    assert!(!Succeeded.can_become(Running));
    assert!(!Failed.can_become(Queued));
    assert!(!Cancelled.can_become(Queued));
    assert!(!Running.can_become(Cancelled));
    assert!(!Queued.can_become(Succeeded));
    assert!(!Queued.can_become(Queued));
}

#[test]
fn terminal_states_are_the_ends() {
    let terminal: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .collect();
    assert_eq!(
        terminal,
        [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
    );
    for s in terminal {
        assert!(JobState::ALL.iter().all(|&to| !s.can_become(to)));
    }
}

#[test]
fn transition_refuses_with_both_states() {
    let mut job = Job::new(
        JobRequest::Create(spec(5, 2, 5)),
        Origin::Operator,
        1,
        datetime!(2024-01-01 0:00 UTC),
    );
    assert_eq!(
        job.transition(JobState::Succeeded),
        Err(QueueError::BadTransition {
            from: JobState::Queued,
            to: JobState::Succeeded
        })
    );
    assert_eq!(job.state, JobState::Queued);
    job.transition(JobState::Running).unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(
        QueueError::BadTransition {
            from: JobState::Succeeded,
            to: JobState::Running
        }
        .to_string(),
        "a job cannot go from succeeded to running"
    );
}

#[test]
fn new_jobs_list_their_steps_pending() {
    let now = datetime!(2024-01-01 0:00 UTC);
    let create = Job::new(JobRequest::Create(spec(5, 2, 5)), Origin::Operator, 1, now);
    assert_eq!(create.kind, JobKind::Create);
    assert_eq!(create.container_id, Some(cid(5)));
    let names: Vec<&str> = create.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ensure_image",
            "create_container",
            "start_container",
            "create_veth",
            "configure_network"
        ]
    );
    assert!(create.steps.iter().all(|s| s.state == StepState::Pending));

    let destroy = Job::new(
        JobRequest::Destroy {
            id: cid(7),
            from: None,
        },
        Origin::Operator,
        2,
        now,
    );
    assert_eq!(destroy.kind, JobKind::Destroy);
    assert_eq!(destroy.container_id, Some(cid(7)));
    let names: Vec<&str> = destroy.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "stop_container",
            "delete_veth",
            "destroy_container",
            "remove_unused_images"
        ]
    );
}

#[test]
fn step_events_map_onto_records() {
    let t0 = datetime!(2024-01-01 0:00 UTC);
    let t1 = datetime!(2024-01-01 0:01 UTC);
    let t2 = datetime!(2024-01-01 0:02 UTC);
    let mut job = Job::new(JobRequest::Create(spec(5, 2, 5)), Origin::Operator, 1, t0);
    let [first, second, ..] = StepName::CREATE;

    job.apply_step_event_at(first, StepEvent::Started, t1);
    assert_eq!(job.steps[0].state, StepState::Running);
    assert_eq!(job.steps[0].started_at, Some(t1));
    job.apply_step_event_at(first, StepEvent::Done, t2);
    assert_eq!(job.steps[0].state, StepState::Done);
    assert_eq!(job.steps[0].finished_at, Some(t2));

    job.apply_step_event_at(second, StepEvent::Started, t1);
    job.apply_step_event_at(second, StepEvent::Failed("lxc-start exited 1"), t2);
    assert_eq!(job.steps[1].state, StepState::Failed);
    assert_eq!(job.steps[1].error.as_deref(), Some("lxc-start exited 1"));
    assert_eq!(job.steps[1].finished_at, Some(t2));

    // Undoing keeps the state until the undo ends.
    job.apply_step_event_at(second, StepEvent::Undoing, t2);
    assert_eq!(job.steps[1].state, StepState::Failed);
    job.apply_step_event_at(second, StepEvent::Undone, t2);
    assert_eq!(job.steps[1].state, StepState::Undone);

    job.apply_step_event_at(first, StepEvent::Undoing, t2);
    job.apply_step_event_at(first, StepEvent::UndoFailed("busy"), t2);
    assert_eq!(job.steps[0].state, StepState::Done);
    assert_eq!(job.steps[0].undo_error.as_deref(), Some("busy"));

    // The others are untouched; a step the job does not list is added, not lost.
    assert!(job.steps[2..].iter().all(|s| s.state == StepState::Pending));
    job.apply_step_event_at(StepName::StopContainer, StepEvent::Started, t1);
    assert_eq!(job.steps.len(), StepName::CREATE.len() + 1);
    assert_eq!(job.steps.last().unwrap().name, StepName::StopContainer);
}

#[test]
fn retry_reset_keeps_attempts() {
    let t = datetime!(2024-01-01 0:00 UTC);
    let mut job = Job::new(
        JobRequest::Destroy {
            id: cid(3),
            from: None,
        },
        Origin::Operator,
        1,
        t,
    );
    job.attempts = 2;
    job.started_at = Some(t);
    job.error = Some("boom".into());
    job.apply_step_event_at(StepName::StopContainer, StepEvent::Failed("x"), t);
    job.reset_for_retry();
    assert_eq!(job.attempts, 2);
    assert_eq!(job.error, None);
    assert_eq!(job.started_at, None);
    assert!(job
        .steps
        .iter()
        .all(|s| s.state == StepState::Pending && s.error.is_none()));
}

#[test]
fn stored_json_is_lowercase_and_round_trips() {
    let t = datetime!(2024-01-02 3:04:05 UTC);
    let job = Job::new(JobRequest::Create(spec(5, 2, 5)), Origin::Operator, 9, t);
    let v = serde_json::to_value(&job).unwrap();
    assert_eq!(v["kind"], "create");
    assert_eq!(v["state"], "queued");
    assert_eq!(v["request"]["kind"], "create");
    assert_eq!(v["request"]["ip"], "192.168.2.5/24");
    assert_eq!(v["steps"][0]["state"], "pending");
    assert_eq!(v["created_at"], "2024-01-02T03:04:05Z");
    let back: Job = serde_json::from_value(v).unwrap();
    assert_eq!(back, job);

    let destroy = Job::new(
        JobRequest::Destroy {
            id: cid(7),
            from: None,
        },
        Origin::Operator,
        10,
        t,
    );
    let v = serde_json::to_value(&destroy).unwrap();
    assert_eq!(
        v["request"],
        serde_json::json!({"kind": "destroy", "id": 7})
    );
    assert_eq!(serde_json::from_value::<Job>(v).unwrap(), destroy);
    assert_eq!(
        serde_json::from_str::<JobState>("\"cancelled\"").unwrap(),
        JobState::Cancelled
    );
}

#[test]
fn an_idempotency_digest_is_32_hex_digits_and_nothing_else_decodes() {
    let t = datetime!(2024-01-02 3:04:05 UTC);
    let mut job = Job::new(JobRequest::Create(spec(5, 2, 5)), Origin::Operator, 9, t);
    job.idempotency_key = Some("k".into());
    job.idempotency_digest = Some([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 1]);
    let mut v = serde_json::to_value(&job).unwrap();
    assert_eq!(v["idempotency_digest"], "0000000000000000000000000000ab01");
    assert_eq!(serde_json::from_value::<Job>(v.clone()).unwrap(), job);
    for bad in [
        "ab01",
        "+000000000000000000000000000ab01",
        "0000000000000000000000000000ab0g",
    ] {
        v["idempotency_digest"] = bad.into();
        assert!(
            serde_json::from_value::<Job>(v.clone()).is_err(),
            "{bad} decoded"
        );
    }
}

#[test]
fn a_job_stored_by_the_first_release_still_decodes() {
    let stored = r#"{"id":"5f0c7d7e-1a0b-4c55-9d53-6f4f2a0b7a11","seq":7,"kind":"destroy",
        "container_id":21,"request":{"kind":"destroy","id":21},"state":"succeeded",
        "steps":[
          {"name":"stop_container","state":"done","started_at":"2026-11-01T10:00:00Z","finished_at":"2026-11-01T10:00:01Z","error":null,"undo_error":null},
          {"name":"delete_veth","state":"done","started_at":"2026-11-01T10:00:01Z","finished_at":"2026-11-01T10:00:01Z","error":null,"undo_error":null},
          {"name":"destroy_container","state":"done","started_at":"2026-11-01T10:00:01Z","finished_at":"2026-11-01T10:00:02Z","error":null,"undo_error":null}],
        "error":null,"attempts":1,"created_at":"2026-11-01T09:59:59Z",
        "started_at":"2026-11-01T10:00:00Z","finished_at":"2026-11-01T10:00:02Z"}"#;
    let job: Job = serde_json::from_str(stored).unwrap();
    let names: Vec<StepName> = job.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, StepName::DESTROY[..3], "as stored then");
    assert_eq!(
        job.request,
        JobRequest::Destroy {
            id: cid(21),
            from: None
        }
    );
}
