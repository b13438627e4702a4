//! The JSON body extractor of every route that takes one.
//!
//! It answers as actix-web's `web::Json` with our `JsonConfig` did (415 without a JSON
//! content type, 413 past [`MAX_BODY_BYTES`], 400 for malformed JSON, 422 naming the
//! field; see [`super::api_json_error`]), but reads the body where it already lies:
//! `web::Json` copied every body into a fresh 8 KiB buffer, an allocation and a copy on
//! every bridge event. A body that arrives in one
//! chunk (all of them, at our sizes) is parsed in place; a longer one is gathered into a
//! buffer of its announced length.

use super::{api_json_error, MAX_BODY_BYTES};
use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::mime;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// A request body read as JSON into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

fn is_json(req: &HttpRequest) -> bool {
    // What callers send nearly always, recognised without parsing it into a `Mime` (an
    // allocation on every bridge event).
    let plain = req.headers().get(header::CONTENT_TYPE).map(|v| v.as_bytes());
    if plain.is_some_and(|v| v.eq_ignore_ascii_case(b"application/json")) {
        return true;
    }
    matches!(req.mime_type(), Ok(Some(m)) if m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
}

fn announced_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The whole body, at most `limit` bytes.
async fn read_body(mut payload: Payload, announced: Option<usize>, limit: usize) -> Result<Bytes, JsonPayloadError> {
    let mut first: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(JsonPayloadError::Payload)?;
        let so_far = first.as_ref().map_or(gathered.len(), Bytes::len);
        if so_far + chunk.len() > limit {
            return Err(JsonPayloadError::Overflow { limit });
        }
        match first.take() {
            None if gathered.is_empty() => first = Some(chunk),
            held => {
                if let Some(held) = held {
                    gathered.reserve(announced.unwrap_or(0).clamp(held.len() + chunk.len(), limit));
                    gathered.extend_from_slice(&held);
                }
                gathered.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| gathered.freeze()))
}

/// The body of a request that says it is JSON (415 otherwise), at most
/// [`MAX_BODY_BYTES`] (413).
fn json_bytes(req: &HttpRequest, payload: &mut Payload) -> LocalBoxFuture<'static, Result<Bytes, actix_web::Error>> {
    let checked = if !is_json(req) {
        Err(JsonPayloadError::ContentType)
    } else {
        match announced_length(req) {
            Some(length) if length > MAX_BODY_BYTES => {
                Err(JsonPayloadError::OverflowKnownLength { length, limit: MAX_BODY_BYTES })
            }
            announced => Ok(announced),
        }
    };
    let payload = payload.take();
    Box::pin(async move {
        let announced = checked.map_err(api_json_error)?;
        Ok(read_body(payload, announced, MAX_BODY_BYTES).await.map_err(api_json_error)?)
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = json_bytes(req, payload);
        Box::pin(async move {
            let body = body.await?;
            let value = serde_json::from_slice(&body).map_err(|e| api_json_error(JsonPayloadError::Deserialize(e)))?;
            Ok(JsonBody(value))
        })
    }
}

/// A JSON body not parsed yet, for a handler that reads it straight into its typed form:
/// one parse instead of a check of the whole document and then the parse. Only a body
/// that does not make the handler's type is checked for being JSON at all
/// ([`well_formed`](Self::well_formed)), so it gets the same 400 as with [`JsonBody`]
/// before a refusal that names a field.
#[derive(Debug)]
pub struct JsonText(Bytes);

impl JsonText {
    /// The body as text (`None` when it is not UTF-8, which is not JSON either).
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// `Ok` when the body is well-formed JSON, else the 400 [`JsonBody`] answers.
    pub fn well_formed(&self) -> Result<(), crate::error::ApiError> {
        serde_json::from_slice::<serde::de::IgnoredAny>(&self.0)
            .map(|_| ())
            .map_err(|e| api_json_error(JsonPayloadError::Deserialize(e)))
    }
}

impl FromRequest for JsonText {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = json_bytes(req, payload);
        Box::pin(async move { Ok(JsonText(body.await?)) })
    }
}
