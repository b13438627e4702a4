//! Who is calling: user and admin JWTs (HS256 over the secret's raw UTF-8 bytes;
//! claims `sub`, `role`, `exp`) and the bridge's service tokens.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use uuid::Uuid;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A trader: their own data only.
    User,
    /// May manage any user's preferences; receives system errors.
    Admin,
    /// An internal service posting events.
    Service,
}

impl Role {
    /// Database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(format!("unknown role '{other}' (expected user, admin or service)")),
        }
    }
}

/// JWT claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's UUID.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issue time.
    #[serde(default)]
    pub iat: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token.
    Missing,
    /// Valid signature, past `exp`.
    Expired,
    /// Forged, malformed or with a bad `sub`.
    Invalid,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Missing => ApiError::unauthorized("UNAUTHORIZED", "missing bearer token"),
            TokenError::Expired => ApiError::unauthorized("TOKEN_EXPIRED", "the token has expired; sign in again"),
            TokenError::Invalid => ApiError::unauthorized("UNAUTHORIZED", "invalid token"),
        }
    }
}

/// Signing and checking keys for user JWTs.
/// Clock skew forgiven on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 5;

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    /// Keys from the shared secret's raw UTF-8 bytes.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Issues a token for `user` valid for `ttl`.
    pub fn issue(&self, user: Uuid, role: Role, ttl: std::time::Duration) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims { sub: user.to_string(), role, exp: now + ttl.as_secs() as i64, iat: now };
        // Encoding HS256 with a byte secret does not fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Verifies signature and expiry; returns the user and role.
    pub fn verify(&self, token: &str) -> Result<(Uuid, Role), TokenError> {
        self.verify_until(token).map(|(user, role, _)| (user, role))
    }

    /// Verifies signature, expiry and `nbf`; returns the user, role and expiry (seconds
    /// since the epoch), which a socket opened with the token must not outlive.
    pub fn verify_until(&self, token: &str) -> Result<(Uuid, Role, i64), TokenError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user = Uuid::parse_str(&data.claims.sub).map_err(|_| TokenError::Invalid)?;
        Ok((user, data.claims.role, data.claims.exp))
    }
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A signed-in user or admin (never a service).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The user.
    pub user_id: Uuid,
    /// `User` or `Admin`.
    pub role: Role,
    /// When the token expires (seconds since the epoch).
    pub expires_at: i64,
}

/// Verifies a user token and records the user (first sight → default preferences).
pub async fn authenticate_user(state: &AppState, token: Option<&str>) -> Result<AuthUser, ApiError> {
    let token = token.ok_or(TokenError::Missing)?;
    // A configured bridge token is a valid credential of the wrong kind: 403, like a
    // service JWT, not 401.
    if is_service_token(state, token) {
        return Err(ApiError::forbidden("service tokens cannot act as a user"));
    }
    let (user_id, role, expires_at) = state.jwt.verify_until(token)?;
    if role == Role::Service {
        return Err(ApiError::forbidden("service tokens cannot act as a user"));
    }
    state.users.ensure(&state.store, user_id, role).await?;
    Ok(AuthUser { user_id, role, expires_at })
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req).map(str::to_string);
        Box::pin(async move {
            let state = state.ok_or_else(ApiError::internal)?;
            authenticate_user(&state, token.as_deref()).await
        })
    }
}

/// An admin.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub AuthUser);

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthUser::from_request(req, payload);
        Box::pin(async move {
            let user = user.await?;
            if user.role != Role::Admin {
                return Err(ApiError::forbidden("this endpoint needs an admin token"));
            }
            Ok(AdminUser(user))
        })
    }
}

/// An internal service calling the bridge: a configured service token, or a JWT with
/// role `service` (as printed by `notifyhub token --role service`).
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceCaller {
    /// The configured service token at this index (counted from 0).
    Token(usize),
    /// A service JWT with this subject.
    Jwt(Uuid),
}

impl std::fmt::Display for ServiceCaller {
    /// A stable name for logs and idempotency scoping (never the token itself): `token-0`,
    /// `jwt-<subject>`. Written only when needed: a name built for every event was a
    /// `format!` per request (callgrind).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceCaller::Token(i) => write!(f, "token-{i}"),
            ServiceCaller::Jwt(sub) => write!(f, "jwt-{sub}"),
        }
    }
}

impl FromRequest for ServiceCaller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(service_caller(req))
    }
}

/// Which configured service token `token` is, compared in constant time.
fn service_token_index(state: &AppState, token: &str) -> Option<usize> {
    state.settings.service_tokens.iter().position(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
}

fn is_service_token(state: &AppState, token: &str) -> bool {
    service_token_index(state, token).is_some()
}

fn service_caller(req: &HttpRequest) -> Result<ServiceCaller, ApiError> {
    let state = req.app_data::<web::Data<AppState>>().ok_or_else(ApiError::internal)?;
    let token = bearer(req).ok_or(TokenError::Missing)?;
    if let Some(i) = service_token_index(state, token) {
        return Ok(ServiceCaller::Token(i));
    }
    let (sub, role) = state.jwt.verify(token)?;
    if role != Role::Service {
        return Err(ApiError::forbidden("the event bridge needs a service token"));
    }
    Ok(ServiceCaller::Jwt(sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_service_callers_name_is_the_one_its_idempotency_keys_were_stored_under() {
        // Stored keys are `<name>:<key>`: a name written differently would make every
        // retry after an upgrade look like a new event.
        assert_eq!(ServiceCaller::Token(0).to_string(), "token-0");
        assert_eq!(ServiceCaller::Token(12).to_string(), "token-12");
        let sub = Uuid::parse_str("0190a2b4-0000-7000-8000-000000000001").unwrap();
        assert_eq!(ServiceCaller::Jwt(sub).to_string(), "jwt-0190a2b4-0000-7000-8000-000000000001");
    }

    #[test]
    fn issued_tokens_verify_and_forged_ones_do_not() {
        let keys = JwtKeys::new("a-secret-of-decent-length");
        let user = Uuid::new_v4();
        let t = keys.issue(user, Role::Admin, Duration::from_secs(60));
        assert_eq!(keys.verify(&t).unwrap(), (user, Role::Admin));
        let other = JwtKeys::new("another-secret-of-decent-length");
        assert_eq!(other.verify(&t).unwrap_err(), TokenError::Invalid);
        assert_eq!(keys.verify("garbage").unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn expired_tokens_are_told_apart() {
        let keys = JwtKeys::new("a-secret-of-decent-length");
        let claims = Claims {
            sub: Uuid::new_v4().to_string(),
            role: Role::User,
            exp: chrono::Utc::now().timestamp() - 120,
            iat: 0,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&t).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn tokens_not_yet_valid_are_refused_and_the_expiry_is_reported() {
        #[derive(serde::Serialize)]
        struct WithNbf {
            sub: String,
            role: Role,
            exp: i64,
            nbf: i64,
        }
        let keys = JwtKeys::new("a-secret-of-decent-length");
        let now = chrono::Utc::now().timestamp();
        let token = |nbf: i64| {
            let claims = WithNbf { sub: Uuid::new_v4().to_string(), role: Role::User, exp: now + 600, nbf };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap()
        };
        assert_eq!(keys.verify(&token(now + 3600)).unwrap_err(), TokenError::Invalid);
        assert_eq!(keys.verify_until(&token(now - 10)).unwrap().2, now + 600);
    }

    #[test]
    fn sub_must_be_a_uuid() {
        let keys = JwtKeys::new("a-secret-of-decent-length");
        let claims = Claims { sub: "bob".into(), role: Role::User, exp: chrono::Utc::now().timestamp() + 60, iat: 0 };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&t).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
