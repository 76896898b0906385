//! The view of one namespace's links that `info` reads instead of asking the kernel: index,
//! name, master, up and MTU of every link, kept current by the kernel's link notifications
//! (RTNLGRP_LINK) and rebuilt from a dump when some were lost.
//!
//! This module is the view's logic alone. [`super::link_watch`] feeds it from a netlink
//! socket; the fake kernel (`fake_world`) feeds it from its own changes, so unit tests prove
//! what `info` sees after a change through the same code.
//!
//! It answers only while synced. From the start until the first dump is in, and from an
//! overrun (`ENOBUFS`: the socket's queue was full and the kernel dropped notifications) until
//! a dump begun after it is in, [`LinkTable::get`] says "ask the kernel".
//!
//! A dump and the notifications read while it runs go to the next view in the order they
//! were read: a notification read before a dump's part describes an earlier state than that
//! part, one read after it a later state, since the kernel queues both on the one socket.

use std::collections::HashMap;

use super::netlink::LinkState;

/// What the kernel said of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link as it is now (RTM_NEWLINK: made or changed; or a dump's entry).
    New(LinkState),
    /// The link of this index is gone (RTM_DELLINK).
    Gone(u32),
}

/// Links by index, with their names.
#[derive(Debug, Default)]
struct Links {
    /// Every link, by index.
    by_index: HashMap<u32, LinkState>,
    /// Index of each link, by name.
    by_name: HashMap<String, u32>,
}

impl Links {
    fn apply(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::New(link) => {
                // A rename frees the old name; a name held by another index (whose removal
                // was never told) goes to the new link.
                if let Some(old) = self.by_index.get(&link.index) {
                    if old.name != link.name {
                        self.by_name.remove(&old.name);
                    }
                }
                if let Some(other) = self.by_name.insert(link.name.clone(), link.index) {
                    if other != link.index {
                        self.by_index.remove(&other);
                    }
                }
                self.by_index.insert(link.index, link);
            }
            LinkEvent::Gone(index) => {
                if let Some(old) = self.by_index.remove(&index) {
                    self.by_name.remove(&old.name);
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<&LinkState> {
        self.by_index.get(self.by_name.get(name)?)
    }
}

/// The view, and where it stands against the kernel.
#[derive(Debug, Default)]
pub struct LinkTable {
    /// The links as the kernel last told; meaningful only while `synced`.
    current: Links,
    /// Whether `current` holds every change the kernel has reported to us.
    synced: bool,
    /// The next view, built from a dump under way and the notifications read meanwhile.
    next: Option<Links>,
    /// Notifications were lost while the dump under way ran: another dump must follow it.
    again: bool,
    /// The feed has ended for good (its socket failed): never synced again.
    ended: bool,
}

impl LinkTable {
    /// Link `name`: `Some(None)` when the view knows there is none, `None` when it cannot
    /// say (not synced) and the kernel must be asked.
    pub fn get(&self, name: &str) -> Option<Option<LinkState>> {
        self.synced.then(|| self.current.get(name).cloned())
    }

    /// Whether the view answers.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// A notification, read in the order the kernel queued it.
    pub fn apply(&mut self, event: LinkEvent) {
        if let Some(next) = &mut self.next {
            next.apply(event.clone());
        }
        if self.synced {
            self.current.apply(event);
        }
    }

    /// A dump is sent: the view stops answering until it ends ([`Self::end_dump`]).
    pub fn begin_dump(&mut self) {
        self.synced = false;
        self.current = Links::default();
        self.next = Some(Links::default());
        self.again = false;
    }

    /// One link of the dump under way.
    pub fn dumped(&mut self, link: LinkState) {
        if let Some(next) = &mut self.next {
            next.apply(LinkEvent::New(link));
        }
    }

    /// The dump under way ended. Returns whether another must be sent now (notifications were
    /// lost meanwhile); otherwise the view answers again.
    pub fn end_dump(&mut self) -> bool {
        let Some(next) = self.next.take() else {
            return false;
        };
        if self.ended {
            return false;
        }
        if std::mem::take(&mut self.again) {
            self.begin_dump();
            return true;
        }
        self.current = next;
        self.synced = true;
        false
    }

    /// Notifications were lost (`ENOBUFS`). Returns whether a dump must be sent now (none is
    /// under way; otherwise another follows the one under way).
    pub fn overrun(&mut self) -> bool {
        // Not synced from here (the dump's start says so), nor while a dump is under way.
        if self.ended {
            return false;
        }
        if self.next.is_some() {
            self.again = true;
            return false;
        }
        self.begin_dump();
        true
    }

    /// Whether the feed has ended for good.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The feed ended (its socket failed, or the daemon is going): the view never answers
    /// again, and every read goes to the kernel.
    pub fn end(&mut self) {
        self.ended = true;
        self.synced = false;
        self.current = Links::default();
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::LinkKind;

    fn link(index: u32, name: &str, up: bool) -> LinkState {
        LinkState {
            index,
            name: name.into(),
            kind: LinkKind::Other(String::new()),
            mtu: 1500,
            up,
            master: None,
        }
    }

    fn synced(links: &[LinkState]) -> LinkTable {
        let mut t = LinkTable::default();
        t.begin_dump();
        links.iter().cloned().for_each(|l| t.dumped(l));
        assert!(!t.end_dump());
        t
    }

    #[test]
    fn it_answers_only_once_a_dump_is_in() {
        let mut t = LinkTable::default();
        assert_eq!(t.get("a"), None);
        t.begin_dump();
        t.dumped(link(3, "a", true));
        assert_eq!(t.get("a"), None, "answered before the dump ended");
        assert!(!t.end_dump());
        assert_eq!(t.get("a"), Some(Some(link(3, "a", true))));
        assert_eq!(t.get("b"), Some(None));
    }

    #[test]
    fn a_change_and_a_removal_show_at_once() {
        let mut t = synced(&[link(3, "a", true), link(4, "b", true)]);
        t.apply(LinkEvent::New(link(3, "a", false)));
        t.apply(LinkEvent::Gone(4));
        assert_eq!(t.get("a"), Some(Some(link(3, "a", false))));
        assert_eq!(t.get("b"), Some(None));
    }

    #[test]
    fn a_rename_frees_the_old_name() {
        let mut t = synced(&[link(3, "a", true)]);
        t.apply(LinkEvent::New(link(3, "z", true)));
        assert_eq!(t.get("a"), Some(None));
        assert_eq!(t.get("z"), Some(Some(link(3, "z", true))));
        // A name reused by another index without the old one's removal being told.
        t.apply(LinkEvent::New(link(9, "z", false)));
        t.apply(LinkEvent::Gone(3));
        assert_eq!(t.get("z"), Some(Some(link(9, "z", false))));
    }

    #[test]
    fn notifications_read_during_a_dump_apply_in_order_with_it() {
        let mut t = LinkTable::default();
        t.begin_dump();
        // Read before the dump reached them: removed, then made again, then dumped.
        t.apply(LinkEvent::Gone(3));
        t.dumped(link(4, "b", true));
        t.apply(LinkEvent::New(link(5, "c", true)));
        t.apply(LinkEvent::Gone(4));
        assert!(!t.end_dump());
        assert_eq!(t.get("b"), Some(None), "removed after it was dumped");
        assert_eq!(t.get("c"), Some(Some(link(5, "c", true))));
    }

    #[test]
    fn an_overrun_stops_answers_until_a_later_dump_is_in() {
        let mut t = synced(&[link(3, "a", true)]);
        assert!(t.overrun(), "no dump asked for");
        assert_eq!(t.get("a"), None, "answered from a view that lost changes");
        t.dumped(link(3, "a", false));
        // Lost again while that dump ran: its result cannot be trusted either.
        assert!(!t.overrun());
        assert!(t.end_dump(), "no second dump asked for");
        assert_eq!(t.get("a"), None);
        t.dumped(link(3, "a", true));
        assert!(!t.end_dump());
        assert_eq!(t.get("a"), Some(Some(link(3, "a", true))));
    }

    #[test]
    fn an_ended_feed_never_answers_again() {
        let mut t = synced(&[link(3, "a", true)]);
        t.end();
        assert_eq!(t.get("a"), None);
        assert!(!t.overrun());
        t.begin_dump();
        assert!(!t.end_dump());
        assert_eq!(t.get("a"), None);
    }
}
