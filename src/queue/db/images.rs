//! The `images` tree: template name → [`ImageRecord`] JSON. Only the worker writes it, one job
//! at a time, so its writes need no transaction with the job trees.

use super::codec::{decode, encode};
use super::Trees;
use crate::images::ImageRecord;
use crate::queue::QueueError;

impl Trees {
    /// Template `template`'s record, or `None`.
    ///
    /// # Errors
    /// When sled fails or the record does not decode.
    pub(in crate::queue) fn image(
        &self,
        template: &str,
    ) -> Result<Option<ImageRecord>, QueueError> {
        let bytes = self
            .images
            .get(template.as_bytes())
            .map_err(|e| self.storage("read an image record", e))?;
        bytes.map(|b| decode("images", &template, &b)).transpose()
    }

    /// Every image record, by template name.
    ///
    /// # Errors
    /// When sled fails or a record does not decode.
    pub(in crate::queue) fn images(&self) -> Result<Vec<ImageRecord>, QueueError> {
        self.images
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(|e| self.storage("read image records", e))?;
                decode("images", &String::from_utf8_lossy(&key), &value)
            })
            .collect()
    }

    /// Stores `record` (on disk with the next flush).
    ///
    /// # Errors
    /// When sled fails.
    pub(in crate::queue) fn put_image(&self, record: &ImageRecord) -> Result<(), QueueError> {
        self.images
            .insert(record.template.as_bytes(), encode(record)?)
            .map_err(|e| self.storage("write an image record", e))?;
        Ok(())
    }
}
