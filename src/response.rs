//! `Decision` to `CheckResponse`: the only place that speaks Envoy's response types, written
//! straight to protobuf (`wire`).
//!
//! Allowed requests get the identity headers with `OVERWRITE_IF_EXISTS_OR_ADD` (never `append`,
//! which Envoy turns into a spoofable comma-join) and lose their credentials; every allow also
//! removes identity headers it does not set, so a client can never pre-set them. Denials carry
//! the reference's status and JSON envelope byte for byte, `content-type: application/json`,
//! `x-request-id`, and a `www-authenticate` challenge: `Claw` on 401 for Claw routes, RFC 6750
//! `Bearer` and RFC 9449 `DPoP` challenges (with RFC 9728's `resource_metadata` on resource
//! routes) for bearer tokens.

use bytes::Bytes;

use crate::denial::Denial;
use crate::pipeline::{ClawIdentity, Decision, Identity, SignatureIdentity};
use crate::policy::{Policy, Profile};
use crate::protocol::bearer::BearerClaims;
use crate::protocol::dpop;
use crate::server::Answer;
use crate::stage::bearer::Scheme;

mod shared;
mod wire;

pub(crate) use shared::{SHARED_MAX, SharedAnswers, shared_held};

/// Unix seconds of the server, on skew denials.
pub(crate) const SERVER_TIME: &str = "x-claw-server-time";
pub(crate) const AGENT_DID: &str = "x-claw-agent-did";
pub(crate) const OWNER_DID: &str = "x-claw-owner-did";
pub(crate) const AIT_JTI: &str = "x-claw-ait-jti";
pub(crate) const ISSUER: &str = "x-claw-issuer";
pub(crate) const AGENT_PUBLIC_KEY: &str = "x-claw-agent-public-key";
pub(crate) const SHADOW_DENIAL: &str = "x-claw-authz-shadow-denial";
/// The bearer profile's identity headers.
pub(crate) const AGENT_ID: &str = "x-claw-agent-id";
pub(crate) const AGENT_ROLES: &str = "x-claw-agent-roles";
pub(crate) const AGENT_PERMISSIONS: &str = "x-claw-agent-permissions";
pub(crate) const TOKEN_ID: &str = "x-claw-token-id";
pub(crate) const TRUST_SCORE: &str = "x-claw-trust-score";
/// The `httpsig` profile's identity headers.
pub(crate) const SIGNATURE_AGENT: &str = "x-claw-signature-agent";
pub(crate) const SIGNATURE_KEYID: &str = "x-claw-signature-keyid";
pub(crate) const SIGNATURE_COMPONENTS: &str = "x-claw-signature-components";
const CLAW_HEADERS: [&str; 5] = [AGENT_DID, OWNER_DID, AIT_JTI, ISSUER, AGENT_PUBLIC_KEY];
const SIGNATURE_HEADERS: [&str; 3] = [SIGNATURE_AGENT, SIGNATURE_KEYID, SIGNATURE_COMPONENTS];
const BEARER_HEADERS: [&str; 5] = [
    AGENT_ID,
    AGENT_ROLES,
    AGENT_PERMISSIONS,
    TOKEN_ID,
    TRUST_SCORE,
];

/// The error envelope, members in the reference's order (`code`, `message`, `requestId`,
/// `details`), as `JSON.stringify` writes it.
pub(crate) fn envelope(denial: &Denial, request_id: &str) -> String {
    let text = |s: &str| serde_json::Value::from(s).to_string();
    let details = denial
        .details()
        .map(|d| format!(",\"details\":{d}"))
        .unwrap_or_default();
    format!(
        "{{\"error\":{{\"code\":{},\"message\":{},\"requestId\":{}{details}}}}}",
        text(denial.code()),
        text(denial.message()),
        text(request_id),
    )
}

/// The encoded answer to a check: shared by the agent's (or the bearer token's) checks on the
/// policy when the check is an allowed Claw or bearer request (`SharedAnswers`), built for this
/// check otherwise. Only a denial asks for `particulars`.
pub(crate) fn encoded<'a>(
    decision: &Decision,
    credential_headers: &[String],
    particulars: impl FnOnce() -> Particulars<'a>,
) -> Answer {
    if let Some(answer) = shared(decision, credential_headers) {
        return answer;
    }
    let encoded = match decision {
        Decision::Allow { identity, policy } => {
            allow(identity.as_ref(), &policy.name, None, credential_headers)
        }
        Decision::ShadowAllow { denial, policy, .. } => {
            allow(None, &policy.name, Some(denial), credential_headers)
        }
        Decision::Deny { denial, policy, .. } => {
            let p = particulars();
            deny(
                denial,
                p.request_id,
                policy.as_ref().map_or("none", |p| p.name.as_str()),
                p.server_time_secs,
                challenge(denial, policy.as_ref(), p.scheme).as_deref(),
            )
        }
    };
    Answer::Built {
        allowed: !matches!(decision, Decision::Deny { .. }),
        encoded,
    }
}

/// What a denial's answer carries of its check. `server_time_secs` goes out as
/// `x-claw-server-time` on skew denials, so the agent can correct its clock (the body stays the
/// reference's); `scheme` is the request's `Authorization` scheme when it is `Bearer` or `DPoP`
/// (it picks the challenge).
pub(crate) struct Particulars<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) server_time_secs: u64,
    pub(crate) scheme: Option<Scheme>,
}

/// The shared answer of an allowed Claw or bearer request.
fn shared(decision: &Decision, credential_headers: &[String]) -> Option<Answer> {
    let Decision::Allow {
        identity: Some(identity),
        policy,
    } = decision
    else {
        return None;
    };
    let answers = match identity {
        Identity::Claw(id) => Some(&id.answers),
        Identity::Bearer(token) => token.answers.as_ref(),
        Identity::Signature(_) => None,
    }?;
    Some(Answer::Shared(answers.get_or_build(&policy.name, || {
        Bytes::from(allow(
            Some(identity),
            &policy.name,
            None,
            credential_headers,
        ))
    })))
}

/// The `WWW-Authenticate` value of a denial. Claw routes (and requests with another scheme on
/// `any` routes) keep the reference's `Claw` on 401. Routes that take bearer tokens answer as
/// RFC 6750 §3 and RFC 9449 §7.1 say: no `error` when no token came, `invalid_token`,
/// `invalid_dpop_proof`, `use_dpop_nonce`, or `insufficient_scope` on 403 with the scopes
/// needed; a resource route (RFC 9728 §5.1) adds `resource_metadata`, and `scope` (its
/// required scopes) to the first challenge.
fn challenge(denial: &Denial, policy: Option<&Policy>, scheme: Option<Scheme>) -> Option<String> {
    let status = denial.status();
    let oauth = policy.filter(|p| {
        p.profile == Profile::Bearer
            || p.resource.is_some()
            || (p.profile == Profile::Any && scheme.is_some())
    });
    let Some(policy) = oauth else {
        return (status == 401).then(|| "Claw".to_owned());
    };
    let dpop_error = |d: &str| ("invalid_dpop_proof", d.to_owned());
    let (error, description) = match denial {
        Denial::MissingToken | Denial::ProfileNotAllowed => ("", String::new()),
        Denial::Bearer(e) => ("invalid_token", e.reason().to_owned()),
        Denial::DpopRequired(reason) => ("invalid_token", (*reason).to_owned()),
        Denial::Dpop(e) => dpop_error(e.description()),
        Denial::Replay if scheme == Some(Scheme::Dpop) => {
            dpop_error("DPoP proof has already been used")
        }
        Denial::DpopNonceRequired { .. } => (
            "use_dpop_nonce",
            "Resource server requires nonce in DPoP proof".to_owned(),
        ),
        Denial::InsufficientScope(_) => ("insufficient_scope", denial.message().to_owned()),
        _ if status == 401 => ("invalid_token", denial.message().to_owned()),
        _ => return None,
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    if !error.is_empty() {
        params.push(("error", error.to_owned()));
        params.push(("error_description", description));
    }
    let scopes = match denial {
        Denial::InsufficientScope(needed) => needed.join(" "),
        _ if error.is_empty() => policy.required_scopes.join(" "),
        _ => String::new(),
    };
    if !scopes.is_empty() {
        params.push(("scope", scopes));
    }
    if let Some(url) = policy.resource_metadata_url() {
        params.push(("resource_metadata", url));
    }
    let render = |scheme: &str, params: &[(&str, String)]| {
        let list: Vec<String> = params.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        match list.is_empty() {
            true => scheme.to_owned(),
            false => format!("{scheme} {}", list.join(", ")),
        }
    };
    let algs = ("algs", dpop::ALGORITHMS.to_owned());
    let dpop_challenge = matches!(
        denial,
        Denial::Dpop(_) | Denial::DpopNonceRequired { .. } | Denial::DpopRequired(_)
    ) || scheme == Some(Scheme::Dpop)
        || policy.require_dpop;
    Some(match (dpop_challenge, error.is_empty()) {
        (true, _) => {
            params.push(algs);
            render("DPoP", &params)
        }
        // No token: either scheme will do.
        (false, true) => format!("{}, {}", render("Bearer", &params), render("DPoP", &[algs])),
        (false, false) => render("Bearer", &params),
    })
}

/// An allowed response as it is built: headers set, headers removed, dynamic metadata.
struct Allowed<'a> {
    headers: Vec<(&'a str, &'a str)>,
    remove: Vec<&'a str>,
    meta: Vec<(&'a str, &'a str)>,
}

impl<'a> Allowed<'a> {
    /// Every identity header is either set or removed, so a client cannot supply one.
    fn unset(&mut self, names: &[&'a str]) {
        self.remove.extend_from_slice(names);
    }
}

/// A bearer token's grants as header values.
struct Grants {
    roles: String,
    permissions: String,
    score: Option<String>,
}

fn allow(
    identity: Option<&Identity>,
    policy: &str,
    shadow: Option<&Denial>,
    credential_headers: &[String],
) -> Vec<u8> {
    let grants;
    // Room for the longest answer (bearer's), so no vector grows.
    let mut a = Allowed {
        headers: Vec::with_capacity(BEARER_HEADERS.len() + 2),
        remove: Vec::with_capacity(
            credential_headers.len()
                + CLAW_HEADERS.len()
                + BEARER_HEADERS.len()
                + SIGNATURE_HEADERS.len(),
        ),
        meta: Vec::with_capacity(9),
    };
    a.remove
        .extend(credential_headers.iter().map(String::as_str));
    a.meta.push(("policy", policy));
    match identity {
        Some(Identity::Claw(id)) => claw(&mut a, id),
        Some(Identity::Bearer(token)) => {
            let id = &token.claims;
            grants = Grants {
                roles: id.roles.join(","),
                permissions: id.permissions.join(","),
                score: id.trust_score.map(|s| s.to_string()),
            };
            bearer(&mut a, id, &grants);
        }
        Some(Identity::Signature(id)) => signature(&mut a, id),
        None => {
            a.unset(&CLAW_HEADERS);
            a.unset(&BEARER_HEADERS);
            a.unset(&SIGNATURE_HEADERS);
            let decision = match shadow {
                Some(_) => "shadow_deny",
                None => "allow_unauthenticated",
            };
            a.meta.push(("decision", decision));
        }
    }
    if let Some(d) = shadow {
        a.headers.push((SHADOW_DENIAL, d.code()));
        a.meta.push(("shadow_denial", d.code()));
    }
    wire::Parts {
        code: 0,
        message: "",
        http: wire::Http::Ok {
            set: &a.headers,
            remove: &a.remove,
        },
        metadata: &a.meta,
    }
    .encode()
}

/// A Claw agent's identity headers and metadata.
fn claw<'a>(a: &mut Allowed<'a>, id: &'a ClawIdentity) {
    for (name, value) in [
        (AGENT_DID, &id.agent_did),
        (OWNER_DID, &id.owner_did),
        (AIT_JTI, &id.ait_jti),
        (ISSUER, &id.issuer),
        (AGENT_PUBLIC_KEY, &id.public_key),
    ] {
        a.headers.push((name, value));
    }
    a.unset(&BEARER_HEADERS);
    a.unset(&SIGNATURE_HEADERS);
    a.meta.extend([
        ("decision", "allow"),
        ("profile", "claw"),
        ("agent_did", &id.agent_did),
        ("owner_did", &id.owner_did),
        ("ait_jti", &id.ait_jti),
        ("issuer", &id.issuer),
    ]);
}

/// A bearer token's identity headers and metadata.
fn bearer<'a>(a: &mut Allowed<'a>, id: &'a BearerClaims, grants: &'a Grants) {
    for (name, value) in [
        (AGENT_ID, &id.sub),
        (AGENT_ROLES, &grants.roles),
        (AGENT_PERMISSIONS, &grants.permissions),
        (TOKEN_ID, &id.jti),
        (ISSUER, &id.iss),
    ] {
        a.headers.push((name, value));
    }
    match &grants.score {
        Some(s) => a.headers.push((TRUST_SCORE, s)),
        None => a.remove.push(TRUST_SCORE),
    }
    a.unset(&[AGENT_DID, OWNER_DID, AIT_JTI, AGENT_PUBLIC_KEY]);
    a.unset(&SIGNATURE_HEADERS);
    a.meta.extend([
        ("decision", "allow"),
        ("profile", "bearer"),
        ("agent_id", &id.sub),
        ("roles", &grants.roles),
        ("permissions", &grants.permissions),
        ("token_id", &id.jti),
        ("issuer", &id.iss),
    ]);
}

/// A message signature's identity headers and metadata.
fn signature<'a>(a: &mut Allowed<'a>, id: &'a SignatureIdentity) {
    for (name, value) in [
        (SIGNATURE_AGENT, &id.agent),
        (SIGNATURE_KEYID, &id.keyid),
        (SIGNATURE_COMPONENTS, &id.components),
    ] {
        a.headers.push((name, value));
    }
    a.unset(&CLAW_HEADERS);
    a.unset(&BEARER_HEADERS);
    a.meta.extend([
        ("decision", "allow"),
        ("profile", "httpsig"),
        ("signature_agent", &id.agent),
        ("signature_keyid", &id.keyid),
    ]);
}

/// The answer to a Check shed unread by `limits.concurrent_checks` (no request id was read, so
/// `request_id` is a fresh one).
pub(crate) fn overloaded(request_id: &str) -> Vec<u8> {
    deny(&Denial::Overloaded, request_id, "none", 0, None)
}

/// A denial's answer; `challenge` is its `www-authenticate` value, if any.
fn deny(
    denial: &Denial,
    request_id: &str,
    policy: &str,
    server_time_secs: u64,
    challenge: Option<&str>,
) -> Vec<u8> {
    let number;
    let mut headers = Vec::with_capacity(4);
    headers.extend([
        ("content-type", "application/json"),
        ("x-request-id", request_id),
    ]);
    match denial {
        Denial::TimestampSkew { .. } => {
            number = server_time_secs.to_string();
            headers.push((SERVER_TIME, &number));
        }
        Denial::RateLimited { retry_after_secs }
        | Denial::ClientRateLimited { retry_after_secs } => {
            number = retry_after_secs.to_string();
            headers.push(("retry-after", &number));
        }
        Denial::Overloaded => headers.push(("retry-after", "1")),
        Denial::SignatureMissing { accept } | Denial::SignatureInvalid { accept, .. } => {
            headers.push(("accept-signature", accept));
        }
        Denial::DpopNonceRequired { nonce } => headers.push(("dpop-nonce", nonce)),
        _ => {}
    }
    if let Some(value) = challenge {
        headers.push(("www-authenticate", value));
    }
    let body = envelope(denial, request_id);
    wire::Parts {
        code: denial.spec().grpc as i32,
        message: denial.code(),
        http: wire::Http::Denied {
            status: denial.status(),
            headers: &headers,
            body: &body,
        },
        metadata: &[
            ("decision", "deny"),
            ("code", denial.code()),
            ("policy", policy),
        ],
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_byte_exact_in_reference_order() {
        assert_eq!(
            envelope(
                &Denial::TimestampSkew { max_skew_secs: 300 },
                "req-12345678"
            ),
            r#"{"error":{"code":"PROXY_AUTH_TIMESTAMP_SKEW","message":"X-Claw-Timestamp is outside the allowed skew window","requestId":"req-12345678","details":{"maxSkewSeconds":300}}}"#
        );
        assert_eq!(
            envelope(&Denial::Replay, "r\"x"),
            r#"{"error":{"code":"PROXY_AUTH_REPLAY","message":"Replay detected","requestId":"r\"x"}}"#
        );
    }
}
