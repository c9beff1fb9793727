//! Who may use the admin API: holders of a bearer token, or, when the operator turns
//! authentication off, only clients on the loopback interface.
//!
//! No cookies are read or set, so a browser never sends credentials on its own and a
//! cross-site request cannot act for an operator.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The shortest token accepted: guessing one must be out of reach.
pub const MIN_TOKEN_LEN: usize = 24;

/// A bearer token: at least [`MIN_TOKEN_LEN`] visible ASCII characters.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// Checks `text` as a token.
    pub fn new(text: impl Into<String>) -> Result<Token, TokenError> {
        let text = text.into();
        if text.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: text.len() });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        Ok(Token(text.into()))
    }

    /// A random token of 32 bytes from the operating system's generator, hex-encoded.
    pub fn generate() -> Result<Token, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::NoRandomness(e.to_string()))?;
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Token::new(text)
    }

    /// The token's text, to hand to the operator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error("an admin token needs at least {MIN_TOKEN_LEN} characters, this one has {len}")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// A character outside visible ASCII.
    #[error("an admin token may only hold visible ASCII characters")]
    NotVisibleAscii,
    /// The system's random generator failed.
    #[error("no randomness for a token: {0}")]
    NoRandomness(String),
}

/// Who may call the API.
#[derive(Debug, Clone)]
pub enum Access {
    /// Callers must send `Authorization: Bearer <token>`.
    Token(Token),
    /// No authentication, for clients on the loopback interface only: anyone else is
    /// refused, and so is a request whose peer address is unknown (serve the router with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, as [`crate::serve`] does).
    LoopbackWithoutToken,
}

/// The middleware: lets a request through, or answers 401/403.
pub(crate) async fn check(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &access {
        Access::Token(token) => {
            let presented = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            match presented {
                Some(p) if token.matches(p) => {}
                Some(_) => return Err(ApiError::unauthorized("wrong bearer token")),
                None => {
                    return Err(ApiError::unauthorized(
                        "send the admin token as `Authorization: Bearer <token>`",
                    ))
                }
            }
        }
        Access::LoopbackWithoutToken => {
            // `MockConnectInfo` stands in for the connection in tests, as axum allows.
            let extensions = request.extensions();
            let peer = extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
                .or_else(|| extensions.get::<MockConnectInfo<SocketAddr>>().map(|c| c.0));
            match peer {
                Some(addr) if addr.ip().is_loopback() => {}
                Some(_) => {
                    return Err(ApiError::forbidden(
                        "authentication is off, so only loopback clients are served",
                    ))
                }
                None => {
                    return Err(ApiError::forbidden(
                        "authentication is off, but the peer address is unknown: serve the \
                         router with connect info",
                    ))
                }
            }
        }
    }
    Ok(next.run(request).await)
}
