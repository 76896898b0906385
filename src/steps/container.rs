//! The LXC steps: create the container, start it and wait for its network namespace.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Step, StepCtx, StepError};

/// How long a started container may take to have its own network namespace.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The container's rootfs and config: a clone of the image `ensure_image` chose, or (when
/// the server creates from templates) `lxc-create` from the template asked for. Either way
/// `lxc.net.0.type = empty`: the image was created with it, and the clone keeps it.
pub struct CreateContainer;

#[async_trait]
impl Step for CreateContainer {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let name = ctx.id()?.container_name();
        if let (Some(images), Some(image)) = (ctx.images, ctx.image.as_deref()) {
            return Ok(images.clone_into(image, &name).await?);
        }
        let template = ctx.spec()?.template.as_deref();
        Ok(ctx.host.lxc.create(&name, template).await?)
    }

    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        Ok(ctx.host.lxc.destroy(&ctx.id()?.container_name()).await?)
    }
}

/// How long a stopped container's init has to halt before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A graceful `lxc-stop` (the init is asked to halt, then killed after [`STOP_GRACE`]). Not
/// reverted: a stop or restart that fails after it leaves the container stopped, and its
/// desired state says whether reconciliation starts it again.
pub struct ShutdownContainer;

#[async_trait]
impl Step for ShutdownContainer {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let name = ctx.id()?.container_name();
        ctx.host.lxc.shutdown(&name, STOP_GRACE).await?;
        ctx.pid = None;
        Ok(())
    }

    async fn undo(&self, _: &mut StepCtx<'_>) -> Result<(), StepError> {
        Ok(())
    }
}

/// `lxc-start -d`, then wait until the init process lives in its own network namespace.
pub struct StartContainer;

#[async_trait]
impl Step for StartContainer {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let name = ctx.id()?.container_name();
        let t0 = Instant::now();
        ctx.host.lxc.start(&name).await?;
        let started = t0.elapsed();
        ctx.pid = Some(wait_for_netns(ctx, &name).await?);
        tracing::debug!(
            lxc_start_us = started.as_micros() as u64,
            wait_us = (t0.elapsed() - started).as_micros() as u64,
            "container started"
        );
        Ok(())
    }

    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        ctx.host.lxc.stop(&ctx.id()?.container_name()).await?;
        ctx.pid = None;
        Ok(())
    }
}

/// Waits, with a growing interval, until the container's init runs and has left our network
/// namespace; bounded by [`START_TIMEOUT`]. `lxc-start -d` returns once LXC reports the
/// container running, so the first look normally finds it; each look reads a few files
/// (`Lxc::init_pid`), no process.
async fn wait_for_netns(ctx: &StepCtx<'_>, name: &str) -> Result<u32, StepError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    let mut last = String::from("no init yet");
    loop {
        if let Some(pid) = ctx.host.lxc.init_pid(name).await? {
            match ctx.host.netns.has_own_netns(pid).await {
                Ok(true) => return Ok(pid),
                Ok(false) => {
                    last = format!("init is pid {pid}, still in the host's network namespace")
                }
                Err(e) if e.is_not_found() => last = format!("pid {pid} exited"),
                Err(e) => return Err(e.into()),
            }
        }
        if Instant::now() >= deadline {
            return Err(StepError::Other(format!(
                "container {name} did not get its own network namespace within {}s (last seen: {last})",
                START_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
