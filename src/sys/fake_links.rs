//! The fake kernel's side of the view of the host's links (`super::link_table`), for tests:
//! starting it as `serve` does, dropping reports and overrunning as a full socket queue does,
//! and changes an operator makes by hand. The fake kernel itself reports each change of a host
//! link (`super::fake_world`).

use super::fake::FakeNetlink;
use super::fake_world::{remove_link, HOST};
use super::link_table::LinkTable;

impl FakeNetlink {
    /// Starts the view of the host's links that [`super::Netlink::link_watched`] answers from, as
    /// `serve` does (`sys::link_watch`): a dump of the links, then every change reported.
    pub fn watch_links(&self) {
        let mut table = LinkTable::default();
        table.begin_dump();
        self.world().watch = Some(table);
        self.deliver_link_dump();
    }

    /// Drops the reports of the changes that follow, as a full socket queue drops the kernel's
    /// notifications, until [`Self::overrun_links`].
    pub fn lose_link_reports(&self) {
        self.world().muted = true;
    }

    /// The view learns that reports were lost (`ENOBUFS`) and asks for a dump, which
    /// [`Self::deliver_link_dump`] delivers; changes are reported again meanwhile.
    pub fn overrun_links(&self) {
        let mut w = self.world();
        w.muted = false;
        if let Some(table) = &mut w.watch {
            table.overrun();
        }
    }

    /// Delivers the dump of the host's links the view asked for.
    pub fn deliver_link_dump(&self) {
        let mut w = self.world();
        let links = w.namespaces[&HOST].links.clone();
        if let Some(table) = &mut w.watch {
            links.into_iter().for_each(|l| table.dumped(l));
            table.end_dump();
        }
    }

    /// Whether the view of the host's links answers (synced).
    pub fn links_watched(&self) -> bool {
        self.world()
            .watch
            .as_ref()
            .is_some_and(LinkTable::is_synced)
    }

    /// Deletes link `name` as `ip link del` would (its peer goes with it).
    pub fn delete_by_hand(&self, name: &str) {
        let mut w = self.world();
        let index = w.namespaces[&self.ns()]
            .links
            .iter()
            .find(|l| l.name == name)
            .expect("link exists")
            .index;
        remove_link(&mut w, self.ns(), index);
    }
}
