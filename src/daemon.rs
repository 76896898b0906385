//! The daemon's start-up order and its life until shutdown, for any [`Host`] (the real one in
//! `serve`, a fake one in the API tests).
//!
//! Order matters: the store is opened first (a locked or corrupt one stops us before we touch
//! the host), then the fabric is ensured, interrupted jobs are reconciled, and only then does
//! the API accept requests and the worker take jobs.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::cluster::membership::node_id;
use crate::cluster::{Cluster, ClusterError, CALL_TIMEOUT};
use crate::config::{DaemonConfig, Exposure};
use crate::engine::Engine;
use crate::fabric::{ensure_fabric, resolve_flooding_of, FabricError};
use crate::images::Images;
use crate::metrics::Metrics;
use crate::queue::{JobStore, QueueError};
use crate::reconcile::Reconciler;
use crate::sys::etcd::EtcdKv;
use crate::sys::{memory, Host, Kv};
use crate::tls::ServerTls;
use crate::worker::{QueueControl, Worker};

/// How often finished jobs are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// How often free memory goes back to the kernel (`sys::memory::trim_every`): a busy worker
/// frees a few MiB a minute, so RSS lags what the daemon holds by about that much.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The job store.
    #[error("{0}")]
    Store(#[from] QueueError),
    /// The fabric.
    #[error("fabric: {0}")]
    Fabric(#[from] FabricError),
    /// Cluster mode could not start.
    #[error("cluster: {0}")]
    Cluster(String),
    /// Another live server holds this host ID in the cluster.
    #[error("cluster: {0}")]
    ClusterRefused(String),
    /// The listen address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl DaemonError {
    /// True when the operator must fix something before a restart can help (exit code 2).
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Fabric(f) => f.is_usage(),
            Self::Store(QueueError::InUse(_) | QueueError::ReadOnly(_))
            | Self::Listen { .. }
            | Self::Cluster(_)
            | Self::ClusterRefused(_) => true,
            _ => false,
        }
    }
}

/// Reconciles the jobs the last stop interrupted, before anything else runs.
async fn recover(worker: &Worker) -> Result<(), DaemonError> {
    let recovered = worker.recover().await?;
    if recovered > 0 {
        tracing::warn!(
            jobs = recovered,
            "reconciled jobs interrupted by the last stop"
        );
    }
    Ok(())
}

/// Queues the creates a run in cluster mode left gated (a crash before their reservation was
/// settled): alone there is no reservation to check, and a gate still there was never refused
/// to its client (a refusal removes it first), so it may have been accepted.
async fn open_gates_alone(store: &JobStore) -> Result<(), DaemonError> {
    for job in store.gated()? {
        if store.open_gate(&job).await?.is_some() {
            tracing::warn!(job_id = %job.id, container_id = job.container_id.map(tracing::field::display), "a create gated by cluster mode is queued: this server runs alone now");
        }
    }
    Ok(())
}

/// Binds the API's listener; returns it with the address bound (a port 0 resolved).
async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), DaemonError> {
    let failed = |source| DaemonError::Listen {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

/// Logs that the API serves on `addr`, how, and a warning for each protection the operator
/// waived off loopback ([`Exposure::warnings`]).
fn announce(cfg: &DaemonConfig, addr: SocketAddr) {
    let exposure = Exposure {
        tls: cfg.tls.is_some(),
        token: cfg.token.is_some(),
        ..Exposure::default()
    };
    for warning in exposure.warnings(addr) {
        tracing::warn!("{warning}");
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let cert = cfg
        .tls
        .as_ref()
        .map(|t| t.cert_path().display().to_string());
    let templates = cfg.templates.names().join(",");
    let fabric = cfg.fabric.mode();
    tracing::info!(%addr, scheme, cert = cert.as_deref(), paused = cfg.paused, %templates, clone = cfg.clone, %fabric, "serving");
}

/// Cluster mode's side of this server from `cfg.cluster` through `kv` (etcd when `None`):
/// its node UUID, its underlay address (the unicast flooding's source), and the check that no
/// other live server holds its host ID — made before the host is touched. etcd being away is
/// no reason not to start (the membership task keeps trying); another server with this host
/// ID is.
async fn cluster_of(
    cfg: &DaemonConfig,
    flooding: &crate::fabric::Flooding,
    kv: Option<Arc<dyn Kv>>,
) -> Result<Option<Arc<Cluster>>, DaemonError> {
    let Some(cc) = &cfg.cluster else {
        return Ok(None);
    };
    let node = node_id(&cfg.data_dir).map_err(|e| {
        DaemonError::Cluster(format!(
            "cannot keep the node ID in {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let underlay = flooding.local().ok_or_else(|| {
        DaemonError::Cluster(
            "cluster mode floods by unicast, and the fabric has no source address".into(),
        )
    })?;
    let kv = match kv {
        Some(kv) => kv,
        None => Arc::new(
            EtcdKv::connect(&cc.endpoints, CALL_TIMEOUT)
                .await
                .map_err(|e| DaemonError::Cluster(e.to_string()))?,
        ),
    };
    let cluster = Arc::new(Cluster::new(
        kv,
        &cc.name,
        cfg.fabric.host_id,
        node,
        underlay,
        cfg.fabric.vlans.clone(),
        cc.api_url.clone(),
    ));
    match cluster.check_host_id().await {
        Err(ClusterError::Refused(why)) => return Err(DaemonError::ClusterRefused(why)),
        Err(e) => {
            tracing::warn!(error = %e, endpoints = ?cc.endpoints, "etcd does not answer: serving without the cluster until it does (creates answer 503)")
        }
        Ok(()) => {}
    }
    tracing::info!(cluster = %cc.name, %node, %underlay, "cluster mode");
    Ok(Some(cluster))
}

/// Registers `cluster`'s server once its fabric exists (so the others flood to a server that
/// can answer); `None` when etcd does not answer (the membership task keeps trying).
async fn first_registration(cluster: &Cluster) -> Result<Option<i64>, DaemonError> {
    match cluster.register().await {
        Ok(lease) => Ok(Some(lease)),
        Err(ClusterError::Refused(why)) => Err(DaemonError::ClusterRefused(why)),
        Err(e) => {
            tracing::debug!(error = %e, "first registration failed; retrying");
            Ok(None)
        }
    }
}

/// Runs the daemon on `host` until `shutdown` fires. `ready` receives the bound address once
/// the API is accepting requests. In cluster mode the cluster's store is etcd.
///
/// # Errors
/// When the store cannot be opened, the fabric cannot be ensured, the address is taken, or
/// another live server holds this host ID in the cluster.
pub async fn run(
    cfg: DaemonConfig,
    host: Host,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), DaemonError> {
    run_with(cfg, host, None, shutdown, ready).await
}

/// [`run`], with `kv` as the cluster's store instead of etcd (tests give a fake).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    cfg: DaemonConfig,
    host: Host,
    kv: Option<Arc<dyn Kv>>,
    shutdown: CancellationToken,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> Result<(), DaemonError> {
    crate::testhook::install(&shutdown);
    let store = JobStore::open(&cfg.data_dir, cfg.store.clone())?;
    // A server refused membership (its host ID is another's) must not touch the fabric.
    let cluster = match &cfg.cluster {
        Some(_) => {
            let flooding = resolve_flooding_of(host.net.as_ref(), &cfg.fabric).await?;
            cluster_of(&cfg, &flooding, kv).await?
        }
        None => None,
    };
    let ensured = ensure_fabric(host.net.as_ref(), &cfg.fabric).await?;
    for action in &ensured.actions {
        tracing::info!(%action, "fabric repaired");
    }
    let flooding = &ensured.flooding;
    tracing::info!(mode = %flooding.mode(), %flooding, "fabric ensured");
    // Keep-alives from the first registration on: the lease (10 s) must not lapse while
    // recovery and the first reconcile pass run. Stopped with the daemon, or if the start
    // fails before it serves.
    let cluster_tasks = tokio_util::task::TaskTracker::new();
    let cluster_stop = shutdown.child_token();
    let _stop_cluster_on_return = cluster_stop.clone().drop_guard();
    let cluster = match cluster {
        Some(c) => {
            let lease = first_registration(&c).await?;
            cluster_tasks.spawn(c.clone().run_membership(lease, cluster_stop.clone()));
            Some(c)
        }
        None => None,
    };
    let mut engine =
        Engine::new(host.clone(), cfg.fabric.clone()).with_step_timeout(cfg.step_timeout);
    if cfg.clone {
        let mut images = Images::new(host.lxc.clone(), Arc::new(store.clone()));
        if let Some(reason) = cfg.full_copies.clone() {
            tracing::warn!(reason, "overlay clones are off");
            images = images.with_full_copies(reason);
        }
        engine = engine.with_images(Arc::new(images));
    }
    let control = QueueControl::new(cfg.paused);
    let metrics = Arc::new(Metrics::default());
    let worker = Worker {
        store: store.clone(),
        engine: engine.clone(),
        control: control.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    recover(&worker).await?;
    if cluster.is_none() {
        open_gates_alone(&store).await?;
    }
    let host_net = host.net.clone();
    let reconciler = Arc::new(Reconciler::new(
        store.clone(),
        host,
        cfg.fabric.clone(),
        control.clone(),
        metrics.clone(),
    ));
    // Before the worker takes a job: what should run is queued to start now.
    if let Err(e) = reconciler.pass().await {
        tracing::error!(error = %e, "the reconcile pass at start failed");
    }
    // Opening the store decodes every record and recovery and the first pass read them all:
    // what that left free goes back before the API opens.
    let _ = tokio::task::spawn_blocking(memory::release_free_memory).await;
    let (listener, addr) = bind(cfg.listen).await?;
    let pruner = store.spawn_pruner(PRUNE_EVERY, shutdown.clone());
    let trimmer = tokio::spawn(memory::trim_every(TRIM_EVERY, shutdown.clone()));
    let reconcile_loop = reconciler.spawn_loop(cfg.reconcile_every, shutdown.clone());
    let worker_task = tokio::spawn(worker.run());
    let cluster = cluster.inspect(|cluster| {
        let sd = cluster_stop.clone();
        cluster_tasks.spawn(cluster.clone().run_peers(host_net.clone(), sd.clone()));
        cluster_tasks.spawn(cluster.clone().run_sync(store.clone(), control.clone(), sd));
    });
    cluster_tasks.close();
    let feeds = tokio_util::task::TaskTracker::new();
    let state = Arc::new(AppState {
        store,
        engine,
        control,
        token: cfg.token.clone(),
        metrics,
        reconciler,
        shutdown: shutdown.clone(),
        feeds: feeds.clone(),
        cluster,
    });
    announce(&cfg, addr);
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let tls = cfg.tls.as_ref().map(ServerTls::acceptor);
    api::serve(state, listener, tls, shutdown).await;
    // The event streams end with the shutdown signal; each feed holds the store open until it
    // has, so wait for them: a restart in the same process must find the store closed.
    feeds.close();
    feeds.wait().await;
    let _ = worker_task.await;
    cluster_tasks.wait().await;
    let _ = pruner.await;
    let _ = trimmer.await;
    if let Some(task) = reconcile_loop {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}
