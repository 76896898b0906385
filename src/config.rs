//! The daemon's configuration: command-line flags over an optional TOML file over defaults,
//! checked as a whole before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{CloneSetting, FabricArgs, LogFormat, PeerList, ServeArgs, VlanList};
use crate::cluster::keys::check_cluster_name;
use crate::cluster::{ClusterConfig, DEFAULT_CLUSTER};
use crate::fabric::peers::check_peers;
use crate::fabric::FabricConfig;
use crate::model::{check_vlan_list, HostId, VlanId};
use crate::queue::StoreOptions;
use crate::steps::DEFAULT_STEP_TIMEOUT;
use crate::templates::{Template, Templates};
use crate::tls::ServerTls;

/// Default listen address: loopback only, so an unconfigured daemon is not open to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/creepy-meow";
/// Default LXC path.
pub const DEFAULT_LXC_PATH: &str = "/var/lib/lxc";
/// Default seconds between reconcile passes.
pub const DEFAULT_RECONCILE_SECS: u64 = 30;
/// Default LXC template (works offline).
pub const DEFAULT_TEMPLATE: &str = "busybox";

/// The TOML file: every key optional, named as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    host_id: Option<u64>,
    underlay: Option<String>,
    vlans: Option<Vec<u64>>,
    mtu: Option<u32>,
    peers: Option<Vec<String>>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    lxc_path: Option<PathBuf>,
    template: Option<String>,
    template_args: Option<Vec<String>>,
    templates: Option<Vec<String>>,
    template_options: Option<std::collections::BTreeMap<String, TemplateOptions>>,
    clone: Option<CloneSetting>,
    token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    log_format: Option<LogFormat>,
    paused: Option<bool>,
    insecure_no_auth: Option<bool>,
    insecure_plain_http: Option<bool>,
    max_queued: Option<usize>,
    keep_jobs: Option<usize>,
    keep_days: Option<u64>,
    reconcile_interval: Option<u64>,
    step_timeout: Option<u64>,
    etcd: Option<Vec<String>>,
    cluster: Option<String>,
    api_url: Option<String>,
}

/// `[template-options.NAME]`: what a name listed in `templates` runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TemplateOptions {
    /// The LXC template (default: the name itself).
    lxc_template: Option<String>,
    /// Its arguments, after `--`.
    args: Option<Vec<String>>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// A sentence naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

/// Everything the daemon needs, resolved.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The fabric to ensure.
    pub fabric: FabricConfig,
    /// Listen address.
    pub listen: SocketAddr,
    /// Job store directory.
    pub data_dir: PathBuf,
    /// LXC path.
    pub lxc_path: PathBuf,
    /// The templates offered, the first the default.
    pub templates: Templates,
    /// Whether containers are cloned from images (`--clone`), else made by their template.
    pub clone: bool,
    /// Why image clones are full copies from the start rather than overlay snapshots (the
    /// kernel has no overlayfs, `sys::preflight`); `None`: overlay is tried first.
    pub full_copies: Option<String>,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// The certificate and key HTTPS is served with; plain HTTP without.
    pub tls: Option<ServerTls>,
    /// Log format.
    pub log_format: LogFormat,
    /// Start paused.
    pub paused: bool,
    /// Time between reconcile passes; zero: only at start.
    pub reconcile_every: std::time::Duration,
    /// How long a step, or an `lxc-*` tool, may take before it is killed and fails.
    pub step_timeout: std::time::Duration,
    /// Store limits.
    pub store: StoreOptions,
    /// Cluster mode (`--etcd`); `None`: this server is alone.
    pub cluster: Option<ClusterConfig>,
}

/// Reads a token file: the first line, trimmed, not empty.
///
/// # Errors
/// When the file cannot be read or holds no token.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(token)
}

impl DaemonConfig {
    /// Resolves flags over the config file over defaults, and checks the result.
    ///
    /// # Errors
    /// A sentence for the operator (exit code 2).
    pub fn resolve(args: &ServeArgs) -> Result<Self, String> {
        let file = match &args.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let mut fabric = fabric_config(args, &file)?;
        let (listen, token, tls) = access(args, &file)?;
        let cluster = cluster_config(args, &file, listen, tls.is_some())?;
        if cluster.is_some() {
            if !fabric.peers.is_empty() {
                return Err("--peers and --etcd both name the peers: in cluster mode the members are the peers, so leave out --peers".into());
            }
            fabric.cluster_peers = true;
        }
        let store = store_options(args, &file)?;
        let templates = templates(args, &file)?;
        let step_timeout = step_timeout(args, &file)?;
        Ok(Self {
            fabric,
            listen,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            lxc_path: args
                .lxc_path
                .clone()
                .or(file.lxc_path)
                .unwrap_or_else(|| DEFAULT_LXC_PATH.into()),
            templates,
            clone: args.clone.or(file.clone).unwrap_or(CloneSetting::On) == CloneSetting::On,
            full_copies: None,
            token,
            tls,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            paused: args.paused || file.paused.unwrap_or(false),
            reconcile_every: std::time::Duration::from_secs(
                args.reconcile_interval
                    .or(file.reconcile_interval)
                    .unwrap_or(DEFAULT_RECONCILE_SECS),
            ),
            step_timeout,
            store,
            cluster,
        })
    }
}

/// Cluster mode from `--etcd`, `--cluster` and `--api-url` (flags over the file), checked;
/// `None` without etcd.
fn cluster_config(
    args: &ServeArgs,
    file: &ConfigFile,
    listen: SocketAddr,
    tls: bool,
) -> Result<Option<ClusterConfig>, String> {
    let endpoints = if args.etcd.is_empty() {
        file.etcd.clone().unwrap_or_default()
    } else {
        args.etcd.clone()
    };
    let name = args.cluster.clone().or(file.cluster.clone());
    let api_url = args.api_url.clone().or(file.api_url.clone());
    if endpoints.is_empty() {
        if name.is_some() || api_url.is_some() {
            return Err("--cluster and --api-url belong to cluster mode: give --etcd too".into());
        }
        return Ok(None);
    }
    for url in &endpoints {
        if url.starts_with("https://") {
            return Err(format!(
                "etcd endpoint {url}: etcd over TLS is not supported yet; give its http:// client URL on a network only the servers reach (docs/OPERATIONS.md, Running etcd for real)"
            ));
        }
        if url.strip_prefix("http://").is_none_or(str::is_empty) {
            return Err(format!(
                "etcd endpoint {url:?} is not a URL: give http://HOST:PORT (etcd's client URL, port 2379 by default)"
            ));
        }
    }
    let name = name.unwrap_or_else(|| DEFAULT_CLUSTER.into());
    let name = check_cluster_name(&name).map_err(|e| e.to_string())?;
    let scheme = if tls { "https" } else { "http" };
    Ok(Some(ClusterConfig {
        endpoints,
        name,
        api_url: api_url.unwrap_or_else(|| format!("{scheme}://{listen}")),
    }))
}

/// `--step-timeout` (or `step-timeout`) in seconds, at least 1 [default:
/// [`DEFAULT_STEP_TIMEOUT`]].
fn step_timeout(args: &ServeArgs, file: &ConfigFile) -> Result<std::time::Duration, String> {
    match args.step_timeout.or(file.step_timeout) {
        None => Ok(DEFAULT_STEP_TIMEOUT),
        Some(0) => Err("--step-timeout must be at least 1 second".into()),
        Some(secs) => Ok(std::time::Duration::from_secs(secs)),
    }
}

/// The listen address, the token and TLS from flags over the file, checked together
/// ([`Exposure::check`]).
fn access(
    args: &ServeArgs,
    file: &ConfigFile,
) -> Result<(SocketAddr, Option<String>, Option<ServerTls>), String> {
    let token_file = args.token_file.clone().or(file.token_file.clone());
    let token = token_file.as_deref().map(read_token).transpose()?;
    let listen = match args.listen.or(file.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN
            .parse()
            .expect("default listen address is valid"),
    };
    let tls = server_tls(args, file)?;
    Exposure {
        tls: tls.is_some(),
        token: token.is_some(),
        insecure_plain_http: args.insecure_plain_http || file.insecure_plain_http.unwrap_or(false),
        insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
    }
    .check(listen)?;
    Ok((listen, token, tls))
}

/// `--tls-cert` and `--tls-key` (flags over the file), loaded and checked: both or neither.
fn server_tls(args: &ServeArgs, file: &ConfigFile) -> Result<Option<ServerTls>, String> {
    let cert = args.tls_cert.as_ref().or(file.tls_cert.as_ref());
    let key = args.tls_key.as_ref().or(file.tls_key.as_ref());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => ServerTls::load(cert, key)
            .map(Some)
            .map_err(|e| e.to_string()),
        (Some(_), None) => Err("--tls-cert needs --tls-key, the certificate's private key".into()),
        (None, Some(_)) => Err("--tls-key needs --tls-cert, the certificate it belongs to".into()),
    }
}

/// What protects a listener, and what the operator waived for a lab.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exposure {
    /// HTTPS (`--tls-cert`, `--tls-key`).
    pub tls: bool,
    /// A bearer token (`--token-file`).
    pub token: bool,
    /// `--insecure-plain-http`: plain HTTP off loopback is allowed.
    pub insecure_plain_http: bool,
    /// `--insecure-no-auth`: no token off loopback is allowed.
    pub insecure_no_auth: bool,
}

impl Exposure {
    /// Off loopback a listener needs TLS and a token, each unless waived (issue 14): the token
    /// must never cross a network in clear text, and no one may drive the daemon without it.
    /// On loopback anything goes, as only this host can connect.
    ///
    /// # Errors
    /// A sentence naming what is missing and the flags that give it (or waive it); also when
    /// TLS and its waiver are both given.
    pub fn check(&self, listen: SocketAddr) -> Result<(), String> {
        if self.tls && self.insecure_plain_http {
            return Err(
                "--insecure-plain-http contradicts --tls-cert: give one or the other".into(),
            );
        }
        if listen.ip().is_loopback() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !self.tls && !self.insecure_plain_http {
            missing.push((
                "TLS",
                "--tls-cert FILE --tls-key FILE (or --insecure-plain-http)",
            ));
        }
        if !self.token && !self.insecure_no_auth {
            missing.push((
                "authentication",
                "--token-file FILE (or --insecure-no-auth)",
            ));
        }
        if missing.is_empty() {
            return Ok(());
        }
        let (what, how): (Vec<_>, Vec<_>) = missing.into_iter().unzip();
        Err(format!(
            "refusing to listen on {listen} without {}: pass {}",
            what.join(" and without "),
            how.join(" and ")
        ))
    }

    /// The warnings a daemon on `listen` logs at start: one per protection waived off
    /// loopback.
    pub fn warnings(&self, listen: SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        if listen.ip().is_loopback() {
            return out;
        }
        if !self.tls {
            out.push(format!(
                "serving plain HTTP on {listen}, off loopback (--insecure-plain-http): the token and every request cross the network in clear text"
            ));
        }
        if !self.token {
            out.push(format!(
                "serving without authentication on {listen}, off loopback (--insecure-no-auth): anyone who reaches it can create and destroy containers"
            ));
        }
        out
    }
}

/// The store's limits from flags over the file over defaults.
fn store_options(args: &ServeArgs, file: &ConfigFile) -> Result<StoreOptions, String> {
    let mut store = StoreOptions::default();
    if let Some(n) = args.max_queued.or(file.max_queued) {
        if n == 0 {
            return Err("--max-queued must be at least 1".into());
        }
        store.max_queued = n;
    }
    if let Some(n) = args.keep_jobs.or(file.keep_jobs) {
        store.keep_finished = n;
    }
    if let Some(d) = args.keep_days.or(file.keep_days) {
        store.keep_for = std::time::Duration::from_secs(d.saturating_mul(24 * 3600));
    }
    Ok(store)
}

/// The fabric from flags over the file.
fn fabric_config(args: &ServeArgs, file: &ConfigFile) -> Result<FabricConfig, String> {
    let vlans = match (&args.fabric.vlans, &file.vlans) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(list)) => {
            let vlans = list
                .iter()
                .map(|&v| VlanId::new(v))
                .collect::<Result<Vec<_>, _>>()
                .and_then(check_vlan_list)
                .map_err(|e| format!("config vlans: {e}"))?;
            Some(VlanList(vlans))
        }
        (None, None) => None,
    };
    let host_id = match (args.fabric.host_id, file.host_id) {
        (Some(h), _) => Some(h),
        (None, Some(h)) => Some(HostId::new(h).map_err(|e| format!("config host-id: {e}"))?),
        (None, None) => None,
    };
    let peers = match (&args.fabric.peers, &file.peers) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(list)) => Some(PeerList(
            check_peers(list).map_err(|e| format!("config peers: {e}"))?,
        )),
        (None, None) => None,
    };
    FabricArgs {
        host_id,
        underlay: args.fabric.underlay.clone().or(file.underlay.clone()),
        vlans,
        mtu: args.fabric.mtu.or(file.mtu),
        peers,
    }
    .config()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

/// The templates offered: `--templates` (or `templates` in the file), each with its
/// `[template-options.NAME]`; otherwise the one `--template` (or `template`, default busybox)
/// with `--template-arg`s (or `template-args`).
fn templates(args: &ServeArgs, file: &ConfigFile) -> Result<Templates, String> {
    let listed = if args.templates.is_empty() {
        file.templates.clone()
    } else {
        Some(args.templates.clone())
    };
    let Some(names) = listed else {
        let lxc = args.template.clone().or(file.template.clone());
        let lxc = lxc.unwrap_or_else(|| DEFAULT_TEMPLATE.into());
        let targs = if args.template_args.is_empty() {
            file.template_args.clone().unwrap_or_default()
        } else {
            args.template_args.clone()
        };
        return Ok(Templates::single(&lxc, targs));
    };
    if args.template.is_some() || !args.template_args.is_empty() || file.template.is_some() {
        return Err("give either templates (a list, with [template-options.NAME] in the config file) or template and template-args, not both".into());
    }
    let options = file.template_options.as_ref();
    if let Some(unknown) = options.and_then(|o| o.keys().find(|k| !names.contains(k))) {
        return Err(format!(
            "[template-options.{unknown}] names no template in templates ({})",
            names.join(", ")
        ));
    }
    let list = names
        .iter()
        .map(|name| {
            let o = options.and_then(|o| o.get(name));
            Template {
                name: name.clone(),
                lxc_template: o
                    .and_then(|o| o.lxc_template.clone())
                    .unwrap_or_else(|| name.clone()),
                args: o.and_then(|o| o.args.clone()).unwrap_or_default(),
            }
        })
        .collect();
    Templates::new(list)
}
