//! Every reason a request is refused, as one closed enum.
//!
//! Each variant is named for a fact and carries the reference's HTTP status, `error.code`,
//! `error.message` and `details` (docs/protocol.md §7). `response.rs` turns a denial into a
//! `CheckResponse` in one place. Details hold only protocol-level text (the reference's reasons,
//! an agent DID, a status code); store, parser and transport errors are logged, never returned.

use serde_json::{Value, json};

use crate::protocol::bearer::BearerError;

#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    MissingToken,
    InvalidScheme,
    /// Keys could not be fetched or the document had no active key.
    KeysUnavailable(Option<Detail>),
    KeysPayloadInvalid,
    KeysInvalid,
    InvalidAit(String),
    MissingTimestamp,
    InvalidTimestamp,
    TimestampSkew {
        max_skew_secs: u64,
    },
    InvalidNonce(String),
    InvalidProof(String),
    Replay,
    NonceStoreUnavailable,
    AgentRevoked,
    AitRevoked,
    /// The trust store failed and had no cached answer for this agent (`docs/deviations.md` item 6:
    /// the reference answers 503 "Proxy trust state is unavailable").
    TrustUnconfirmed {
        agent_did: String,
    },
    CrlUnavailable,
    UnknownAgent {
        agent_did: String,
    },
    AccessTokenRequired,
    AccessTokenInvalid,
    AccessValidationUnavailable(Detail),
    /// Envoy forwarded only part of the body (`x-envoy-auth-partial-body: true`).
    BodyIncomplete,
    /// The request has a body but Envoy did not forward it (no `with_request_body`).
    BodyNotForwarded,
    InvalidPath,
    /// A route selected a policy name that is not configured.
    UnknownPolicy,
    /// A bearer JWT was refused (each reason has its own code).
    Bearer(BearerError),
    /// The bearer issuer's keys could not be loaded.
    BearerKeysUnavailable,
    /// The credential's kind is not one the route's `profile` accepts.
    ProfileNotAllowed,
    /// A token id (AIT or bearer `jti`) revoked by a pushed event.
    TokenRevoked,
    MissingRoles(Vec<String>),
    MissingPermissions(Vec<String>),
    TrustScoreTooLow {
        required: f64,
    },
    /// The verified agent is over its route's limit.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The client address is over its route's pre-authentication limit.
    ClientRateLimited {
        retry_after_secs: u64,
    },
    /// The limit store failed under `rate_limit.failure: fail-closed`.
    RateLimitUnavailable,
}

/// The one `details` member some dependency denials carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Reason(String),
    Status(u16),
}

impl Denial {
    pub fn status(&self) -> u16 {
        use Denial::*;
        match self {
            KeysUnavailable(_)
            | KeysPayloadInvalid
            | KeysInvalid
            | NonceStoreUnavailable
            | CrlUnavailable
            | AccessValidationUnavailable(_)
            | BearerKeysUnavailable
            | RateLimitUnavailable => 503,
            RateLimited { .. } | ClientRateLimited { .. } => 429,
            UnknownAgent { .. }
            | TrustUnconfirmed { .. }
            | MissingRoles(_)
            | MissingPermissions(_)
            | TrustScoreTooLow { .. } => 403,
            BodyIncomplete => 413,
            InvalidPath => 400,
            BodyNotForwarded | UnknownPolicy => 500,
            _ => 401,
        }
    }

    pub fn code(&self) -> &'static str {
        use Denial::*;
        match self {
            MissingToken => "PROXY_AUTH_MISSING_TOKEN",
            InvalidScheme => "PROXY_AUTH_INVALID_SCHEME",
            KeysUnavailable(_)
            | KeysPayloadInvalid
            | KeysInvalid
            | NonceStoreUnavailable
            | CrlUnavailable
            | AccessValidationUnavailable(_)
            | BearerKeysUnavailable
            | RateLimitUnavailable => "PROXY_AUTH_DEPENDENCY_UNAVAILABLE",
            RateLimited { .. } => "PROXY_RATE_LIMIT_EXCEEDED",
            ClientRateLimited { .. } => "PROXY_PUBLIC_RATE_LIMIT_EXCEEDED",
            Bearer(e) => e.code(),
            ProfileNotAllowed => "PROXY_AUTH_PROFILE_NOT_ALLOWED",
            TokenRevoked => "PROXY_AUTH_TOKEN_REVOKED",
            MissingRoles(_) => "PROXY_AUTH_MISSING_ROLE",
            MissingPermissions(_) => "PROXY_AUTH_MISSING_PERMISSION",
            TrustScoreTooLow { .. } => "PROXY_AUTH_TRUST_SCORE_TOO_LOW",
            InvalidAit(_) => "PROXY_AUTH_INVALID_AIT",
            MissingTimestamp | InvalidTimestamp => "PROXY_AUTH_INVALID_TIMESTAMP",
            TimestampSkew { .. } => "PROXY_AUTH_TIMESTAMP_SKEW",
            InvalidNonce(_) => "PROXY_AUTH_INVALID_NONCE",
            InvalidProof(_) => "PROXY_AUTH_INVALID_PROOF",
            Replay => "PROXY_AUTH_REPLAY",
            AgentRevoked | AitRevoked => "PROXY_AUTH_REVOKED",
            UnknownAgent { .. } | TrustUnconfirmed { .. } => "PROXY_AUTH_FORBIDDEN",
            AccessTokenRequired => "PROXY_AGENT_ACCESS_REQUIRED",
            AccessTokenInvalid => "PROXY_AGENT_ACCESS_INVALID",
            BodyIncomplete => "PROXY_AUTH_BODY_INCOMPLETE",
            BodyNotForwarded => "PROXY_AUTH_BODY_NOT_FORWARDED",
            InvalidPath => "PROXY_AUTH_INVALID_PATH",
            UnknownPolicy => "PROXY_AUTH_POLICY_UNKNOWN",
        }
    }

    pub fn message(&self) -> &'static str {
        use Denial::*;
        match self {
            MissingToken => "Authorization header is required",
            InvalidScheme => "Authorization must be in the format 'Claw <ait>'",
            KeysUnavailable(_) => "Registry signing keys are unavailable",
            KeysPayloadInvalid => "Registry signing keys payload is invalid",
            KeysInvalid => "Registry signing keys are invalid",
            InvalidAit(_) => "AIT verification failed",
            MissingTimestamp => "X-Claw-Timestamp header is required",
            InvalidTimestamp => "X-Claw-Timestamp must be a unix seconds integer",
            TimestampSkew { .. } => "X-Claw-Timestamp is outside the allowed skew window",
            InvalidNonce(_) => "Nonce validation failed",
            InvalidProof(_) => "PoP verification failed",
            Replay => "Replay detected",
            NonceStoreUnavailable => "Replay protection is unavailable",
            AgentRevoked => "Agent has been revoked",
            AitRevoked => "AIT has been revoked",
            CrlUnavailable => "Registry CRL is unavailable",
            UnknownAgent { .. } | TrustUnconfirmed { .. } => "Verified caller is not trusted",
            AccessTokenRequired => "X-Claw-Agent-Access header is required",
            AccessTokenInvalid => "Agent access token is invalid or expired",
            AccessValidationUnavailable(_) => "Registry agent auth validation is unavailable",
            BodyIncomplete => "Request body was only partially forwarded for verification",
            BodyNotForwarded => "Request body was not forwarded for verification",
            InvalidPath => "Request target is not a valid path",
            UnknownPolicy => "Route policy is not configured",
            Bearer(_) => "Bearer token verification failed",
            BearerKeysUnavailable => "Bearer token issuer keys are unavailable",
            ProfileNotAllowed => "This route does not accept this kind of credential",
            TokenRevoked => "Token has been revoked",
            MissingRoles(_) => "Token lacks a role this route requires",
            MissingPermissions(_) => "Token lacks a permission this route requires",
            TrustScoreTooLow { .. } => "Token trust score is below what this route requires",
            RateLimited { .. } | ClientRateLimited { .. } => "Too many requests",
            RateLimitUnavailable => "Rate limiting is unavailable",
        }
    }

    /// The `details` object, when the reference sets one.
    pub fn details(&self) -> Option<Value> {
        use Denial::*;
        match self {
            KeysUnavailable(Some(d)) | AccessValidationUnavailable(d) => Some(d.to_json()),
            KeysInvalid => Some(json!({ "reason": "Registry configuration is invalid" })),
            InvalidAit(reason) | InvalidNonce(reason) | InvalidProof(reason) => {
                Some(json!({ "reason": reason }))
            }
            TimestampSkew { max_skew_secs } => Some(json!({ "maxSkewSeconds": max_skew_secs })),
            CrlUnavailable => {
                Some(json!({ "reason": "CRL cache is stale and cannot be refreshed" }))
            }
            UnknownAgent { agent_did } | TrustUnconfirmed { agent_did } => {
                Some(json!({ "agentDid": agent_did }))
            }
            Bearer(e) => Some(json!({ "reason": e.reason() })),
            MissingRoles(missing) => Some(json!({ "missingRoles": missing })),
            MissingPermissions(missing) => Some(json!({ "missingPermissions": missing })),
            TrustScoreTooLow { required } => Some(json!({ "minTrustScore": required })),
            _ => None,
        }
    }
}

impl Detail {
    fn to_json(&self) -> Value {
        match self {
            Detail::Reason(r) => json!({ "reason": r }),
            Detail::Status(s) => json!({ "status": s }),
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.code(), self.message())
    }
}
