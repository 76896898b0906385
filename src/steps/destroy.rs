//! A destroy's steps. Each applies what a create step's undo does (stop the container, remove
//! the host veth, destroy the container), newest create step first; none is reverted: a
//! destroy that fails is run again, which its idempotent steps allow.

use async_trait::async_trait;

use super::container::{CreateContainer, StartContainer};
use super::network::CreateVeth;
use super::{Step, StepCtx, StepError};

/// `lxc-stop -k`; a stopped or absent container is fine.
pub struct StopContainer;

/// Removes `vethc_br<ID>` (its peer goes with it); an absent one is fine.
pub struct DeleteVeth;

/// `lxc-destroy` and whatever directory is left; an absent container is fine.
pub struct DestroyContainer;

#[async_trait]
impl Step for StopContainer {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        StartContainer.undo(ctx).await
    }

    async fn undo(&self, _: &mut StepCtx<'_>) -> Result<(), StepError> {
        Ok(())
    }
}

#[async_trait]
impl Step for DeleteVeth {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        CreateVeth.undo(ctx).await
    }

    async fn undo(&self, _: &mut StepCtx<'_>) -> Result<(), StepError> {
        Ok(())
    }
}

#[async_trait]
impl Step for DestroyContainer {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        CreateContainer.undo(ctx).await
    }

    async fn undo(&self, _: &mut StepCtx<'_>) -> Result<(), StepError> {
        Ok(())
    }
}
