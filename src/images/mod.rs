//! Images: a stopped base container per template, built once from the template and its
//! arguments, that new containers are cloned from (an overlay snapshot, `lxc-copy -s -B
//! overlay`) instead of running the template for each (LXD/Incus' images, with LXC's tools).
//!
//! - `record.rs`: what the store keeps of a template's images (its versions, each with the
//!   template's arguments and build time), their LXC names, and [`ImageBook`], the store seen
//!   from here (the job store implements it; `MemoryBook` in tests);
//! - `service.rs`: [`Images`]: ensure an image (build it when missing or out of date), build
//!   a new version, clone a container from one (falling back to a full copy where the file
//!   system cannot do overlay), remove versions no container uses;
//! - `report.rs`: what `GET /api/images` shows.
//!
//! A rebuild makes a new version; containers keep the version they were cloned from (their
//! rootfs is an overlay on it), new ones use the newest, and an old version goes once LXC lists
//! no clone of it. The worker is the only writer, one job at a time, so a build never races a
//! clone or a removal.

mod record;
mod report;
mod service;

#[cfg(any(test, feature = "test-util"))]
pub use record::MemoryBook;
pub use record::{is_image_name, lxc_name, parse_lxc_name, ImageBook, ImageRecord, ImageVersion};
pub use report::{CloneMode, ImageReport, VersionReport};
pub use service::Images;

use crate::sys::SysError;

/// Why an image could not be built, cloned, listed or removed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The template asked for is not offered here.
    #[error("{0}")]
    UnknownTemplate(String),
    /// LXC or the file system refused.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// Neither an overlay clone nor a full copy of the image could be made.
    #[error("cannot clone {image} into {name}: overlay clone: {overlay}; full copy: {copy}")]
    Clone {
        /// The image.
        image: String,
        /// The container.
        name: String,
        /// Why the overlay clone failed.
        overlay: Box<SysError>,
        /// Why the full copy failed.
        copy: Box<SysError>,
    },
    /// The store could not read or keep the images' records.
    #[error("image records: {0}")]
    Store(String),
}

#[cfg(test)]
mod tests;
