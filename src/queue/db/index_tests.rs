//! The in-memory index: a transaction's changes seen by its own reads at once, by the index
//! only once applied.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::ops::Bound;

use uuid::Uuid;

use super::{Index, IndexBuilder, Staged, View};
use crate::model::{ContainerId, VlanId};
use crate::queue::job::Origin;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn addr(host: u8) -> (VlanId, Ipv4Addr) {
    (VlanId::new(2).unwrap(), Ipv4Addr::new(192, 168, 2, host))
}

fn cid(n: u64) -> ContainerId {
    ContainerId::new(n).unwrap()
}

/// Jobs 1..=n at sequence numbers 1..=n, the odd ones queued by an operator.
fn built(n: u64) -> Index {
    let mut b = IndexBuilder::default();
    for seq in 1..=n {
        let queued = (seq % 2 == 1).then_some(Origin::Operator);
        b.job(id(u128::from(seq)), seq, queued);
    }
    b.build()
}

#[test]
fn a_transaction_reads_its_own_changes_and_the_index_gets_them_only_when_applied() {
    let mut index = built(3);
    let staged = RefCell::new(Staged::default());
    {
        let view = View {
            index: &index,
            staged: &staged,
        };
        assert_eq!(view.queued(), 2);
        view.push(Origin::Operator, 4, id(4));
        view.add_job(4, id(4));
        assert!(view.take(Origin::Operator, 1), "job 1 was queued");
        assert!(!view.take(Origin::Operator, 1), "taken once only");
        assert!(!view.take(Origin::Operator, 2), "job 2 never was");
        assert_eq!(view.queued(), 2, "one in, one out");
        view.hold(addr(5), cid(5));
        assert_eq!(view.holder(addr(5)), Some(cid(5)));
    }
    // Not applied: as before.
    assert_eq!(index.queued(), 2);
    assert_eq!(index.first_queued(), Some((1, id(1))));
    index.apply(staged.into_inner());
    assert_eq!(index.queued(), 2);
    assert_eq!(index.first_queued(), Some((3, id(3))));
    let all: Vec<u64> = index
        .jobs_after(Bound::Unbounded, false, 10)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(all, [1, 2, 3, 4]);
    let staged = RefCell::new(Staged::default());
    let view = View {
        index: &index,
        staged: &staged,
    };
    assert_eq!(view.holder(addr(5)), Some(cid(5)), "held once applied");
    view.free(addr(5));
    assert_eq!(view.holder(addr(5)), None, "freed in the transaction");
    assert_eq!(index.addrs.get(&addr(5)), Some(&cid(5)));
}

#[test]
fn a_push_of_a_job_already_queued_counts_it_once() {
    let index = built(1);
    let staged = RefCell::new(Staged::default());
    let view = View {
        index: &index,
        staged: &staged,
    };
    view.push(Origin::Operator, 1, id(1));
    view.push(Origin::Reconcile, 9, id(9));
    view.push(Origin::Reconcile, 9, id(9));
    assert_eq!(view.queued(), 2);
}

#[test]
fn repairs_come_after_every_job_an_operator_queued_whatever_their_number() {
    let mut b = IndexBuilder::default();
    b.job(id(1), 1, Some(Origin::Reconcile));
    b.job(id(2), 2, Some(Origin::Operator));
    let mut index = b.build();
    assert_eq!(index.first_queued(), Some((2, id(2))));
    let staged = RefCell::new(Staged::default());
    View {
        index: &index,
        staged: &staged,
    }
    .take(Origin::Operator, 2);
    index.apply(staged.into_inner());
    assert_eq!(index.first_queued(), Some((1, id(1))));
}

#[test]
fn the_enqueue_order_is_read_in_chunks_either_way() {
    let mut index = built(10);
    let staged = RefCell::new(Staged::default());
    View {
        index: &index,
        staged: &staged,
    }
    .remove_job(5);
    index.apply(staged.into_inner());
    let walk = |newest_first: bool| {
        let mut from = Bound::Unbounded;
        let mut seen = Vec::new();
        loop {
            let chunk = index.jobs_after(from, newest_first, 3);
            let Some((last, _)) = chunk.last() else {
                return seen;
            };
            from = Bound::Excluded(*last);
            seen.extend(chunk.iter().map(|(s, _)| *s));
        }
    };
    assert_eq!(walk(false), [1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(walk(true), [10, 9, 8, 7, 6, 4, 3, 2, 1]);
}

#[test]
fn two_records_holding_one_address_are_refused() {
    let mut b = IndexBuilder::default();
    b.record(cid(1), addr(9)).unwrap();
    b.record(cid(1), addr(9))
        .expect("the same record again is no clash");
    let twice = b.record(cid(2), addr(9)).unwrap_err();
    assert_eq!(twice.holders, [cid(1), cid(2)]);
}
