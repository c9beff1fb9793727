//! Conversions from platform errors to the core's error types.
//!
//! workers-rs errors may hold JavaScript values, which are neither `Send` nor `Sync`, so
//! they travel as text.

use durable_jobs::{JobError, StorageError};
use wasm_bindgen::{JsCast, JsValue};

/// The text of a JavaScript exception or rejection value.
pub(crate) fn js_text(value: &JsValue) -> String {
    if let Some(text) = value.as_string() {
        return text;
    }
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.to_string());
    }
    format!("{value:?}")
}

pub(crate) fn storage_error(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::new(format!("durable object storage: {what}: {error}"))
}

/// A transport failure, with the HTTP status when there is one.
pub(crate) fn client_error(status: u16, message: impl Into<String>) -> JobError {
    JobError::Client {
        status,
        message: message.into(),
    }
}
