//! The key layout of the trees and the encoding of records.
//!
//! Keys are big-endian so sled's byte order is numeric order: `events` iterate oldest first,
//! `containers` by ID. Records are JSON.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::ConflictableTransactionError;
use uuid::Uuid;

use crate::model::ContainerId;
use crate::queue::QueueError;

/// The result of a step inside a transaction; `Abort` carries our error out.
pub(in crate::queue) type TxResult<T> = Result<T, ConflictableTransactionError<QueueError>>;

/// Leaves the transaction with `e`, changing nothing.
pub(in crate::queue) fn abort<T>(e: QueueError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Key in `meta` of the last sequence number handed out.
pub(super) const META_SEQ: &[u8] = b"seq";
/// Start of the key in `meta` that names the image build job pending or running for a
/// template (`image-build/<template>` → job ID).
pub(super) const META_IMAGE_BUILD: &[u8] = b"image-build/";
/// Start of the key in `meta` that marks a create still waiting for its cluster reservation
/// (`gate/<job ID's 16 bytes>` → nothing): the worker does not see it yet (`gates.rs`).
pub(super) const META_GATE: &[u8] = b"gate/";
/// Key in `meta` of the number of the newest event stored.
pub(super) const META_EVENT_SEQ: &[u8] = b"event-seq";
/// Key in `meta` of the on-disk format version.
pub(super) const META_FORMAT: &[u8] = b"format";

/// Key of a sequence number (an event's).
pub(super) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Key of a container in `containers`.
pub(super) fn container_key(id: ContainerId) -> [u8; 4] {
    id.get().to_be_bytes()
}

/// Reads a big-endian `u64` (a counter or a sequence number).
pub(super) fn decode_u64(tree: &str, key: &dyn Display, bytes: &[u8]) -> Result<u64, QueueError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(tree, key, "not an 8-byte number"))?;
    Ok(u64::from_be_bytes(arr))
}

/// Reads a job ID stored as a key or a value.
pub(super) fn decode_uuid(tree: &str, key: &dyn Display, bytes: &[u8]) -> Result<Uuid, QueueError> {
    Uuid::from_slice(bytes).map_err(|e| corrupt(tree, key, e))
}

/// Decodes a JSON record.
pub(super) fn decode<T: DeserializeOwned>(
    tree: &str,
    key: &dyn Display,
    bytes: &[u8],
) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(tree, key, e))
}

/// Encodes a record as JSON.
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(value)
        .map_err(|e| QueueError::Storage(format!("cannot encode a record: {e}")))
}

/// The error for a record that does not decode, naming tree and key.
pub(super) fn corrupt(tree: &str, key: &dyn Display, why: impl Display) -> QueueError {
    QueueError::Corrupt(format!(
        "the job store's record {tree}/{key} is corrupt ({why}); it was left as it is"
    ))
}

/// A key as hex, for error messages.
pub(super) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
