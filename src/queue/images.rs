//! The job store as the images' [`ImageBook`]: their records live in the same database, and a
//! write is answered once the group commit has it on disk.

use async_trait::async_trait;

use super::store::JobStore;
use crate::images::{ImageBook, ImageError, ImageRecord};

#[async_trait]
impl ImageBook for JobStore {
    fn image(&self, template: &str) -> Result<Option<ImageRecord>, ImageError> {
        self.trees()
            .and_then(|t| t.image(template))
            .map_err(|e| ImageError::Store(e.to_string()))
    }

    fn images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.trees()
            .and_then(|t| t.images())
            .map_err(|e| ImageError::Store(e.to_string()))
    }

    async fn put_image(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let store = |e: super::QueueError| ImageError::Store(e.to_string());
        let generation = self.write_outside(|t| t.put_image(record)).map_err(store)?;
        self.flush_at(generation).await.map_err(store)
    }
}
