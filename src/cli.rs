//! Command-line arguments: one subcommand per thing an operator does.

use std::net::Ipv4Addr;

use clap::{Args, Parser, Subcommand};

use crate::fabric::peers::parse_peer_list;
use crate::fabric::FabricConfig;
use crate::model::{parse_vlan_list, HostId, VlanId};

/// Provisions LXC containers onto VXLAN overlay networks that span many servers.
#[derive(Debug, Parser)]
#[command(name = "creepy-meow", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of its largest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build (or repair) this server's host fabric: vxlanV + brV per VLAN. Run once per boot;
    /// running it again on a correct fabric changes nothing.
    Setup(SetupArgs),
    /// Run the provisioning daemon: ensure the fabric, recover interrupted jobs, serve the HTTP
    /// API and run queued jobs one at a time.
    Serve(ServeArgs),
    /// Ask a server to create a container and follow the job (exit 0 once it runs).
    Create(CreateArgs),
    /// Ask a server to destroy a container and follow the job.
    Destroy(ContainerJobArgs),
    /// Start a stopped container with its network and follow the job (exit 0 once it runs).
    /// Its desired state becomes running: the daemon starts it again after a reboot.
    Start(ContainerJobArgs),
    /// Stop a container (its init is asked to halt, then killed after a grace period) and
    /// follow the job. Its desired state becomes stopped: it stays stopped after a reboot.
    Stop(ContainerJobArgs),
    /// Stop, then start a container with its network, and follow the job.
    Restart(ContainerJobArgs),
    /// List the containers of a server (with --detail: desired state and health too).
    List(ListArgs),
    /// Show one container: its VLAN, address, LXC state, PID, MTU, host veth, desired state
    /// and health.
    Info(InfoArgs),
    /// Show the last reconcile pass: what had drifted from the desired state, the jobs that
    /// repair it, and what the daemon left alone as foreign (--now runs a pass first).
    Reconcile(ReconcileArgs),
    /// List the images containers are cloned from: per template offered, each version with
    /// its build time, size on disk and the containers cloned from it.
    Images(ImagesArgs),
    /// Build a new version of a template's image ahead of the first create that needs it, and
    /// follow the job. Containers cloned from older versions keep them; an old version goes
    /// once its last clone is destroyed.
    BuildImage(BuildImageArgs),
    /// List jobs, newest first.
    Jobs(JobsArgs),
    /// Show one job, or wait for it with --wait.
    Job(JobArgs),
    /// Tail the server's events as they are committed: each job and step state change, each
    /// container found missing, kept as leftover, or given a new desired state. Runs until
    /// interrupted; --json prints one event's JSON per line.
    Events(EventsArgs),
    /// Cluster mode (serve --etcd): the servers of the cluster (`hosts`: live members with
    /// their underlay address, VLANs and API URL, and servers holding containers whose lease
    /// expired) or every container reserved in it (`containers`: ID, VLAN, address, server).
    Cluster(ClusterArgs),
}

/// How the client reaches its server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's API: http://HOST:PORT, or https://HOST:PORT for a server with --tls-cert.
    #[arg(
        long,
        value_name = "URL",
        env = "CREEPY_MEOW_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,

    /// File holding the bearer token (or set CREEPY_MEOW_TOKEN to the token itself).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// For an https:// server: trust only the CA certificates in this PEM file (a lab's own CA)
    /// instead of the system's roots.
    #[arg(long, value_name = "FILE", env = "CREEPY_MEOW_CACERT")]
    pub cacert: Option<std::path::PathBuf>,

    /// Print the API's JSON instead of tables, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Container ID, 1..=9999999 (the container is named `container<ID>`).
    #[arg(long)]
    pub id: u64,
    /// VLAN to join (one the server serves).
    #[arg(long)]
    pub vlan: u64,
    /// The container's address with prefix, like 192.168.2.5/24.
    #[arg(long)]
    pub ip: String,
    /// Default gateway inside the container.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Template to create it from, one the server offers (`serve --templates`) [default: the
    /// server's first].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// Print the accepted job and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of the commands that make a job on one container: `destroy`, `start`, `stop`,
/// `restart`.
#[derive(Debug, Args)]
pub struct ContainerJobArgs {
    /// Container ID.
    pub id: u64,
    /// Print the accepted job and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// What to show.
    #[arg(value_enum)]
    pub view: ClusterView,
    /// The server (any member of the cluster).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What `cluster` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterView {
    /// The servers: live members, and those holding containers whose lease expired.
    Hosts,
    /// Every container reserved in the cluster.
    Containers,
}

/// Arguments of `build-image`.
#[derive(Debug, Args)]
pub struct BuildImageArgs {
    /// The template whose image to build, one the server offers (`serve --templates`).
    pub template: String,
    /// Print the accepted job and return at once instead of following it.
    #[arg(long)]
    pub no_wait: bool,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One line per container with its record state, desired state and health (as the last
    /// reconcile pass found it).
    #[arg(long)]
    pub detail: bool,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Run a pass now (its repairs are queued as jobs of origin reconcile) and show it,
    /// instead of the last one.
    #[arg(long)]
    pub now: bool,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Container ID.
    pub id: u64,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Job ID.
    pub job_id: String,
    /// Follow the job until it ends.
    #[arg(long)]
    pub wait: bool,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only the events of this job (without --since: from its first event).
    #[arg(long, value_name = "JOB_ID")]
    pub job: Option<String>,
    /// Only the events of this container.
    #[arg(long, value_name = "ID")]
    pub container: Option<u64>,
    /// Start after event number N (events are kept as long as their jobs) [default: only new
    /// events, or a job's whole history with --job].
    #[arg(long, value_name = "N")]
    pub since: Option<u64>,
    /// The server.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The fabric options, shared by `setup` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct FabricArgs {
    /// This server's unique ID, 1..=254: the last byte of its addresses (`192.168.V.<ID>`).
    #[arg(long, value_name = "N")]
    pub host_id: Option<HostId>,

    /// The underlay interface VXLAN traffic leaves by [default: eth1].
    #[arg(long, value_name = "IFACE")]
    pub underlay: Option<String>,

    /// The VLANs this server serves, comma-separated; each gets vxlanV and brV [default: 2,3,4].
    #[arg(long, value_name = "LIST", value_parser = parse_vlans)]
    pub vlans: Option<VlanList>,

    /// Overlay MTU [default: the underlay's MTU minus 50, the VXLAN-over-IPv4 overhead].
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u32>,

    /// The other servers' underlay IPv4 addresses, comma-separated, for underlays without
    /// multicast (most clouds): each vxlanV then floods broadcast and unknown frames by
    /// unicast to every peer (head-end replication) instead of to group 239.0.0.V. This
    /// server's own address may be listed (it is skipped), so every server can share one
    /// list. Every server of the fabric needs the same mode [default: none: multicast].
    #[arg(long, value_name = "ADDR[,ADDR...]", value_parser = parse_peers)]
    pub peers: Option<PeerList>,
}

/// A validated peer list (a newtype, so clap treats it as one value rather than many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerList(pub Vec<Ipv4Addr>);

fn parse_peers(s: &str) -> Result<PeerList, String> {
    parse_peer_list(s).map(PeerList).map_err(|e| e.to_string())
}

/// A validated VLAN list (a newtype, so clap treats it as one value rather than many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanList(pub Vec<VlanId>);

fn parse_vlans(s: &str) -> Result<VlanList, String> {
    parse_vlan_list(s).map(VlanList).map_err(|e| e.to_string())
}

/// Default underlay interface.
pub const DEFAULT_UNDERLAY: &str = "eth1";
/// Default VLANs.
pub const DEFAULT_VLANS: &str = "2,3,4";

impl FabricArgs {
    /// The VLANs asked for, or the default list.
    pub fn vlans_or_default(&self) -> Vec<VlanId> {
        match &self.vlans {
            Some(v) => v.0.clone(),
            None => parse_vlan_list(DEFAULT_VLANS).expect("the default VLAN list is valid"),
        }
    }

    /// The fabric configuration, once a host ID is known.
    ///
    /// # Errors
    /// When `--host-id` was not given.
    pub fn config(&self) -> Result<FabricConfig, String> {
        let host_id = self
            .host_id
            .ok_or("--host-id is required: give this server's unique ID, 1 to 254")?;
        Ok(FabricConfig {
            host_id,
            underlay: self
                .underlay
                .clone()
                .unwrap_or_else(|| DEFAULT_UNDERLAY.into()),
            vlans: self.vlans_or_default(),
            mtu: self.mtu,
            peers: self.peers.clone().map(|p| p.0).unwrap_or_default(),
            cluster_peers: false,
        })
    }
}

/// Arguments of `setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The fabric to build.
    #[command(flatten)]
    pub fabric: FabricArgs,

    /// Take the fabric of --vlans down instead of building it.
    #[arg(long)]
    pub remove: bool,

    /// With --remove: delete bridges even while containers are still attached to them.
    #[arg(long, requires = "remove")]
    pub force: bool,
}

/// How `serve` makes a new container's rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloneSetting {
    /// Clone the template's image (built once, then an overlay snapshot per container).
    On,
    /// Run the template for every container (`lxc-create`), as before images.
    Off,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `serve`. Every option can also come from `--config FILE` (TOML, same names);
/// a flag given on the command line wins over the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The fabric to ensure at start.
    #[command(flatten)]
    pub fabric: FabricArgs,

    /// Address to listen on [default: 127.0.0.1:8080]. Anything but loopback needs HTTPS
    /// (--tls-cert and --tls-key) and a token (--token-file); a lab on a network of its own may
    /// say --insecure-plain-http and --insecure-no-auth instead.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// Where jobs and reservations are stored [default: /var/lib/creepy-meow].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// LXC path containers live under [default: /var/lib/lxc].
    #[arg(long, value_name = "DIR")]
    pub lxc_path: Option<std::path::PathBuf>,

    /// LXC template [default: busybox, which works offline; `download` needs the internet].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,

    /// An argument passed to the template after `--` (repeat for several), e.g. for
    /// `--template download`: `--template-arg=-d --template-arg=ubuntu ...`.
    #[arg(long = "template-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub template_args: Vec<String>,

    /// Offer several templates, by name, the first the default; a create request picks one
    /// with its `template` field. Each runs the LXC template of its name, unless the config
    /// file says otherwise: `[template-options.NAME]` with `lxc-template = "..."` and
    /// `args = [...]`. Instead of --template/--template-arg.
    #[arg(long, value_name = "NAME[,NAME...]", value_delimiter = ',')]
    pub templates: Vec<String>,

    /// How a container's rootfs is made [default: on]. `on`: the template runs once into an
    /// image (`image-<template>-v<N>` in the LXC path, built by the first create that needs
    /// it, or by `POST /api/images/<template>/build`) and each container is an overlay
    /// snapshot clone of it (a full copy where the file system cannot do overlay); `off`: the
    /// template runs for every container.
    #[arg(long, value_name = "on|off")]
    pub clone: Option<CloneSetting>,

    /// File holding the bearer token clients must send (`Authorization: Bearer <token>`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// Serve HTTPS with this certificate (PEM: the server's certificate first, then any
    /// intermediates up to, not including, the root). Needs --tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC); keep it readable by root only.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Cluster mode: etcd's client URLs, comma-separated (`http://10.0.0.9:2379`). The server
    /// then registers itself with the cluster, floods VXLAN by unicast to the live members
    /// that serve the same VLAN (no multicast, no --peers), and reserves every create's
    /// container ID and address cluster-wide before accepting it. Without it the server is
    /// alone, as before [default: none].
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// With --etcd: the cluster's name, the prefix of its keys in etcd, so several clusters
    /// can share one etcd [default: creepy-meow].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// With --etcd: the URL other servers and clients reach this server's API at, as listed by
    /// `GET /api/cluster/hosts` [default: from --listen and --tls-cert].
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,

    /// TOML file with any of these options (keys as the flags: `host-id = 1`, `vlans = [2, 3]`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Log format [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Start with the worker paused: jobs are accepted and wait (resume with POST /api/queue/resume).
    #[arg(long)]
    pub paused: bool,

    /// Allow listening on a non-loopback address without a token. Warned about at start.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Allow listening on a non-loopback address in plain HTTP, the token and every request in
    /// clear text: for labs on a network of their own. Warned about at start.
    #[arg(long)]
    pub insecure_plain_http: bool,

    /// Most jobs that may wait at once; past it creates get 503 [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_queued: Option<usize>,

    /// Finished jobs kept at most (the newest); older ones are pruned [default: 10000].
    #[arg(long, value_name = "N")]
    pub keep_jobs: Option<usize>,

    /// Finished jobs older than this many days are pruned [default: 7].
    #[arg(long, value_name = "DAYS")]
    pub keep_days: Option<u64>,

    /// Seconds between reconcile passes, which bring the host back in line with the records
    /// (containers that should run are started, broken networks repaired); 0 runs a pass only
    /// at start [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub reconcile_interval: Option<u64>,

    /// Seconds a step (and each `lxc-*` tool) may take; past it the tool is killed with its
    /// process group, the step fails as timed out and a create is rolled back [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub step_timeout: Option<u64>,
}
