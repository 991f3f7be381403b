//! Error answers: TEI's `{"error", "error_type"}` everywhere, and OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` on the OpenAI routes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, where there is one.
    pub param: Option<String>,
    pub openai: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            param: None,
            openai: false,
        }
    }
    /// 422 naming `field`.
    pub fn field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError {
            param: Some(field.to_string()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{field}`: {message}"),
            )
        }
    }
    pub fn openai(mut self) -> ApiError {
        self.openai = true;
        self
    }
    /// Library errors: bad input is the client's (422), the rest is ours (500).
    pub fn from_lib(e: bertrt::Error) -> ApiError {
        match e {
            bertrt::Error::Input(m) | bertrt::Error::Tokenizer(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
    /// TEI's error_type names.
    fn error_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => "Validation",
            StatusCode::TOO_MANY_REQUESTS => "Overloaded",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => "Unsupported",
            StatusCode::REQUEST_TIMEOUT => "Timeout",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::SERVICE_UNAVAILABLE => "Unhealthy",
            _ => "Backend",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.openai {
            let ty = if self.status.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            };
            json!({"error": {
                "message": self.message,
                "type": ty,
                "param": self.param,
                "code": self.status.as_u16().to_string(),
            }})
        } else {
            json!({"error": self.message, "error_type": self.error_type()})
        };
        (self.status, Json(body)).into_response()
    }
}
