//! What `GET /api/images` shows: every template offered, with its image versions on disk.

use serde::Serialize;
use time::OffsetDateTime;

use super::record::{lxc_name, ImageRecord};
use super::{ImageError, Images};

/// How new containers get their rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloneMode {
    /// An overlay snapshot of the image (`lxc-copy -s -B overlay`).
    Overlay,
    /// A full copy of the image: overlay failed here.
    Copy,
}

/// One image version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionReport {
    /// Its number.
    pub version: u32,
    /// Its LXC container name.
    pub lxc_name: String,
    /// The LXC template and arguments it was built with.
    pub lxc_template: String,
    /// Those arguments.
    pub args: Vec<String>,
    /// When it was built.
    #[serde(with = "time::serde::rfc3339")]
    pub built_at: OffsetDateTime,
    /// Whether new containers are cloned from it.
    pub current: bool,
    /// Whether its directory is there (`false`: lost; its clones cannot start).
    pub present: bool,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// The containers cloned from it.
    pub clones: Vec<String>,
}

/// One template and its images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageReport {
    /// The template's name, as create requests use it.
    pub name: String,
    /// Whether the server offers it now.
    pub offered: bool,
    /// Whether it is the default template.
    pub default: bool,
    /// Its versions on disk, oldest first.
    pub versions: Vec<VersionReport>,
}

impl Images {
    /// Every template offered (the default first), then any other with versions still on disk,
    /// each with its versions.
    ///
    /// # Errors
    /// LXC's or the store's error.
    pub async fn report(&self) -> Result<Vec<ImageReport>, ImageError> {
        let offered = self.lxc().templates();
        let mut records = self.book().images()?;
        let mut out = Vec::new();
        for (i, name) in offered.names().into_iter().enumerate() {
            let record = records
                .iter()
                .position(|r| r.template == name)
                .map(|at| records.remove(at))
                .unwrap_or_else(|| ImageRecord::new(name));
            out.push(self.one(record, true, i == 0).await?);
        }
        for record in records {
            out.push(self.one(record, false, false).await?);
        }
        Ok(out)
    }

    /// How new containers are made from images now.
    pub fn clone_mode(&self) -> CloneMode {
        if self.fallback_reason().is_some() {
            CloneMode::Copy
        } else {
            CloneMode::Overlay
        }
    }

    async fn one(
        &self,
        record: ImageRecord,
        offered: bool,
        default: bool,
    ) -> Result<ImageReport, ImageError> {
        let newest = record.newest().map(|v| v.version);
        let mut versions = Vec::with_capacity(record.versions.len());
        for v in record.versions {
            let name = lxc_name(&record.template, v.version);
            versions.push(VersionReport {
                present: self.lxc().exists(&name).await?,
                size_bytes: self.lxc().disk_usage(&name).await?,
                clones: self.lxc().clones_of(&name).await?,
                current: Some(v.version) == newest,
                version: v.version,
                lxc_name: name,
                lxc_template: v.lxc_template,
                args: v.args,
                built_at: v.built_at,
            });
        }
        Ok(ImageReport {
            name: record.template,
            offered,
            default,
            versions,
        })
    }
}
