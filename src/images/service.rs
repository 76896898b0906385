//! [`Images`]: building, cloning from and removing images.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::record::{lxc_name, ImageBook, ImageRecord, ImageVersion};
use super::ImageError;
use crate::sys::Lxc;
use crate::templates::Template;

/// The images of one LXC path and their records.
pub struct Images {
    lxc: Arc<dyn Lxc>,
    book: Arc<dyn ImageBook>,
    /// Why an overlay clone failed where a full copy of the same image then worked: from then
    /// on containers are full copies (said once in the log, and in `GET /api/images`).
    fallback: Mutex<Option<String>>,
}

impl Images {
    /// The images built with `lxc`'s templates, recorded in `book`.
    pub fn new(lxc: Arc<dyn Lxc>, book: Arc<dyn ImageBook>) -> Self {
        Self {
            lxc,
            book,
            fallback: Mutex::new(None),
        }
    }

    /// The same images, containers made as full copies from the start, for `reason` (the
    /// kernel has no overlayfs: an overlay clone could only fail).
    pub fn with_full_copies(self, reason: String) -> Self {
        *self.fallback_reason() = Some(reason);
        self
    }

    /// Why containers are full copies rather than overlay clones, once that was found.
    pub fn fallback(&self) -> Option<String> {
        self.fallback_reason().clone()
    }

    pub(super) fn fallback_reason(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.fallback.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lxc(&self) -> &dyn Lxc {
        self.lxc.as_ref()
    }

    pub(super) fn book(&self) -> &dyn ImageBook {
        self.book.as_ref()
    }

    fn template(&self, asked: Option<&str>) -> Result<Template, ImageError> {
        self.lxc
            .templates()
            .resolve(asked)
            .cloned()
            .map_err(ImageError::UnknownTemplate)
    }

    /// The LXC name of the image new containers of template `asked` (the default when `None`)
    /// are cloned from: its newest version when that was built with the template's present
    /// arguments and is on disk, else a new version, built now.
    ///
    /// # Errors
    /// An unknown template; the build's or the store's error.
    pub async fn ensure(&self, asked: Option<&str>) -> Result<String, ImageError> {
        let t = self.template(asked)?;
        let record = self.book.image(&t.name)?;
        if let Some(v) = record.as_ref().and_then(ImageRecord::newest) {
            let name = lxc_name(&t.name, v.version);
            if v.lxc_template != t.lxc_template || v.args != t.args {
                tracing::info!(image = %name, "the template's arguments changed; building a new version");
            } else if self.lxc.exists(&name).await? {
                return Ok(name);
            } else {
                tracing::warn!(image = %name, "image is gone from the LXC path; building a new version");
            }
        }
        self.build(&t).await
    }

    /// Builds a new version of template `template`'s image, whatever exists; returns its LXC
    /// name. Containers cloned from older versions keep them.
    ///
    /// # Errors
    /// An unknown template; the build's or the store's error.
    pub async fn rebuild(&self, template: &str) -> Result<String, ImageError> {
        let t = self.template(Some(template))?;
        self.build(&t).await
    }

    /// Takes the next version (stored first: a crash from here on leaves a version that
    /// [`ImageRecord::unfinished`] names), runs the template into it, then records it built.
    /// A failed build removes what it made.
    async fn build(&self, t: &Template) -> Result<String, ImageError> {
        let mut record = self
            .book
            .image(&t.name)?
            .unwrap_or_else(|| ImageRecord::new(&t.name));
        self.discard(&record).await?;
        let version = record.next_version;
        record.next_version += 1;
        self.book.put_image(&record).await?;
        let name = lxc_name(&t.name, version);
        tracing::info!(image = %name, template = %t.lxc_template, "building image");
        if let Err(e) = self.lxc.create(&name, Some(&t.name)).await {
            if let Err(undo) = self.lxc.destroy(&name).await {
                tracing::error!(image = %name, error = %undo, "cannot remove a failed build");
            }
            return Err(e.into());
        }
        record.versions.push(ImageVersion {
            version,
            lxc_template: t.lxc_template.clone(),
            args: t.args.clone(),
            built_at: OffsetDateTime::now_utc(),
        });
        self.book.put_image(&record).await?;
        tracing::info!(image = %name, "image built");
        Ok(name)
    }

    /// Removes what an interrupted build of template `asked`'s image left on disk (the undo of
    /// a build: a finished build is kept, it serves the next create).
    ///
    /// # Errors
    /// LXC's or the store's error.
    pub async fn discard_unfinished(&self, asked: Option<&str>) -> Result<(), ImageError> {
        let t = self.template(asked)?;
        match self.book.image(&t.name)? {
            Some(record) => self.discard(&record).await,
            None => Ok(()),
        }
    }

    /// Removes the version `record` took and did not build, if anything of it is there (a
    /// destroy of nothing is a `stat`: this runs with every destroy's `remove_unused_images`).
    async fn discard(&self, record: &ImageRecord) -> Result<(), ImageError> {
        if let Some(v) = record.unfinished() {
            let name = lxc_name(&record.template, v);
            if self.lxc.exists(&name).await? {
                tracing::warn!(image = %name, "removing an image build that did not finish");
            }
            self.lxc.destroy(&name).await?;
        }
        Ok(())
    }

    /// Makes container `name` from image `image`: an overlay snapshot clone, or a full copy
    /// once overlay was found not to work here.
    ///
    /// # Errors
    /// [`ImageError::Clone`] when neither works; LXC's error.
    pub async fn clone_into(&self, image: &str, name: &str) -> Result<(), ImageError> {
        if self.fallback_reason().is_some() {
            return Ok(self.lxc.copy_full(image, name).await?);
        }
        let overlay = match self.lxc.clone_overlay(image, name).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // What the failed clone made goes before the copy is tried.
        self.lxc.destroy(name).await?;
        match self.lxc.copy_full(image, name).await {
            Ok(()) => {
                tracing::warn!(image, error = %overlay, "overlay clones do not work on this LXC path; containers are full copies of their image from now on");
                *self.fallback_reason() = Some(overlay.to_string());
                Ok(())
            }
            Err(copy) => {
                self.lxc.destroy(name).await?;
                Err(ImageError::Clone {
                    image: image.into(),
                    name: name.into(),
                    overlay: Box::new(overlay),
                    copy: Box::new(copy),
                })
            }
        }
    }

    /// Removes every image version no container is cloned from, but the newest of each
    /// template the server offers; returns the LXC names removed.
    ///
    /// # Errors
    /// LXC's or the store's error (what was removed before it stays removed).
    pub async fn remove_unused(&self) -> Result<Vec<String>, ImageError> {
        let offered = self.lxc.templates();
        let mut removed = Vec::new();
        for mut record in self.book.images()? {
            self.discard(&record).await?;
            let keep_newest = offered.resolve(Some(&record.template)).is_ok();
            let newest = record.newest().map(|v| v.version);
            let before = record.versions.len();
            let mut kept = Vec::with_capacity(record.versions.len());
            for v in std::mem::take(&mut record.versions) {
                let name = lxc_name(&record.template, v.version);
                let wanted = keep_newest && Some(v.version) == newest;
                if wanted || !self.lxc.clones_of(&name).await?.is_empty() {
                    kept.push(v);
                    continue;
                }
                self.lxc.destroy(&name).await?;
                tracing::info!(image = %name, "image version removed: no container uses it");
                removed.push(name);
            }
            if kept.len() != before {
                record.versions = kept;
                self.book.put_image(&record).await?;
            }
        }
        Ok(removed)
    }
}
