//! The in-memory index: a transaction's changes seen by its own reads at once, by the index
//! only once applied.

use std::cell::RefCell;
use std::ops::Bound;

use time::OffsetDateTime;

use super::{Index, Staged, View};
use crate::queue::job::{ContainerRecord, Job, JobRequest, Origin};
use crate::queue::test_support::{cid, spec};

/// A create job of container `n` at sequence number `seq`, asked by `origin`.
fn job(n: u64, seq: u64, origin: Origin) -> Job {
    let request = JobRequest::Create(spec(n, 2, n as u8));
    Job::new(request, origin, seq, OffsetDateTime::now_utc())
}

/// The record of container `n` at `192.168.2.<host>`.
fn record(n: u64, host: u8) -> ContainerRecord {
    ContainerRecord::creating(
        &spec(n, 2, host),
        uuid::Uuid::nil(),
        OffsetDateTime::now_utc(),
    )
}

/// Jobs 1..=n at sequence numbers 1..=n, the odd ones queued by an operator.
fn built(n: u64) -> (Index, Vec<Job>) {
    let mut index = Index::default();
    let jobs: Vec<Job> = (1..=n).map(|s| job(s, s, Origin::Operator)).collect();
    for j in &jobs {
        index.insert_job(j, j.seq % 2 == 1);
    }
    (index, jobs)
}

fn seqs(index: &Index, newest_first: bool, chunk: usize) -> Vec<u64> {
    let mut from = Bound::Unbounded;
    let mut seen = Vec::new();
    loop {
        let next = index.jobs_after(from, newest_first, chunk);
        let Some((last, _)) = next.last() else {
            return seen;
        };
        from = Bound::Excluded(*last);
        seen.extend(next.iter().map(|(s, _)| *s));
    }
}

#[test]
fn a_transaction_reads_its_own_changes_and_the_index_gets_them_only_when_applied() {
    let (mut index, jobs) = built(3);
    let fourth = job(4, 4, Origin::Operator);
    let addr = |r: &ContainerRecord| (r.vlan, r.ip.addr);
    let rec = record(5, 5);
    let staged = RefCell::new(Staged::default());
    {
        let view = View {
            index: &index,
            staged: &staged,
        };
        assert_eq!(view.queued(), 2);
        view.add_job(&fourth);
        view.push(&fourth);
        view.take(&jobs[0]);
        view.take(&jobs[1]);
        assert_eq!(view.queued(), 2, "one in, one out; job 2 never was queued");
        view.hold(&rec);
        assert_eq!(view.holder(addr(&rec)), Some(cid(5)));
    }
    // Not applied: as before.
    assert_eq!(index.queued(), 2);
    assert_eq!(index.first_queued(), Some((1, jobs[0].id)));
    index.apply(staged.into_inner());
    assert_eq!(index.queued(), 2);
    assert_eq!(index.first_queued(), Some((3, jobs[2].id)));
    assert_eq!(seqs(&index, false, 10), [1, 2, 3, 4]);
    let staged = RefCell::new(Staged::default());
    let view = View {
        index: &index,
        staged: &staged,
    };
    assert_eq!(view.holder(addr(&rec)), Some(cid(5)), "held once applied");
    view.free(&rec);
    assert_eq!(view.holder(addr(&rec)), None, "freed in the transaction");
    assert_eq!(index.addrs.get(&addr(&rec)), Some(&cid(5)));
}

#[test]
fn a_push_of_a_job_already_queued_counts_it_once() {
    let (index, jobs) = built(1);
    let repair = job(9, 9, Origin::Reconcile);
    let staged = RefCell::new(Staged::default());
    let view = View {
        index: &index,
        staged: &staged,
    };
    view.push(&jobs[0]);
    view.push(&repair);
    view.push(&repair);
    assert_eq!(view.queued(), 2);
}

#[test]
fn repairs_come_after_every_job_an_operator_queued_whatever_their_number() {
    let repair = job(1, 1, Origin::Reconcile);
    let asked = job(2, 2, Origin::Operator);
    let mut index = Index::default();
    index.insert_job(&repair, true);
    index.insert_job(&asked, true);
    assert_eq!(index.first_queued(), Some((2, asked.id)));
    let staged = RefCell::new(Staged::default());
    View {
        index: &index,
        staged: &staged,
    }
    .take(&asked);
    index.apply(staged.into_inner());
    assert_eq!(index.first_queued(), Some((1, repair.id)));
}

#[test]
fn the_enqueue_order_is_read_in_chunks_either_way() {
    let (mut index, jobs) = built(10);
    let staged = RefCell::new(Staged::default());
    View {
        index: &index,
        staged: &staged,
    }
    .remove_job(&jobs[4]);
    index.apply(staged.into_inner());
    assert_eq!(seqs(&index, false, 3), [1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(seqs(&index, true, 3), [10, 9, 8, 7, 6, 4, 3, 2, 1]);
}

#[test]
fn a_key_goes_with_its_job_only_while_it_names_that_job() {
    let mut first = job(1, 1, Origin::Operator);
    first.idempotency_key = Some("k".into());
    first.idempotency_digest = Some([1; 16]);
    let mut index = Index::default();
    index.insert_job(&first, true);
    let mut second = job(2, 2, Origin::Operator);
    second.idempotency_key = first.idempotency_key.clone();
    second.idempotency_digest = Some([2; 16]);
    let staged = RefCell::new(Staged::default());
    let view = View {
        index: &index,
        staged: &staged,
    };
    assert_eq!(view.key("k").map(|k| k.job), Some(first.id));
    // A job that carries the key but is not the one it names leaves it alone.
    view.remove_job(&second);
    assert_eq!(view.key("k").map(|k| k.job), Some(first.id));
    view.remove_job(&first);
    assert_eq!(view.key("k"), None);
}

#[test]
fn two_records_holding_one_address_are_refused() {
    let mut index = Index::default();
    index.insert_record(&record(1, 9)).unwrap();
    index
        .insert_record(&record(1, 9))
        .expect("the same record again is no clash");
    let twice = index.insert_record(&record(2, 9)).unwrap_err();
    assert_eq!(twice.holders, [cid(1), cid(2)]);
}
