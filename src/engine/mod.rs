//! The provisioning engine: validates a request against the limits and the host, then runs the
//! plans of steps (create with rollback, start/stop/restart/repair, destroy). What the host
//! shows of a container is read by `reconcile` (`Reconciler::inspect`).

mod ports;

use std::sync::Arc;
use std::time::Duration;

use crate::fabric::FabricConfig;
use crate::images::Images;
use crate::model::ContainerId;
use crate::spec::{CreateSpec, StepName};
use crate::steps::{
    run_forward, run_steps, undo_steps, CreateError, NoProgress, Progress, StepCtx, StepError,
    DEFAULT_STEP_TIMEOUT,
};
use crate::sys::{Host, LinkKind, SysError};

/// A bridge holds at most 1024 ports (BR_MAX_PORTS in net/bridge/br_private.h); one is the
/// VXLAN uplink, and we keep one spare so the kernel limit is never what stops a create.
pub const MAX_CONTAINERS_PER_VLAN: usize = 1022;

/// Why the engine refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request can never work: `field` is at fault.
    #[error("{message}")]
    Invalid {
        /// The request field at fault.
        field: RequestField,
        /// Why, as a sentence that starts with the field's name.
        message: String,
    },
    /// The request clashes with what exists (container or interface already there, VLAN full).
    #[error("{0}")]
    Conflict(String),
    /// A create step failed; the rollback result is inside.
    #[error(transparent)]
    Create(Box<CreateError>),
    /// A destroy step failed (nothing is rolled back: the destroy can be run again).
    #[error("step {step} failed: {error}")]
    Step {
        /// The step.
        step: StepName,
        /// Why.
        error: StepError,
    },
    /// The host could not be read or changed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

impl EngineError {
    /// Whether the job stopped because the daemon is shutting down (not a failure).
    pub fn stopped_by_shutdown(&self) -> bool {
        match self {
            Self::Create(c) => c.stopped_by_shutdown(),
            Self::Step { error, .. } => error.is_shutdown(),
            _ => false,
        }
    }
}

impl From<CreateError> for EngineError {
    fn from(e: CreateError) -> Self {
        Self::Create(Box::new(e))
    }
}

/// A create request's fields that the engine checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestField {
    /// `vlan`.
    Vlan,
    /// `ip`.
    Ip,
    /// `gateway`.
    Gateway,
    /// `template`.
    Template,
}

impl RequestField {
    /// The field's name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vlan => "vlan",
            Self::Ip => "ip",
            Self::Gateway => "gateway",
            Self::Template => "template",
        }
    }
}

fn invalid(field: RequestField, message: String) -> EngineError {
    EngineError::Invalid { field, message }
}

/// Creates and destroys containers on one host.
#[derive(Clone)]
pub struct Engine {
    host: Host,
    fabric: FabricConfig,
    /// The images containers are cloned from; `None`: each is made by its template
    /// (`--clone=off`).
    images: Option<Arc<Images>>,
    /// How full each bridge may be (`ports.rs`).
    ports: Arc<ports::PortBudget>,
    /// How long each step may take (`serve --step-timeout`).
    step_timeout: Duration,
}

impl Engine {
    /// An engine acting on `host`, whose fabric is `fabric`, making each container from its
    /// template.
    pub fn new(host: Host, fabric: FabricConfig) -> Self {
        Self {
            host,
            fabric,
            images: None,
            ports: Arc::default(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        }
    }

    /// The same engine, each step given `limit` (its apply, or one try of its undo) before it
    /// fails as timed out, killing the tools it runs.
    pub fn with_step_timeout(mut self, limit: Duration) -> Self {
        self.step_timeout = limit;
        self
    }

    /// The same engine, cloning containers from `images`.
    pub fn with_images(mut self, images: Arc<Images>) -> Self {
        self.images = Some(images);
        self
    }

    /// The fabric it serves.
    pub fn fabric(&self) -> &FabricConfig {
        &self.fabric
    }

    /// The host it acts on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The images containers are cloned from, unless they are made by their template.
    pub fn images(&self) -> Option<&Arc<Images>> {
        self.images.as_ref()
    }

    fn ctx<'a>(&'a self, spec: &'a CreateSpec) -> StepCtx<'a> {
        StepCtx::new(&self.host, spec)
            .with_images(self.images.as_deref())
            .with_limit(self.step_timeout)
    }

    /// Checks what can be checked without the host: VLAN served, address usable and not the
    /// host's own, gateway inside the prefix.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field and what is allowed.
    pub fn check_request(&self, spec: &CreateSpec) -> Result<(), EngineError> {
        let vlans = &self.fabric.vlans;
        if !vlans.contains(&spec.vlan) {
            let served: Vec<String> = vlans.iter().map(ToString::to_string).collect();
            return Err(invalid(
                RequestField::Vlan,
                format!(
                    "vlan {} is not served here; allowed: {}",
                    spec.vlan,
                    served.join(", ")
                ),
            ));
        }
        spec.ip
            .check_host()
            .map_err(|e| invalid(RequestField::Ip, format!("ip: {e}")))?;
        if spec.ip.addr == spec.vlan.host_address(self.fabric.host_id).addr {
            return Err(invalid(
                RequestField::Ip,
                format!(
                    "ip: {} is this server's own address on {}",
                    spec.ip.addr,
                    spec.vlan.bridge_name()
                ),
            ));
        }
        if let Some(gw) = spec.gateway {
            if !spec.ip.contains(gw) || gw == spec.ip.addr {
                return Err(invalid(
                    RequestField::Gateway,
                    format!(
                        "gateway: {gw} must be another address inside {}/{}",
                        spec.ip.network(),
                        spec.ip.prefix
                    ),
                ));
            }
        }
        if spec.template.is_some() {
            self.host
                .lxc
                .templates()
                .resolve(spec.template.as_deref())
                .map_err(|e| invalid(RequestField::Template, e))?;
        }
        Ok(())
    }

    /// Checks the host: the names are free, the bridge exists and has room.
    ///
    /// # Errors
    /// [`EngineError::Conflict`] when a name is taken or the VLAN is full.
    pub async fn check_host(&self, spec: &CreateSpec) -> Result<(), EngineError> {
        let name = spec.id.container_name();
        if self.host.lxc.exists(&name).await? {
            return Err(EngineError::Conflict(format!(
                "container {name} already exists"
            )));
        }
        let veth = spec.id.host_veth();
        if self.host.net.link(&veth).await?.is_some() {
            return Err(EngineError::Conflict(format!(
                "interface {veth} already exists"
            )));
        }
        let (bridge, uplink) = (spec.vlan.bridge_name(), spec.vlan.vxlan_name());
        // The bridge by name; its ports, from the lean bridge dump (which reports no kinds:
        // the uplink is known by name), only when `ports.rs` says so: a full link dump costs
        // each veth a walk of the namespaces (its peer's ID), and even the lean one grows with
        // the containers.
        let Some(br) = self
            .host
            .net
            .link(&bridge)
            .await?
            .filter(|l| l.kind == LinkKind::Bridge)
        else {
            return Err(EngineError::Conflict(format!(
                "bridge {bridge} is missing; run `creepy-meow setup`"
            )));
        };
        if self.ports.needs_count(&bridge, MAX_CONTAINERS_PER_VLAN) {
            let ports = self
                .host
                .net
                .bridge_ports()
                .await?
                .iter()
                .filter(|l| l.master == Some(br.index) && l.name != uplink)
                .count();
            self.ports.counted(&bridge, ports);
            if ports >= MAX_CONTAINERS_PER_VLAN {
                return Err(EngineError::Conflict(format!(
                    "vlan {} is full: {bridge} has {ports} containers, the most a bridge can hold alongside its uplink",
                    spec.vlan
                )));
            }
        }
        self.ports.one_more(&bridge);
        Ok(())
    }

    /// Validates, then creates `container<ID>` with its network, rolling back on failure.
    ///
    /// # Errors
    /// [`EngineError::Invalid`]/[`EngineError::Conflict`] before any change;
    /// [`EngineError::Create`] after a failed step, once rolled back.
    pub async fn create(
        &self,
        spec: &CreateSpec,
        progress: &mut dyn Progress,
    ) -> Result<(), EngineError> {
        self.check_request(spec)?;
        self.check_host(spec).await?;
        let mut ctx = self.ctx(spec);
        run_steps(&StepName::CREATE, &mut ctx, progress).await?;
        Ok(())
    }

    /// Builds a new version of template `template`'s image, then removes the versions nothing
    /// uses; a failed build is rolled back.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] when images are off here; [`EngineError::Create`] after a
    /// rolled-back failure.
    pub async fn build_image(
        &self,
        template: &str,
        progress: &mut dyn Progress,
    ) -> Result<(), EngineError> {
        let images = self.images_on()?;
        let mut ctx =
            StepCtx::for_image(&self.host, images, template).with_limit(self.step_timeout);
        run_steps(&StepName::BUILD_IMAGE, &mut ctx, progress).await?;
        Ok(())
    }

    /// Undoes an image build a crash interrupted: removes the version it left unfinished.
    pub async fn roll_back_image(
        &self,
        template: &str,
        progress: &mut dyn Progress,
    ) -> Vec<(StepName, StepError)> {
        let Some(images) = self.images.as_deref() else {
            return Vec::new();
        };
        let mut ctx =
            StepCtx::for_image(&self.host, images, template).with_limit(self.step_timeout);
        undo_steps(&StepName::BUILD_IMAGE, &mut ctx, progress).await
    }

    fn images_on(&self) -> Result<&Images, EngineError> {
        self.images.as_deref().ok_or_else(|| {
            invalid(
                RequestField::Template,
                "images are off on this server (serve --clone=off): containers are made by their template".into(),
            )
        })
    }

    /// Kills whatever a crashed run of job `job` left running (a tool's children outlive the
    /// daemon that started them) and returns once it is gone.
    ///
    /// # Errors
    /// When some process does not die, or `/proc` cannot be read.
    pub async fn stop_leftover_tools(&self, job: uuid::Uuid) -> Result<usize, EngineError> {
        Ok(self.host.reaper.reap(job).await?)
    }

    /// Undoes every step of `plan` for `spec`, whatever state an interrupted attempt left.
    pub async fn roll_back(
        &self,
        plan: &[StepName],
        spec: &CreateSpec,
        progress: &mut dyn Progress,
    ) -> Vec<(StepName, StepError)> {
        let mut ctx = self.ctx(spec);
        undo_steps(plan, &mut ctx, progress).await
    }

    /// Runs `plan` (a start, stop, restart or repair) on existing container `spec`: rolled
    /// back on a failure when `roll_back`, else stopped at the failed step (its steps are
    /// idempotent and the job can run again).
    ///
    /// # Errors
    /// [`EngineError::Create`] after a rolled-back failure, [`EngineError::Step`] otherwise.
    pub async fn run_plan(
        &self,
        plan: &[StepName],
        spec: &CreateSpec,
        roll_back: bool,
        progress: &mut dyn Progress,
    ) -> Result<(), EngineError> {
        let mut ctx = self.ctx(spec);
        if roll_back {
            run_steps(plan, &mut ctx, progress).await?;
        } else {
            run_forward(plan, &mut ctx, progress)
                .await
                .map_err(|(step, error)| EngineError::Step { step, error })?;
        }
        Ok(())
    }

    /// Stops and destroys `container<ID>` and removes its host veth. Returns whether there was
    /// anything to destroy; destroying twice succeeds.
    ///
    /// # Errors
    /// When LXC or the kernel refuses.
    pub async fn destroy(&self, id: ContainerId) -> Result<bool, EngineError> {
        self.destroy_recorded(id, &mut NoProgress).await
    }

    /// [`Self::destroy`], recording each of [`StepName::DESTROY`] in `progress`.
    ///
    /// # Errors
    /// When LXC or the kernel refuses, or a progress record fails.
    pub async fn destroy_recorded(
        &self,
        id: ContainerId,
        progress: &mut dyn Progress,
    ) -> Result<bool, EngineError> {
        let existed = self.host.lxc.exists(&id.container_name()).await?
            || self.host.net.link(&id.host_veth()).await?.is_some();
        let mut ctx = StepCtx::for_container(&self.host, id)
            .with_images(self.images.as_deref())
            .with_limit(self.step_timeout);
        run_forward(&StepName::DESTROY, &mut ctx, progress)
            .await
            .map_err(|(step, error)| EngineError::Step { step, error })?;
        Ok(existed)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
