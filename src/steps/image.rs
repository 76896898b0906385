//! The image steps: ensure the image a container is cloned from, build a new version, remove
//! the versions nothing uses. Each is a no-op when the server creates from templates.

use async_trait::async_trait;

use super::{Step, StepCtx, StepError};

/// The image of the container's template, built when missing or out of date. Undo removes a
/// build it left unfinished; a finished image stays (it serves the next create).
pub struct EnsureImage;

#[async_trait]
impl Step for EnsureImage {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        if let Some(images) = ctx.images {
            ctx.image = Some(images.ensure(ctx.spec()?.template.as_deref()).await?);
        }
        Ok(())
    }

    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        if let Some(images) = ctx.images {
            images
                .discard_unfinished(ctx.spec()?.template.as_deref())
                .await?;
        }
        Ok(())
    }
}

/// A new version of the template's image (`POST /api/images/<name>/build`). Undo removes it
/// only while unfinished: a built version may already have clones.
pub struct BuildImage;

#[async_trait]
impl Step for BuildImage {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        let template = ctx.template()?;
        let images = ctx
            .images
            .ok_or_else(|| StepError::Other("images are off here (--clone=off)".into()))?;
        images.rebuild(template).await?;
        Ok(())
    }

    async fn undo(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        if let Some(images) = ctx.images {
            images.discard_unfinished(Some(ctx.template()?)).await?;
        }
        Ok(())
    }
}

/// Image versions that no container is cloned from, but each offered template's newest, go.
/// Idempotent, nothing to undo.
pub struct RemoveUnusedImages;

#[async_trait]
impl Step for RemoveUnusedImages {
    async fn apply(&self, ctx: &mut StepCtx<'_>) -> Result<(), StepError> {
        if let Some(images) = ctx.images {
            images.remove_unused().await?;
        }
        Ok(())
    }

    async fn undo(&self, _: &mut StepCtx<'_>) -> Result<(), StepError> {
        Ok(())
    }
}
