//! Errors as the API answers them: a status and `{"error": {"status", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use durable_jobs::JobError;
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        let status = match &error {
            JobError::BadRequest { .. } | JobError::Validation { .. } => StatusCode::BAD_REQUEST,
            JobError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            JobError::JobNotFound { .. } | JobError::InstanceNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            JobError::InvalidState { .. } => StatusCode::CONFLICT,
            JobError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "status": self.status.as_u16(), "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
