//! Every reason a request is refused, as one closed enum.
//!
//! Each variant is named for a fact. `Denial::spec` is the one table of what each answers (the
//! reference's HTTP status, the gRPC code Envoy sees, `error.code` and `error.message`, from
//! docs/protocol.md §7) and `Denial::details` its `details`: two exhaustive matches, no
//! wildcard, so a new variant cannot silently become a 401. `response.rs` turns a denial into a
//! `CheckResponse` in one place. Details hold only protocol-level text (the reference's reasons,
//! an agent DID, a status code); store, parser and transport errors are logged, never returned.

use serde_json::{Value, json};

use crate::protocol::bearer::BearerError;
use crate::protocol::dpop::DpopError;

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
    /// The `DPoP` proof was refused (RFC 9449 `invalid_dpop_proof`).
    Dpop(DpopError),
    /// The proof lacks a current server nonce (`use_dpop_nonce`); `nonce` goes out as
    /// `DPoP-Nonce`.
    DpopNonceRequired {
        nonce: String,
    },
    /// The scheme does not fit the token's binding or the route (`invalid_token`): a
    /// DPoP-bound token as `Bearer`, an unbound one as `DPoP`, `Bearer` where DPoP is required.
    DpopRequired(&'static str),
    /// The token lacks scopes the request requires (`insufficient_scope`); these are all the
    /// scopes it requires.
    InsufficientScope(Vec<String>),
    /// An MCP request whose `Mcp-Method`/`Mcp-Name` headers disagree with its JSON-RPC body, or
    /// whose body is not one JSON-RPC message, on a route with `tool_scopes`.
    McpMismatch(&'static str),
    /// The credential's kind is not one the route's `profile` accepts.
    ProfileNotAllowed,
    /// An `httpsig` route got no `Signature-Input`; `accept` is the `Accept-Signature` challenge.
    SignatureMissing {
        accept: String,
    },
    /// The signature agent's key directory could not be loaded.
    SignatureKeysUnavailable,
    /// The request's HTTP Message Signature was refused (`reason` is protocol text).
    SignatureInvalid {
        reason: String,
        accept: String,
    },
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
    /// `limits.concurrent_checks` checks were being answered; this one was not read.
    Overloaded,
}

/// The one `details` member some dependency denials carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Reason(String),
    Status(u16),
}

/// What a denial answers: HTTP status, gRPC code, `error.code` and `error.message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    pub status: u16,
    pub grpc: tonic::Code,
    pub code: &'static str,
    pub message: &'static str,
}

const fn row(status: u16, grpc: tonic::Code, code: &'static str, message: &'static str) -> Spec {
    Spec {
        status,
        grpc,
        code,
        message,
    }
}

const UNAVAILABLE: &str = "PROXY_AUTH_DEPENDENCY_UNAVAILABLE";

impl Denial {
    /// The one table: every variant's answer, in one exhaustive match (a new variant does not
    /// compile until it has a row).
    pub(crate) fn spec(&self) -> Spec {
        use Denial::*;
        use tonic::Code::{
            Internal, InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated,
            Unavailable,
        };
        match self {
            MissingToken => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_MISSING_TOKEN",
                "Authorization header is required",
            ),
            InvalidScheme => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_INVALID_SCHEME",
                "Authorization must be in the format 'Claw <ait>'",
            ),
            KeysUnavailable(_) => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Registry signing keys are unavailable",
            ),
            KeysPayloadInvalid => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Registry signing keys payload is invalid",
            ),
            KeysInvalid => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Registry signing keys are invalid",
            ),
            InvalidAit(_) => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_INVALID_AIT",
                "AIT verification failed",
            ),
            MissingTimestamp => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_INVALID_TIMESTAMP",
                "X-Claw-Timestamp header is required",
            ),
            InvalidTimestamp => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_INVALID_TIMESTAMP",
                "X-Claw-Timestamp must be a unix seconds integer",
            ),
            TimestampSkew { .. } => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_TIMESTAMP_SKEW",
                "X-Claw-Timestamp is outside the allowed skew window",
            ),
            InvalidNonce(_) => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_INVALID_NONCE",
                "Nonce validation failed",
            ),
            InvalidProof(_) => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_INVALID_PROOF",
                "PoP verification failed",
            ),
            Replay => row(401, Unauthenticated, "PROXY_AUTH_REPLAY", "Replay detected"),
            NonceStoreUnavailable => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Replay protection is unavailable",
            ),
            AgentRevoked => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_REVOKED",
                "Agent has been revoked",
            ),
            AitRevoked => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_REVOKED",
                "AIT has been revoked",
            ),
            TrustUnconfirmed { .. } | UnknownAgent { .. } => row(
                403,
                PermissionDenied,
                "PROXY_AUTH_FORBIDDEN",
                "Verified caller is not trusted",
            ),
            CrlUnavailable => row(503, Unavailable, UNAVAILABLE, "Registry CRL is unavailable"),
            AccessTokenRequired => row(
                401,
                Unauthenticated,
                "PROXY_AGENT_ACCESS_REQUIRED",
                "X-Claw-Agent-Access header is required",
            ),
            AccessTokenInvalid => row(
                401,
                Unauthenticated,
                "PROXY_AGENT_ACCESS_INVALID",
                "Agent access token is invalid or expired",
            ),
            AccessValidationUnavailable(_) => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Registry agent auth validation is unavailable",
            ),
            BodyIncomplete => row(
                413,
                InvalidArgument,
                "PROXY_AUTH_BODY_INCOMPLETE",
                "Request body was only partially forwarded for verification",
            ),
            BodyNotForwarded => row(
                500,
                Internal,
                "PROXY_AUTH_BODY_NOT_FORWARDED",
                "Request body was not forwarded for verification",
            ),
            InvalidPath => row(
                400,
                InvalidArgument,
                "PROXY_AUTH_INVALID_PATH",
                "Request target is not a valid path",
            ),
            UnknownPolicy => row(
                500,
                Internal,
                "PROXY_AUTH_POLICY_UNKNOWN",
                "Route policy is not configured",
            ),
            Bearer(e) => row(
                401,
                Unauthenticated,
                e.code(),
                "Bearer token verification failed",
            ),
            BearerKeysUnavailable => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Bearer token issuer keys are unavailable",
            ),
            Dpop(_) => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_DPOP_INVALID",
                "DPoP proof verification failed",
            ),
            DpopNonceRequired { .. } => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_DPOP_NONCE_REQUIRED",
                "DPoP proof must carry the nonce this server issued",
            ),
            DpopRequired(_) => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_DPOP_BINDING",
                "Token and authorization scheme do not match",
            ),
            InsufficientScope(_) => row(
                403,
                PermissionDenied,
                "PROXY_AUTH_INSUFFICIENT_SCOPE",
                "Token lacks a scope this route requires",
            ),
            McpMismatch(_) => row(
                400,
                InvalidArgument,
                "PROXY_AUTH_MCP_MISMATCH",
                "MCP request headers do not match its JSON-RPC body",
            ),
            ProfileNotAllowed => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_PROFILE_NOT_ALLOWED",
                "This route does not accept this kind of credential",
            ),
            SignatureMissing { .. } => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_SIGNATURE_MISSING",
                "Request has no HTTP message signature",
            ),
            SignatureKeysUnavailable => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Signature agent keys are unavailable",
            ),
            SignatureInvalid { .. } => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_SIGNATURE_INVALID",
                "HTTP message signature verification failed",
            ),
            TokenRevoked => row(
                401,
                Unauthenticated,
                "PROXY_AUTH_TOKEN_REVOKED",
                "Token has been revoked",
            ),
            MissingRoles(_) => row(
                403,
                PermissionDenied,
                "PROXY_AUTH_MISSING_ROLE",
                "Token lacks a role this route requires",
            ),
            MissingPermissions(_) => row(
                403,
                PermissionDenied,
                "PROXY_AUTH_MISSING_PERMISSION",
                "Token lacks a permission this route requires",
            ),
            TrustScoreTooLow { .. } => row(
                403,
                PermissionDenied,
                "PROXY_AUTH_TRUST_SCORE_TOO_LOW",
                "Token trust score is below what this route requires",
            ),
            RateLimited { .. } => row(
                429,
                ResourceExhausted,
                "PROXY_RATE_LIMIT_EXCEEDED",
                "Too many requests",
            ),
            ClientRateLimited { .. } => row(
                429,
                ResourceExhausted,
                "PROXY_PUBLIC_RATE_LIMIT_EXCEEDED",
                "Too many requests",
            ),
            RateLimitUnavailable => row(
                503,
                Unavailable,
                UNAVAILABLE,
                "Rate limiting is unavailable",
            ),
            Overloaded => row(503, Unavailable, UNAVAILABLE, "Authorization is overloaded"),
        }
    }

    pub(crate) fn status(&self) -> u16 {
        self.spec().status
    }

    pub(crate) fn code(&self) -> &'static str {
        self.spec().code
    }

    pub(crate) fn message(&self) -> &'static str {
        self.spec().message
    }

    /// The `details` object, when the reference sets one; the only other match on the variants.
    pub(crate) fn details(&self) -> Option<Value> {
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
            Dpop(e) => Some(json!({ "reason": e.description() })),
            DpopRequired(reason) | McpMismatch(reason) => Some(json!({ "reason": reason })),
            InsufficientScope(scopes) => Some(json!({ "requiredScopes": scopes })),
            SignatureInvalid { reason, .. } => Some(json!({ "reason": reason })),
            MissingRoles(missing) => Some(json!({ "missingRoles": missing })),
            MissingPermissions(missing) => Some(json!({ "missingPermissions": missing })),
            TrustScoreTooLow { required } => Some(json!({ "minTrustScore": required })),
            KeysUnavailable(None)
            | KeysPayloadInvalid
            | MissingToken
            | InvalidScheme
            | MissingTimestamp
            | InvalidTimestamp
            | Replay
            | NonceStoreUnavailable
            | AgentRevoked
            | AitRevoked
            | AccessTokenRequired
            | AccessTokenInvalid
            | BodyIncomplete
            | BodyNotForwarded
            | InvalidPath
            | UnknownPolicy
            | BearerKeysUnavailable
            | DpopNonceRequired { .. }
            | ProfileNotAllowed
            | SignatureMissing { .. }
            | SignatureKeysUnavailable
            | TokenRevoked
            | RateLimited { .. }
            | ClientRateLimited { .. }
            | RateLimitUnavailable
            | Overloaded => None,
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

#[cfg(test)]
mod tests;
