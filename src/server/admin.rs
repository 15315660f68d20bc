//! The admin listener's routes: liveness, readiness, server time, metrics, pushed registry
//! events, the security events stream, and the protected-resource metadata of resource routes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

use super::resource;
use crate::app::App;

/// The admin listener: liveness, readiness, server time, metrics, pushed events and the
/// protected-resource metadata of resource routes.
pub(super) fn admin_routes(app: Arc<App>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/time", get(time))
        .route("/metrics", get(metrics))
        .route("/v1/security/events", get(security_events))
        .route(resource::WELL_KNOWN, get(resource::metadata))
        .route(
            &format!("{}/{{*path}}", resource::WELL_KNOWN),
            get(resource::metadata),
        )
        .route(
            "/v1/events",
            post(event).layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
        )
        .with_state(app)
}

/// 200 once the signing keys have loaded and the CRL has been tried once (and until shutdown
/// begins), 503 before; the body details the registry data, so an
/// operator sees a CRL that stopped refreshing (and what checks do about it) at a glance.
async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, Json<serde_json::Value>) {
    let draining = app.draining.load(Ordering::SeqCst);
    let crl_tried = *app.pipeline.crl.attempted().borrow();
    let ready = *app.ready().borrow() && crl_tried && !draining;
    let p = &app.pipeline;
    let now = p.clock.now_ms();
    let detail = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "keys": {
            "loaded": ready,
            "ageSecs": p.keys.age_ms(now).map(|ms| ms / 1000),
        },
        "crl": p.crl.status(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(detail))
}

async fn metrics(State(app): State<Arc<App>>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.telemetry.prometheus_text(),
    )
}

async fn time(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let ms = app.pipeline.clock.now_ms();
    Json(serde_json::json!({ "unixSeconds": ms / 1000, "unixMillis": ms }))
}

/// Whether `headers` may use the events endpoints (`POST /v1/events`, `GET
/// /v1/security/events`): the configured bearer token, or a loopback listener opened on purpose.
fn admitted(app: &App, headers: &HeaderMap) -> Result<(), (StatusCode, Json<serde_json::Value>)> {
    use crate::app::EventsEndpoint;
    use serde_json::json;
    let refused = |error: &str| Err((StatusCode::UNAUTHORIZED, Json(json!({ "error": error }))));
    match &app.events_endpoint {
        EventsEndpoint::Off => Err((StatusCode::NOT_FOUND, Json(json!({"error": "not enabled"})))),
        EventsEndpoint::NoToken => refused("no token is configured: set events.token_file"),
        EventsEndpoint::Unauthenticated => Ok(()),
        EventsEndpoint::Token(token) => {
            let presented = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            match same(presented.as_bytes(), token.as_bytes()) {
                true => Ok(()),
                false => refused("a valid bearer token is required"),
            }
        }
    }
}

/// `GET /v1/security/events`: security events as they are made, one CloudEvent JSON per line
/// (`claw-authz events tail`), with the events endpoint's authentication. A reader too slow
/// for the stream skips what it missed.
async fn security_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(refused) = admitted(&app, &headers) {
        return refused.into_response();
    }
    let rx = app.pipeline.security.subscribe();
    let lines = futures_util::stream::unfold((rx, app), |(mut rx, app)| async move {
        loop {
            // The stream ends when shutdown begins, so a connected tail never holds the drain.
            if app.draining.load(Ordering::SeqCst) {
                return None;
            }
            let next = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv());
            let Ok(next) = next.await else { continue };
            match next {
                Ok(event) => {
                    let line = bytes::Bytes::from(format!("{event}\n"));
                    return Some((Ok::<_, std::convert::Infallible>(line), (rx, app)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    (
        [("content-type", "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// `POST /v1/events`: one registry event envelope, applied like a stream entry (for a single
/// replica without Redis). Answers 200 with what it did, 400 for a malformed envelope, 401 without
/// the configured bearer token, 404 when the endpoint is off, 503 when the overlay is full.
async fn event(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    use crate::revocation::Applied;
    use serde_json::json;
    if let Err(refused) = admitted(&app, &headers) {
        return refused;
    }
    let now = app.pipeline.clock.now_ms();
    // Ended revocations go on this server's clock (never on a time an event carries).
    app.pipeline.events.prune(now);
    match app.pipeline.events.apply(&body, now, now) {
        Applied::Revoked { agent_did, new } => (
            StatusCode::OK,
            Json(json!({"outcome": "revoked", "agentDid": agent_did, "new": new})),
        ),
        Applied::RevokedToken { jti, new } => (
            StatusCode::OK,
            Json(json!({"outcome": "revoked", "jti": jti, "new": new})),
        ),
        Applied::Ignored(_) => (StatusCode::OK, Json(json!({"outcome": "ignored"}))),
        Applied::Rejected(reason) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"outcome": "rejected", "reason": reason})),
        ),
        Applied::Full => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"outcome": "full", "reason": "events.capacity revocations are held"})),
        ),
    }
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
