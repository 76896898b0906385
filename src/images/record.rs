//! What the store keeps of a template's images, their LXC names, and the store as the images
//! see it ([`ImageBook`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ImageError;

/// Start of every image's LXC name: a container's is `container<ID>`, so they never collide.
const PREFIX: &str = "image-";

/// The LXC name of version `version` of template `template`'s image: `image-busybox-v3`.
pub fn lxc_name(template: &str, version: u32) -> String {
    format!("{PREFIX}{template}-v{version}")
}

/// The template and version an image's LXC name stands for, or `None` when it is not one.
pub fn parse_lxc_name(name: &str) -> Option<(&str, u32)> {
    let (template, version) = name.strip_prefix(PREFIX)?.rsplit_once("-v")?;
    let version = version.parse().ok().filter(|v| *v > 0)?;
    (!template.is_empty()).then_some((template, version))
}

/// Whether `name` is an image's LXC name (ours, never a foreign container).
pub fn is_image_name(name: &str) -> bool {
    parse_lxc_name(name).is_some()
}

/// One built version of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVersion {
    /// Its number, from 1.
    pub version: u32,
    /// The LXC template it was built with.
    pub lxc_template: String,
    /// That template's arguments.
    pub args: Vec<String>,
    /// When its build ended.
    #[serde(with = "time::serde::rfc3339")]
    pub built_at: OffsetDateTime,
}

/// A template's images, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The template's name, as requests use it.
    pub template: String,
    /// The version the next build makes. Taken (stored) before the build starts, so a build a
    /// crash interrupted is the one version below it that `versions` lacks.
    pub next_version: u32,
    /// The built versions still on disk, oldest first; the last is the one new containers are
    /// cloned from.
    pub versions: Vec<ImageVersion>,
}

impl ImageRecord {
    /// The record of a template with no image yet.
    pub fn new(template: &str) -> Self {
        Self {
            template: template.into(),
            next_version: 1,
            versions: Vec::new(),
        }
    }

    /// The newest built version.
    pub fn newest(&self) -> Option<&ImageVersion> {
        self.versions.last()
    }

    /// The version a build may have left half made: taken, and not built.
    pub fn unfinished(&self) -> Option<u32> {
        let last = self.next_version.checked_sub(1).filter(|v| *v > 0)?;
        (!self.versions.iter().any(|v| v.version == last)).then_some(last)
    }
}

/// The images' records in the daemon's store.
#[async_trait]
pub trait ImageBook: Send + Sync {
    /// Template `template`'s record, if any.
    ///
    /// # Errors
    /// [`ImageError::Store`].
    fn image(&self, template: &str) -> Result<Option<ImageRecord>, ImageError>;
    /// Every record, by template name.
    ///
    /// # Errors
    /// [`ImageError::Store`].
    fn images(&self) -> Result<Vec<ImageRecord>, ImageError>;
    /// Stores `record`; returns once it is on disk.
    ///
    /// # Errors
    /// [`ImageError::Store`].
    async fn put_image(&self, record: &ImageRecord) -> Result<(), ImageError>;
}

/// An [`ImageBook`] in memory, for tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Default)]
pub struct MemoryBook(std::sync::Mutex<std::collections::BTreeMap<String, ImageRecord>>);

#[cfg(any(test, feature = "test-util"))]
#[async_trait]
impl ImageBook for MemoryBook {
    fn image(&self, template: &str) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.0.lock().expect("not poisoned").get(template).cloned())
    }

    fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self
            .0
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect())
    }

    async fn put_image(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let mut map = self.0.lock().expect("not poisoned");
        map.insert(record.template.clone(), record.clone());
        Ok(())
    }
}
