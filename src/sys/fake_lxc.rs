//! In-memory [`Lxc`] for tests, tied to a [`FakeNetlink`] world: starting a container gives it
//! a fresh PID and network namespace, stopping it removes both (and so its veth peers).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::fake::FakeNetlink;
use super::inventory::ContainerEntry;
use super::lxc::{ContainerStatus, Lxc};
use super::reap::Reaper;
use super::{SysError, SysResult};
use crate::templates::{Template, Templates};

#[derive(Default)]
struct State {
    /// name -> PID of its init while running.
    containers: BTreeMap<String, Option<u32>>,
    /// Snapshot clone -> the container it was cloned from.
    clones: BTreeMap<String, String>,
    /// Containers whose rootfs a test "deleted by hand".
    lost_rootfs: std::collections::BTreeSet<String>,
    next_pid: u32,
    /// The next start never returns, as an `lxc-start` stuck on a container's init.
    hang_next_start: bool,
}

/// A fake LXC. Calls go to the shared log of its [`FakeNetlink`] as `lxc-<verb> <name>`.
#[derive(Clone)]
pub struct FakeLxc {
    net: FakeNetlink,
    state: Arc<Mutex<State>>,
}

impl FakeLxc {
    /// A fake LXC with no containers, whose namespaces live in `net`'s world.
    pub fn new(net: &FakeNetlink) -> Self {
        let state = State {
            next_pid: 1000,
            ..State::default()
        };
        Self {
            net: net.clone(),
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes container `name`'s rootfs, as an operator might by hand.
    pub fn lose_rootfs(&self, name: &str) {
        self.state().lost_rootfs.insert(name.into());
    }

    /// Stops container `name` behind the daemon's back (a reboot, an `lxc-stop` by hand).
    pub fn stop_by_hand(&self, name: &str) {
        let pid = self.state().containers.get_mut(name).and_then(Option::take);
        if let Some(pid) = pid {
            self.net.drop_netns(pid);
        }
    }

    /// Makes the next start hang forever (after its log line), as a stuck `lxc-start`.
    pub fn hang_next_start(&self) {
        self.state().hang_next_start = true;
    }

    /// Adds a container the daemon never made.
    pub fn add_foreign(&self, name: &str) {
        self.state().containers.insert(name.into(), None);
    }

    /// Makes `name` a stopped container like `image`.
    fn copy(&self, image: &str, name: &str) -> SysResult<()> {
        let mut s = self.state();
        if !s.containers.contains_key(image) {
            return Err(SysError::NotFound {
                what: format!("copy container {image}"),
            });
        }
        if s.containers.contains_key(name) {
            return Err(SysError::AlreadyExists {
                what: format!("copy container {image} into {name}"),
            });
        }
        s.containers.insert(name.into(), None);
        Ok(())
    }

    /// Names of existing containers.
    pub fn names(&self) -> Vec<String> {
        self.state().containers.keys().cloned().collect()
    }
}

#[async_trait]
impl Lxc for FakeLxc {
    async fn exists(&self, name: &str) -> SysResult<bool> {
        Ok(self.state().containers.contains_key(name))
    }

    async fn create(&self, name: &str, template: Option<&str>) -> SysResult<()> {
        match template {
            None => self.net.record(format!("lxc-create {name}"))?,
            Some(t) => self.net.record(format!("lxc-create {name} -t {t}"))?,
        }
        let mut s = self.state();
        if s.containers.contains_key(name) {
            return Err(SysError::AlreadyExists {
                what: format!("create container {name}"),
            });
        }
        s.containers.insert(name.into(), None);
        Ok(())
    }

    /// `busybox`, the default, and `alt`.
    fn templates(&self) -> Templates {
        let t = |name: &str| Template {
            name: name.into(),
            lxc_template: "busybox".into(),
            args: Vec::new(),
        };
        Templates::new(vec![t("busybox"), t("alt")]).expect("valid names")
    }

    async fn start(&self, name: &str) -> SysResult<()> {
        self.net.record(format!("lxc-start {name}"))?;
        let hang = std::mem::take(&mut self.state().hang_next_start);
        if hang {
            std::future::pending::<()>().await;
        }
        let mut s = self.state();
        let pid = s.next_pid;
        match s.containers.get_mut(name) {
            None => Err(SysError::NotFound {
                what: format!("start container {name}"),
            }),
            Some(Some(_)) => Ok(()),
            Some(slot) => {
                *slot = Some(pid);
                s.next_pid += 1;
                // A new network namespace holds only `lo`, and it is down (as LXC leaves it).
                let ns = self.net.netns_of(pid);
                ns.add_device("lo", 65536);
                ns.edit_link("lo", |l| l.up = false);
                Ok(())
            }
        }
    }

    async fn status(&self, name: &str) -> SysResult<Option<ContainerStatus>> {
        Ok(self
            .state()
            .containers
            .get(name)
            .map(|pid| ContainerStatus {
                state: if pid.is_some() { "RUNNING" } else { "STOPPED" }.into(),
                pid: *pid,
            }))
    }

    async fn stop(&self, name: &str) -> SysResult<()> {
        self.net.record(format!("lxc-stop {name}"))?;
        let pid = self.state().containers.get_mut(name).and_then(Option::take);
        if let Some(pid) = pid {
            self.net.drop_netns(pid);
        }
        Ok(())
    }

    async fn shutdown(&self, name: &str, _: std::time::Duration) -> SysResult<()> {
        self.net.record(format!("lxc-shutdown {name}"))?;
        let pid = self.state().containers.get_mut(name).and_then(Option::take);
        if let Some(pid) = pid {
            self.net.drop_netns(pid);
        }
        Ok(())
    }

    /// Containers change state at once here: none is ever starting or stopping.
    async fn survey(&self) -> SysResult<(Vec<ContainerEntry>, Vec<String>)> {
        let s = self.state();
        let entries = s
            .containers
            .iter()
            .map(|(name, pid)| ContainerEntry {
                name: name.clone(),
                has_config: true,
                has_rootfs: !s.lost_rootfs.contains(name),
                init_pid: *pid,
            })
            .collect();
        Ok((entries, Vec::new()))
    }

    async fn clone_overlay(&self, image: &str, name: &str) -> SysResult<()> {
        self.net.record(format!("lxc-copy -s {image} {name}"))?;
        self.copy(image, name)?;
        self.state().clones.insert(name.into(), image.into());
        Ok(())
    }

    async fn copy_full(&self, image: &str, name: &str) -> SysResult<()> {
        self.net.record(format!("lxc-copy {image} {name}"))?;
        self.copy(image, name)
    }

    async fn clones_of(&self, name: &str) -> SysResult<Vec<String>> {
        let s = self.state();
        Ok(s.clones
            .iter()
            .filter(|(_, image)| *image == name)
            .map(|(clone, _)| clone.clone())
            .collect())
    }

    /// 1 MiB per container.
    async fn disk_usage(&self, name: &str) -> SysResult<u64> {
        Ok(if self.state().containers.contains_key(name) {
            1 << 20
        } else {
            0
        })
    }

    async fn destroy(&self, name: &str) -> SysResult<()> {
        self.net.record(format!("lxc-destroy {name}"))?;
        let mut s = self.state();
        if s.clones.values().any(|image| image == name) {
            return Err(SysError::Unexpected {
                what: format!("destroy container {name}"),
                detail: "it has clones".into(),
            });
        }
        s.clones.remove(name);
        let removed = s.containers.remove(name);
        drop(s);
        if let Some(Some(pid)) = removed {
            self.net.drop_netns(pid);
        }
        Ok(())
    }
}

/// A fake [`Reaper`]: logs `reap <job>` in its [`FakeNetlink`]'s call log (so a test sees it
/// come before the undo it guards) and plays scripted failures; there is never anything to
/// kill.
#[derive(Clone)]
pub struct FakeReaper {
    net: FakeNetlink,
}

impl FakeReaper {
    /// A fake reaper logging into `net`'s call log.
    pub fn new(net: &FakeNetlink) -> Self {
        Self { net: net.clone() }
    }
}

#[async_trait]
impl Reaper for FakeReaper {
    async fn reap(&self, job: uuid::Uuid) -> SysResult<usize> {
        self.net.record(format!("reap {job}"))?;
        Ok(0)
    }
}
