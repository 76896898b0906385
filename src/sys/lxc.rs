//! LXC through its command-line tools, as the [`Lxc`] trait.
//!
//! The tools run with `tokio::process`, arguments as a vector (no shell ever sees user input),
//! and their stderr is kept in the error. The liblxc bindings were tried and rejected: they
//! fork inside the daemon and leak cgroups.
//!
//! LXC keeps a container's command socket in the network namespace that started it, so every
//! tool for a container must run from the daemon's own namespace (from elsewhere
//! `lxc-destroy` deletes a running container's rootfs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::inventory::ContainerEntry;
use super::{monitor, process, SysError, SysResult};
use crate::templates::Templates;

/// What LXC says of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// `RUNNING`, `STOPPED`, `STARTING`, ... as `lxc-info` prints it.
    pub state: String,
    /// PID of the container's init, while it runs.
    pub pid: Option<u32>,
}

/// The LXC verbs the engine uses.
#[async_trait]
pub trait Lxc: Send + Sync {
    /// Whether a container of this name exists (has a config).
    async fn exists(&self, name: &str) -> SysResult<bool>;
    /// Creates the container from template `template` (one of [`Self::templates`]; the
    /// default when `None`), with networking left to us.
    async fn create(&self, name: &str, template: Option<&str>) -> SysResult<()>;
    /// The templates it can create from, the default first.
    fn templates(&self) -> Templates;
    /// Starts it in the background; starting a running container succeeds.
    async fn start(&self, name: &str) -> SysResult<()>;
    /// Its state and init PID, or `None` when it does not exist.
    async fn status(&self, name: &str) -> SysResult<Option<ContainerStatus>>;
    /// Its init's PID while it runs (or LXC is starting or stopping it and init is there),
    /// read without starting a process where the implementation can.
    async fn init_pid(&self, name: &str) -> SysResult<Option<u32>> {
        Ok(self
            .status(name)
            .await?
            .filter(|s| s.state == "RUNNING")
            .and_then(|s| s.pid))
    }
    /// Stops it at once (SIGKILL); stopping a stopped container succeeds.
    async fn stop(&self, name: &str) -> SysResult<()>;
    /// Asks its init to halt, and kills it if it has not within `grace`; stopping a stopped
    /// container succeeds.
    async fn shutdown(&self, name: &str, grace: Duration) -> SysResult<()>;
    /// Destroys it and its rootfs; destroying an absent container succeeds.
    async fn destroy(&self, name: &str) -> SysResult<()>;
    /// Every container under the LXC path with the init PID of each running one, and the
    /// names of the containers LXC is starting or stopping right now
    /// ([`super::inventory::survey`]), read without starting a process.
    async fn survey(&self) -> SysResult<(Vec<ContainerEntry>, Vec<String>)>;
    /// One container's entry, as [`Self::survey`] lists it, or `None` when it has no
    /// directory.
    async fn entry(&self, name: &str) -> SysResult<Option<ContainerEntry>> {
        Ok(self.survey().await?.0.into_iter().find(|e| e.name == name))
    }
    /// Makes `name` an overlay snapshot clone of stopped container `image` (`lxc-copy -s -B
    /// overlay`): its rootfs is an upper directory over the image's, which is never written.
    async fn clone_overlay(&self, image: &str, name: &str) -> SysResult<()>;
    /// Makes `name` a full copy of stopped container `image` (`lxc-copy`, the rootfs copied).
    async fn copy_full(&self, image: &str, name: &str) -> SysResult<()>;
    /// The existing snapshot clones of `name` (LXC refuses to destroy it while there are).
    async fn clones_of(&self, name: &str) -> SysResult<Vec<String>>;
    /// Bytes on disk under `name`'s directory (0 when it has none).
    async fn disk_usage(&self, name: &str) -> SysResult<u64>;
    /// Container name → init PID of the inits already found and known to run, without reading
    /// anything (a reconcile pass reads their addresses while it surveys). None by default.
    fn held_inits(&self) -> Vec<(String, u32)> {
        Vec::new()
    }
}

/// The container configuration every container gets: no network from LXC (`empty` gives the
/// container a namespace with only `lo`); the engine plumbs `eth0` itself.
pub const NET_CONFIG: &str =
    "# written by creepy-meow: networking is plumbed by the daemon\nlxc.net.0.type = empty\n";

/// The `lxc-*` tools the verbs run, each named once: `serve` checks they are on `PATH` before
/// it touches anything ([`super::preflight`]).
pub mod tool {
    /// Creates a container from its template.
    pub const CREATE: &str = "lxc-create";
    /// Starts one.
    pub const START: &str = "lxc-start";
    /// Stops one.
    pub const STOP: &str = "lxc-stop";
    /// Asks one's state.
    pub const INFO: &str = "lxc-info";
    /// Destroys one.
    pub const DESTROY: &str = "lxc-destroy";
    /// Clones an image into a container (only with images, `--clone on`).
    pub const COPY: &str = "lxc-copy";
    /// What every server needs, images or not.
    pub const ALWAYS: [&str; 5] = [CREATE, START, STOP, INFO, DESTROY];
}

/// How long an `lxc-*` tool may take before we give up on it, unless told otherwise
/// ([`LxcTools::with_tool_timeout`]).
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The real [`Lxc`], running `lxc-*` tools against one LXC path.
#[derive(Debug, Clone)]
pub struct LxcTools {
    path: PathBuf,
    templates: Templates,
    config_file: PathBuf,
    /// The inits found so far, kept between looks (`monitor::Known`).
    known: Arc<monitor::Known>,
    /// How long one tool may run before it is killed with its group.
    tool_limit: Duration,
}

impl LxcTools {
    /// Uses LXC path `path` (created if missing) and `template` with `template_args`.
    ///
    /// # Errors
    /// When the path or the network config file cannot be written.
    pub fn new(path: &Path, template: &str, template_args: Vec<String>) -> SysResult<Self> {
        Self::with_templates(path, Templates::single(template, template_args))
    }

    /// Uses LXC path `path` (created if missing) and `templates`, the first the default.
    ///
    /// # Errors
    /// When the path or the network config file cannot be written.
    pub fn with_templates(path: &Path, templates: Templates) -> SysResult<Self> {
        let io = |what: String| move |source| SysError::Io { what, source };
        std::fs::create_dir_all(path).map_err(io(format!("create LXC path {}", path.display())))?;
        let config_file = path.join(".creepy-meow-net.conf");
        std::fs::write(&config_file, NET_CONFIG)
            .map_err(io(format!("write {}", config_file.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            templates,
            config_file,
            known: Arc::default(),
            tool_limit: TOOL_TIMEOUT,
        })
    }

    /// The same tools, each killed with its process group after `limit` (`serve
    /// --step-timeout`: a tool outside a step, such as `info`'s `lxc-info`, gets as long as a
    /// step).
    pub fn with_tool_timeout(mut self, limit: Duration) -> Self {
        self.tool_limit = limit;
        self
    }

    /// The LXC path containers live under.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `program -P <path> args` for the current job (see [`super::process`]) and
    /// returns its stdout, or the error with stderr.
    async fn tool(&self, what: String, program: &str, args: &[&str]) -> SysResult<String> {
        let mut cmd = Command::new(program);
        cmd.arg("-P").arg(&self.path).args(args);
        let command = format!("{program} -P {} {}", self.path.display(), args.join(" "));
        process::run(what, program, cmd, command, self.tool_limit).await
    }

    /// Whether LXC runs `name` (running, starting or stopping): its monitor's command socket
    /// listens. What `lxc-info` would say is not `STOPPED`, without starting it.
    async fn has_monitor(&self, name: &str) -> SysResult<bool> {
        let socket = monitor::command_socket(&self.path, name);
        Ok(monitor::abstract_sockets()?.contains(&socket))
    }
}

/// Runs `f` (reads of `/proc` and the LXC path) on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> SysResult<T> + Send + 'static,
) -> SysResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SysError::Unexpected {
            what: what.into(),
            detail: e.to_string(),
        })?
}

/// Parses `lxc-info -s -p` output (with or without labels).
fn parse_info(out: &str) -> ContainerStatus {
    let mut status = ContainerStatus {
        state: "UNKNOWN".into(),
        pid: None,
    };
    for line in out.lines() {
        let (key, value) = line.split_once(':').unwrap_or(("", line));
        let value = value.trim();
        match key.trim() {
            "State" => status.state = value.to_string(),
            "PID" => status.pid = value.parse().ok(),
            _ => {}
        }
    }
    status
}

impl LxcTools {
    /// busybox's init halts on SIGUSR1; LXC's default halt signal (SIGPWR) means nothing to
    /// it, so a graceful `lxc-stop` would always wait out its whole grace period.
    async fn set_halt_signal(&self, name: &str) -> SysResult<()> {
        let config = self.path.join(name).join("config");
        let what = format!("set the halt signal in {}", config.display());
        let mut text = tokio::fs::read_to_string(&config)
            .await
            .map_err(|source| SysError::Io {
                what: what.clone(),
                source,
            })?;
        text.push_str("lxc.signal.halt = SIGUSR1\n");
        tokio::fs::write(&config, text)
            .await
            .map_err(|source| SysError::Io { what, source })
    }

    /// The busybox template's `rcS` runs `udhcpc` on eth0, whose "deconfig" flushes every
    /// address of eth0 when it starts: it races with the address we set, and wins sometimes.
    /// The network is ours to configure, so the DHCP client goes.
    async fn disable_dhcp_client(&self, name: &str) -> SysResult<()> {
        let rcs = self.path.join(name).join("rootfs/etc/init.d/rcS");
        let what = format!("disable the DHCP client in {}", rcs.display());
        let text = match tokio::fs::read_to_string(&rcs).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(SysError::Io { what, source }),
        };
        let kept: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("/bin/udhcpc") {
                    "# udhcpc disabled: creepy-meow configures eth0"
                } else {
                    l
                }
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        tokio::fs::write(&rcs, kept)
            .await
            .map_err(|source| SysError::Io { what, source })
    }
}

#[async_trait]
impl Lxc for LxcTools {
    async fn exists(&self, name: &str) -> SysResult<bool> {
        // One stat of a local file, answered from the inode cache in microseconds: cheaper
        // inline than a round trip through the blocking pool (`GET /api/container/info` asks
        // this on every request).
        Ok(self.path.join(name).join("config").exists())
    }

    async fn create(&self, name: &str, template: Option<&str>) -> SysResult<()> {
        let t = self
            .templates
            .resolve(template)
            .map_err(|detail| SysError::Unexpected {
                what: format!("create container {name}"),
                detail,
            })?;
        let config = self.config_file.to_string_lossy().into_owned();
        let mut args = vec!["-n", name, "-t", &t.lxc_template, "-f", &config];
        if !t.args.is_empty() {
            args.push("--");
            args.extend(t.args.iter().map(String::as_str));
        }
        self.tool(format!("create container {name}"), tool::CREATE, &args)
            .await?;
        if t.lxc_template == "busybox" {
            self.disable_dhcp_client(name).await?;
            self.set_halt_signal(name).await?;
        }
        Ok(())
    }

    fn templates(&self) -> Templates {
        self.templates.clone()
    }

    async fn start(&self, name: &str) -> SysResult<()> {
        // The monitor's PID file is how `init_pid` finds init without a process (`monitor`).
        let pidfile = monitor::pidfile(&self.path, name);
        let pidfile = pidfile.to_string_lossy();
        let started = self
            .tool(
                format!("start container {name}"),
                tool::START,
                &["-n", name, "-d", "-p", &pidfile],
            )
            .await;
        match started {
            // Starting a running container is done already (a start or restart run again
            // after a crash): asked only when lxc-start refused, so a create pays nothing.
            Err(e) => match self.status(name).await {
                Ok(Some(s)) if s.state == "RUNNING" => Ok(()),
                _ => Err(e),
            },
            Ok(_) => Ok(()),
        }
    }

    async fn status(&self, name: &str) -> SysResult<Option<ContainerStatus>> {
        if !self.exists(name).await? {
            return Ok(None);
        }
        let out = self
            .tool(
                format!("query container {name}"),
                tool::INFO,
                &["-n", name, "-s", "-p"],
            )
            .await?;
        Ok(Some(parse_info(&out)))
    }

    async fn init_pid(&self, name: &str) -> SysResult<Option<u32>> {
        let (path, name, known) = (self.path.clone(), name.to_string(), self.known.clone());
        blocking("find a container's init", move || {
            monitor::init_pid(&path, &name, &known)
        })
        .await
    }

    async fn stop(&self, name: &str) -> SysResult<()> {
        if !self.has_monitor(name).await? {
            return Ok(());
        }
        self.tool(
            format!("stop container {name}"),
            tool::STOP,
            &["-n", name, "-k"],
        )
        .await
        .map(drop)
    }

    async fn entry(&self, name: &str) -> SysResult<Option<ContainerEntry>> {
        // `info` asks this per request: answered inline when it costs a stat or two and a
        // poll (no directory, or an init already held), like `exists`.
        if let Some(answer) = super::inventory::entry_if_cheap(&self.path, name, &self.known) {
            return Ok(answer);
        }
        let (path, name, known) = (self.path.clone(), name.to_string(), self.known.clone());
        blocking("read a container's directory", move || {
            super::inventory::entry(&path, &name, &known)
        })
        .await
    }

    fn held_inits(&self) -> Vec<(String, u32)> {
        self.known.held_all()
    }

    async fn clone_overlay(&self, image: &str, name: &str) -> SysResult<()> {
        let what = format!("clone container {name} from {image}");
        let args = ["-n", image, "-N", name, "-s", "-B", "overlay"];
        self.tool(what, tool::COPY, &args).await.map(drop)
    }

    async fn copy_full(&self, image: &str, name: &str) -> SysResult<()> {
        let what = format!("copy container {name} from {image}");
        let args = ["-n", image, "-N", name];
        self.tool(what, tool::COPY, &args).await.map(drop)
    }

    async fn clones_of(&self, name: &str) -> SysResult<Vec<String>> {
        let (path, name) = (self.path.clone(), name.to_string());
        blocking("read a container's clones", move || {
            super::lxc_files::clones_of(&path, &name)
        })
        .await
    }

    async fn disk_usage(&self, name: &str) -> SysResult<u64> {
        let dir = self.path.join(name);
        blocking("measure a container's directory", move || {
            super::lxc_files::disk_usage(&dir)
        })
        .await
    }

    async fn survey(&self) -> SysResult<(Vec<ContainerEntry>, Vec<String>)> {
        let (path, known) = (self.path.clone(), self.known.clone());
        blocking("read the LXC path", move || {
            super::inventory::survey(&path, &known)
        })
        .await
    }

    async fn shutdown(&self, name: &str, grace: Duration) -> SysResult<()> {
        if !self.has_monitor(name).await? {
            return Ok(());
        }
        let secs = grace.as_secs().max(1).to_string();
        self.tool(
            format!("shut down container {name}"),
            tool::STOP,
            &["-n", name, "-t", &secs],
        )
        .await
        .map(drop)
    }

    async fn destroy(&self, name: &str) -> SysResult<()> {
        let dir = self.path.join(name);
        if self.exists(name).await? {
            self.tool(
                format!("destroy container {name}"),
                tool::DESTROY,
                &["-n", name, "-f"],
            )
            .await?;
        }
        // lxc-create that failed midway can leave a directory with no config: remove it too.
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SysError::Io {
                what: format!("remove {}", dir.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_output_is_parsed_with_or_without_labels() {
        let s = parse_info("State:          RUNNING\nPID:            12156\n");
        assert_eq!(
            s,
            ContainerStatus {
                state: "RUNNING".into(),
                pid: Some(12156)
            }
        );
        let s = parse_info("State:          STOPPED\n");
        assert_eq!(s.pid, None);
        assert_eq!(s.state, "STOPPED");
    }
}
