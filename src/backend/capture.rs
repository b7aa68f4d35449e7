//! A backend that hands each record, as the JSON users would see, to a channel: for tests and
//! for embedding the agent in another program.

use crossbeam_channel::{Receiver, Sender};

use super::{Backend, BackendError};
use crate::record::Record;

/// Sends every record's JSON value to a channel.
pub struct CaptureBackend {
    tx: Sender<serde_json::Value>,
}

impl CaptureBackend {
    /// A capture backend and the receiving end of its records.
    pub fn new() -> (CaptureBackend, Receiver<serde_json::Value>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (CaptureBackend { tx }, rx)
    }
}

impl Backend for CaptureBackend {
    fn name(&self) -> &str {
        "capture"
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        let value = serde_json::to_value(record).map_err(|e| BackendError::Io {
            backend: "capture",
            source: e.into(),
        })?;
        // A test that stopped listening is not an error of the agent.
        let _ = self.tx.send(value);
        Ok(())
    }
}
