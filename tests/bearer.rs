//! The bearer (ES256 JWT) profile: first `src/protocol/bearer.rs` against tokens signed here
//! with generated P-256 keys, one case per refusal, each with its own code; then the real server
//! with a JWKS on loopback: per-route profiles, roles, permissions and trust score, `jti`
//! revocation, and a `cnf`-bound token's proof and replay protection.

mod support;

use claw_authz::protocol::bearer::{BearerError, BearerExpect, parse_jwks, peek_issuer, verify};
use claw_authz::protocol::keys::KeysDocError;
use serde_json::{Value, json};
use support::{b64, p256_signer, p256_xy, sign_jws_es};

const NOW: u64 = 1_767_225_600;
const ISS: &str = "https://auth.example.com";
const AUD: &str = "svc-orders";

fn expect() -> BearerExpect<'static> {
    BearerExpect {
        issuer: ISS,
        audience: AUD,
        now_secs: NOW,
        max_iat_skew_secs: 60,
    }
}

fn jwks(kids: &[(&str, &str)]) -> String {
    let keys: Vec<Value> = kids
        .iter()
        .map(|(kid, label)| {
            let (x, y) = p256_xy(&p256_signer(label));
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn claims() -> Value {
    json!({
        "sub": "agent-7", "aud": AUD, "iss": ISS, "iat": NOW - 10, "exp": NOW + 3600,
        "jti": "tok-1", "roles": ["reader"], "permissions": ["orders:read"], "trustScore": 0.82,
    })
}

fn token(claims: &Value) -> String {
    sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#,
        &claims.to_string(),
        &p256_signer("issuer-k1"),
    )
}

fn check(token: &str) -> Result<claw_authz::protocol::bearer::BearerClaims, BearerError> {
    let keys = parse_jwks(jwks(&[("k1", "issuer-k1")]).as_bytes()).unwrap();
    verify(token, &keys, expect())
}

fn code(token: &str) -> &'static str {
    check(token).map(|_| "ok").unwrap_or_else(|e| e.code())
}

fn with(field: &str, value: Value) -> Value {
    let mut c = claims();
    c[field] = value;
    c
}

#[test]
fn a_valid_token_yields_its_claims() {
    let c = check(&token(&claims())).unwrap();
    assert_eq!((c.sub.as_str(), c.jti.as_str()), ("agent-7", "tok-1"));
    assert_eq!(c.roles, ["reader"]);
    assert_eq!(c.permissions, ["orders:read"]);
    assert_eq!(c.trust_score, Some(0.82));
    assert!(c.cnf.is_none());
    assert_eq!(peek_issuer(&token(&claims())).as_deref(), Some(ISS));
    // `aud` may be a list containing this service.
    assert_eq!(code(&token(&with("aud", json!(["other", AUD])))), "ok");
}

#[test]
fn each_refusal_has_its_own_code() {
    let cases = [
        (
            token(&with("aud", json!("svc-other"))),
            "PROXY_AUTH_BEARER_AUDIENCE",
        ),
        (
            token(&with("iss", json!("https://evil.example"))),
            "PROXY_AUTH_BEARER_ISSUER",
        ),
        (token(&with("exp", json!(NOW))), "PROXY_AUTH_BEARER_EXPIRED"),
        (
            token(&with("iat", json!(NOW + 61))),
            "PROXY_AUTH_BEARER_NOT_YET_VALID",
        ),
        (token(&with("exp", Value::Null)), "PROXY_AUTH_BEARER_CLAIMS"),
        (
            token(&with("roles", json!("admin"))),
            "PROXY_AUTH_BEARER_CLAIMS",
        ),
    ];
    for (t, want) in cases {
        assert_eq!(code(&t), want);
    }
    // 60 s of future `iat` is tolerated.
    assert_eq!(code(&token(&with("iat", json!(NOW + 60)))), "ok");
}

#[test]
fn only_es256_with_a_known_kid_and_a_raw_signature() {
    let payload = claims().to_string();
    let input = |header: &str| format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    // HS256 keyed with the issuer's public key (the classic confusion) and `none`.
    let (x, _) = p256_xy(&p256_signer("issuer-k1"));
    let hs = {
        use aws_lc_rs::hmac;
        let i = input(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, x.as_bytes()),
            i.as_bytes(),
        );
        format!("{i}.{}", b64(tag.as_ref()))
    };
    assert_eq!(code(&hs), "PROXY_AUTH_BEARER_ALGORITHM");
    let none = format!("{}.", input(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#));
    assert_eq!(code(&none), "PROXY_AUTH_BEARER_ALGORITHM");
    let ed = sign_jws_es(
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&ed), "PROXY_AUTH_BEARER_ALGORITHM");
    // A kid the issuer does not publish.
    let unknown = sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k9"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&unknown), "PROXY_AUTH_BEARER_UNKNOWN_KEY");
    assert!(check(&unknown).unwrap_err().is_unknown_key());
    // The same signature DER-encoded.
    let good = token(&claims());
    let (signed, sig) = good.rsplit_once('.').unwrap();
    let raw = support::unb64(sig);
    let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
    let der_token = format!("{signed}.{}", b64(der.as_bytes()));
    assert_eq!(code(&der_token), "PROXY_AUTH_BEARER_SIGNATURE");
    // Signed by another key under k1's kid.
    let forged = sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#,
        &payload,
        &p256_signer("mallory"),
    );
    assert_eq!(code(&forged), "PROXY_AUTH_BEARER_SIGNATURE");
    // Header members beyond alg, typ, kid (jku, jwk, crit...) are refused outright.
    let jku = sign_jws_es(
        r#"{"alg":"ES256","typ":"JWT","kid":"k1","jku":"https://evil.example/jwks"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&jku), "PROXY_AUTH_BEARER_MALFORMED");
    let dup = sign_jws_es(
        r#"{"alg":"ES256","alg":"ES256","kid":"k1"}"#,
        &payload,
        &p256_signer("issuer-k1"),
    );
    assert_eq!(code(&dup), "PROXY_AUTH_BEARER_MALFORMED");
}

#[test]
fn a_confirmation_key_is_read_and_a_bad_one_refused() {
    let (x, y) = p256_xy(&p256_signer("agent-7-key"));
    let bound = with(
        "cnf",
        json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}}),
    );
    assert!(check(&token(&bound)).unwrap().cnf.is_some());
    let off_curve = with(
        "cnf",
        json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": x}}),
    );
    assert_eq!(code(&token(&off_curve)), "PROXY_AUTH_BEARER_CLAIMS");
}

#[test]
fn a_jwks_keeps_only_usable_p256_signing_keys() {
    let (x, y) = p256_xy(&p256_signer("a"));
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "enc", "use": "enc"},
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "ok"},
        {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": "bad kid"},
    ]});
    let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(
        parse_jwks(b"{\"keys\":[]}").unwrap_err(),
        KeysDocError::NoActiveKey
    );
    assert_eq!(parse_jwks(b"[]").unwrap_err(), KeysDocError::PayloadInvalid);
}

// ---- through the real server -------------------------------------------------------------

mod server {
    use std::sync::Arc;

    use claw_authz::clock::ManualClock;
    use claw_authz::dev::check::check_request;
    use claw_authz::protocol::pop::{body_sha256, canonical_string};
    use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
    use serde_json::json;

    use super::support::registry::{FakeEndpoint, Reply};
    use super::support::server::Running;
    use super::support::world::{NOW_MS, World, denied, ok_headers, outcome};
    use super::support::{b64, p256_signer, p256_xy, sign_jws_es};
    use super::{AUD, ISS, NOW, claims, jwks, token, with};

    struct Setup {
        w: World,
        jwks: FakeEndpoint,
        s: Running,
        clock: Arc<ManualClock>,
    }

    async fn setup(name: &str) -> Setup {
        setup_with(name, "").await
    }

    /// Like [`setup`], with `registry_extra` (indented lines) added to `registry:`.
    async fn setup_with(name: &str, registry_extra: &str) -> Setup {
        setup_more(name, registry_extra, "").await
    }

    /// Like [`setup_with`], with the top-level sections `more` added.
    async fn setup_more(name: &str, registry_extra: &str, more: &str) -> Setup {
        let w = World::new(name).await;
        let jwks = FakeEndpoint::start(
            "/jwks.json",
            vec![Reply::Body(200, jwks(&[("k1", "issuer-k1")]))],
        )
        .await;
        let token_file = w.dir.join("events.token");
        std::fs::write(&token_file, "t0ken").unwrap();
        let extra = format!(
            "bearer:\n  issuers:\n    - issuer: {ISS}\n      audience: {AUD}\n      jwks_url: {}\n      insecure_http: true\n\
             policies:\n  orders: {{profile: bearer, require_roles: [reader], require_permissions: [\"orders:read\"]}}\n\
             \x20 admin: {{profile: bearer, require_roles: [admin]}}\n\
             \x20 scored: {{profile: bearer, min_trust_score: 0.9}}\n\
             \x20 either: {{profile: any}}\n\
             \x20 elsewhere: {{profile: bearer, resource: \"https://other.example/api\", authorization_servers: [\"{ISS}\"]}}\n\
             \x20 full_claw: {{require_known_agent: true, require_access_token: true, {LIMITS}}}\n\
             \x20 full_bearer: {{profile: bearer, require_roles: [reader], {LIMITS}}}\n\
             \x20 full_httpsig: {{profile: httpsig, {LIMITS}}}\n\
             httpsig:\n  keys:\n    - {{kty: OKP, crv: Ed25519, x: \"{}\"}}\n\
             events:\n  token_file: {}\n{more}",
            jwks.url,
            signature_key().jwk()["x"].as_str().unwrap(),
            token_file.display()
        );
        let yaml = w.yaml_with(registry_extra, &extra);
        let clock = Arc::new(ManualClock::at(NOW_MS));
        let s = super::support::server::start(&yaml, clock.clone()).await;
        s.wait_ready().await;
        Setup { w, jwks, s, clock }
    }

    /// The key of the `full_httpsig` route.
    fn signature_key() -> claw_authz::dev::sign::AgentSigner {
        let seed = [11; 32];
        claw_authz::dev::sign::AgentSigner::Ed25519(
            claw_authz::dev::sign::Ed25519Signer::from_seed(seed),
        )
    }

    /// Both limits, far from reached.
    const LIMITS: &str = "client_rate_limit: {requests: 100, window_secs: 60}, rate_limit: {requests: 100, window_secs: 60}";

    /// A request on `policy`'s route (selected as Envoy would, by `context_extensions`).
    fn on(policy: &str, req: CheckRequest) -> CheckRequest {
        super::support::world::on_policy(policy, req)
    }

    fn bearer(policy: &str, token: &str) -> CheckRequest {
        let auth = format!("Bearer {token}");
        on(
            policy,
            check_request("GET", "/v1/orders", &[("authorization", &auth)], b""),
        )
    }

    fn header<'a>(headers: &'a [(String, String, i32, bool)], name: &str) -> Option<&'a str> {
        headers.iter().find(|h| h.0 == name).map(|h| h.1.as_str())
    }

    #[tokio::test]
    async fn a_valid_bearer_token_is_allowed_with_its_identity_headers() {
        let mut t = setup("bearer-allow").await;
        let r = t.s.check(bearer("orders", &token(&claims()))).await;
        assert_eq!(outcome(&r), "200");
        let (headers, removed) = ok_headers(&r);
        assert_eq!(header(&headers, "x-claw-agent-id"), Some("agent-7"));
        assert_eq!(header(&headers, "x-claw-agent-roles"), Some("reader"));
        assert_eq!(
            header(&headers, "x-claw-agent-permissions"),
            Some("orders:read")
        );
        assert_eq!(header(&headers, "x-claw-token-id"), Some("tok-1"));
        assert_eq!(header(&headers, "x-claw-issuer"), Some(ISS));
        assert_eq!(header(&headers, "x-claw-trust-score"), Some("0.82"));
        assert!(removed.contains(&"authorization".to_owned()));
        assert!(
            removed.contains(&"x-claw-agent-did".to_owned()),
            "a client cannot supply it"
        );
        assert_eq!(t.jwks.calls(), 1);
        t.s.stop().await;
    }

    /// Revokes the token id `jti`, pushed through the admin endpoint.
    async fn revoke(t: &Setup, jti: &str) {
        let envelope = claw_authz::revocation::token_revocation_envelope(jti, NOW_MS);
        let answer = reqwest::Client::new()
            .post(format!("http://{}/v1/events", t.s.admin))
            .bearer_auth("t0ken")
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }

    /// The answer's `policy` metadata.
    fn policy_of(r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> String {
        use envoy_types::pb::google::protobuf::value::Kind;
        let meta = &r.dynamic_metadata.as_ref().unwrap().fields;
        match &meta["policy"].kind {
            Some(Kind::StringValue(v)) => v.clone(),
            other => panic!("policy: {other:?}"),
        }
    }

    /// `claw_authz_cache_results_total{cache="bearer"}`: hits and misses.
    fn bearer_cache(t: &Setup) -> (u64, u64) {
        let metrics = t.s.app.telemetry.prometheus_text();
        let count = |result: &str| {
            let line =
                format!(r#"claw_authz_cache_results_total{{cache="bearer",result="{result}"}} "#);
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()).map(|n| n.parse().unwrap()))
                .unwrap_or_else(|| panic!("no {result} count in:\n{metrics}"))
        };
        (count("hit"), count("miss"))
    }

    /// A token is verified once, then answers from the cache; what can change after it was
    /// verified is checked on every request all the same: the route's audience, its `exp`, its
    /// key in the issuer's JWKS, a revocation of its `jti`; and the answers, shared by its
    /// checks, carry each route's name.
    #[tokio::test]
    async fn a_cached_bearer_token_still_meets_its_audience_exp_key_and_revocation() {
        let mut t = setup("bearer-cache").await;
        let good = token(&claims());
        for _ in 0..3 {
            let r = t.s.check(bearer("orders", &good)).await;
            assert_eq!(outcome(&r), "200");
            assert_eq!(policy_of(&r), "orders");
        }
        let r = t.s.check(bearer("either", &good)).await;
        assert_eq!(outcome(&r), "200");
        assert_eq!(policy_of(&r), "either");
        assert_eq!(bearer_cache(&t), (3, 1));
        // Another route's audience: verified again in full, and refused as such.
        let r = t.s.check(bearer("elsewhere", &good)).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_BEARER_AUDIENCE");
        assert_eq!(bearer_cache(&t), (3, 2));
        // Its `exp` (an hour ahead) reached.
        t.clock.advance_ms(3_600_000);
        let r = t.s.check(bearer("orders", &good)).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_BEARER_EXPIRED");
        t.clock.set_ms(NOW_MS);
        assert_eq!(outcome(&t.s.check(bearer("orders", &good)).await), "200");
        // Its `jti` revoked.
        revoke(&t, "tok-1").await;
        let r = t.s.check(bearer("orders", &good)).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_TOKEN_REVOKED");
        // Its key rotated out of the JWKS: a token under the new key makes the server fetch it.
        let other = token(&with("jti", json!("tok-2")));
        // Verified, then from the cache: each time its own answer, not the first token's.
        for _ in 0..2 {
            let r = t.s.check(bearer("orders", &other)).await;
            assert_eq!(outcome(&r), "200");
            let (headers, _) = ok_headers(&r);
            assert_eq!(header(&headers, "x-claw-token-id"), Some("tok-2"));
        }
        t.jwks
            .set(vec![Reply::Body(200, jwks(&[("k2", "issuer-k2")]))]);
        let rotated = sign_jws_es(
            r#"{"alg":"ES256","typ":"JWT","kid":"k2"}"#,
            &with("jti", json!("tok-3")).to_string(),
            &p256_signer("issuer-k2"),
        );
        assert_eq!(outcome(&t.s.check(bearer("orders", &rotated)).await), "200");
        let r = t.s.check(bearer("orders", &other)).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_BEARER_UNKNOWN_KEY");
        t.s.stop().await;
    }

    /// Memory under attack: tokens minted by the issuer for many subjects (a client with an
    /// account can mint as many as it likes) fill the verified-token cache to its bound, no
    /// further, while a client that keeps using its token is served from the cache throughout.
    #[tokio::test]
    async fn many_tokens_cannot_grow_the_bearer_cache_past_its_bound() {
        const CAPACITY: usize = 32;
        let more = format!("limits:\n  bearer_cache_capacity: {CAPACITY}\n");
        let mut t = setup_more("bearer-cache-bound", "", &more).await;
        let in_use = token(&claims());
        for i in 0..400 {
            let one_off = token(&with("jti", json!(format!("one-off-{i}"))));
            assert_eq!(outcome(&t.s.check(bearer("orders", &one_off)).await), "200");
            if i % 10 == 0 {
                let r = t.s.check(bearer("orders", &in_use)).await;
                assert_eq!(outcome(&r), "200", "after {i} one-off tokens");
            }
        }
        let cache = &t.s.app.pipeline.bearer_tokens;
        assert!(cache.len() <= CAPACITY, "{} tokens held", cache.len());
        let page = t.s.app.telemetry.prometheus_text();
        let entries = format!(
            "claw_authz_cache_entries{{cache=\"bearer\"}} {}\n",
            cache.len()
        );
        assert!(page.contains(&entries), "{page}");
        // The token in use is still cached after 400 one-off ones (TinyLFU).
        let (hits, _) = bearer_cache(&t);
        assert_eq!(outcome(&t.s.check(bearer("orders", &in_use)).await), "200");
        assert_eq!(bearer_cache(&t).0, hits + 1);
        t.s.stop().await;
    }

    /// Issue 17: a JWKS endpoint has its own breaker, and `claw_authz_breaker_state` shows it.
    #[tokio::test]
    async fn a_failing_jwks_opens_its_breaker_and_the_breaker_gauge_shows_it() {
        // One failure opens a breaker here; the JWKS loads at start, so the failing fetch is the
        // refresh a token with a new `kid` asks for.
        let mut t = setup_with("bearer-jwks-breaker", "  breaker_failures: 1\n").await;
        assert_eq!(t.jwks.calls(), 1);
        t.jwks.set(vec![Reply::Status(500)]);
        let gauge = |t: &Setup| {
            let metrics = t.s.app.telemetry.prometheus_text();
            let line = format!(r#"claw_authz_breaker_state{{endpoint="jwks",issuer="{ISS}"}} "#);
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
                .unwrap_or_else(|| panic!("no JWKS breaker in:\n{metrics}"))
        };
        assert_eq!(gauge(&t), "0");
        let rotated = sign_jws_es(
            r#"{"alg":"ES256","typ":"JWT","kid":"k2"}"#,
            &claims().to_string(),
            &p256_signer("issuer-k2"),
        );
        let r = t.s.check(bearer("orders", &rotated)).await;
        assert_eq!(outcome(&r), "503 PROXY_AUTH_DEPENDENCY_UNAVAILABLE");
        assert_eq!(t.jwks.calls(), 2);
        assert_eq!(gauge(&t), "1");
        // Tokens under the cached key are still served while the JWKS breaker is open.
        let r = t.s.check(bearer("orders", &token(&claims()))).await;
        assert_eq!(outcome(&r), "200");
        let metrics = t.s.app.telemetry.prometheus_text();
        assert!(
            metrics.contains(&format!(
                r#"claw_authz_breaker_transitions_total{{endpoint="jwks",issuer="{ISS}",to="open"}} 1"#
            )),
            "{metrics}"
        );
        t.s.stop().await;
    }

    #[tokio::test]
    async fn each_bad_token_is_denied_with_its_own_code() {
        let mut t = setup("bearer-deny").await;
        let payload = claims().to_string();
        let signer = p256_signer("issuer-k1");
        let input = |h: &str| format!("{}.{}", b64(h.as_bytes()), b64(payload.as_bytes()));
        let (x, _) = p256_xy(&signer);
        let hs256 = {
            use aws_lc_rs::hmac;
            let i = input(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, x.as_bytes()),
                i.as_bytes(),
            );
            format!("{i}.{}", b64(tag.as_ref()))
        };
        let none = format!("{}.", input(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#));
        let unknown = sign_jws_es(
            r#"{"alg":"ES256","typ":"JWT","kid":"k9"}"#,
            &payload,
            &signer,
        );
        let der = {
            let good = token(&claims());
            let (signed, sig) = good.rsplit_once('.').unwrap();
            let raw = super::support::unb64(sig);
            let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
            format!("{signed}.{}", b64(der.as_bytes()))
        };
        let cases = [
            (
                token(&with("aud", json!("svc-other"))),
                "PROXY_AUTH_BEARER_AUDIENCE",
            ),
            (
                token(&with("iss", json!("https://evil.example"))),
                "PROXY_AUTH_BEARER_ISSUER",
            ),
            (
                token(&with("exp", json!(NOW - 1))),
                "PROXY_AUTH_BEARER_EXPIRED",
            ),
            (
                token(&with("iat", json!(NOW + 61))),
                "PROXY_AUTH_BEARER_NOT_YET_VALID",
            ),
            (hs256, "PROXY_AUTH_BEARER_ALGORITHM"),
            (none, "PROXY_AUTH_BEARER_ALGORITHM"),
            (unknown, "PROXY_AUTH_BEARER_UNKNOWN_KEY"),
            (der, "PROXY_AUTH_BEARER_SIGNATURE"),
        ];
        for (bad, code) in cases {
            let r = t.s.check(bearer("orders", &bad)).await;
            assert_eq!(outcome(&r), format!("401 {code}"));
        }
        // The unknown kid refetched the JWKS once (the key really is unknown).
        assert_eq!(t.jwks.calls(), 2);

        // A revoked token id, pushed through the admin endpoint, is refused at once.
        let good = token(&with("jti", json!("tok-revoked")));
        assert_eq!(outcome(&t.s.check(bearer("orders", &good)).await), "200");
        revoke(&t, "tok-revoked").await;
        let r = t.s.check(bearer("orders", &good)).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_TOKEN_REVOKED");
        t.s.stop().await;
    }

    #[tokio::test]
    async fn roles_permissions_and_trust_score_are_checked_per_route() {
        let mut t = setup("bearer-grants").await;
        let r = t.s.check(bearer("admin", &token(&claims()))).await;
        assert_eq!(outcome(&r), "403 PROXY_AUTH_MISSING_ROLE");
        assert!(
            denied(&r)
                .2
                .contains(r#""details":{"missingRoles":["admin"]}"#)
        );
        let no_permission = token(&with("permissions", json!(["orders:list"])));
        let r = t.s.check(bearer("orders", &no_permission)).await;
        assert_eq!(outcome(&r), "403 PROXY_AUTH_MISSING_PERMISSION");
        assert!(
            denied(&r)
                .2
                .contains(r#""missingPermissions":["orders:read"]"#)
        );
        let r = t.s.check(bearer("scored", &token(&claims()))).await;
        assert_eq!(outcome(&r), "403 PROXY_AUTH_TRUST_SCORE_TOO_LOW");
        let trusted = token(&with("trustScore", json!(0.95)));
        assert_eq!(outcome(&t.s.check(bearer("scored", &trusted)).await), "200");
        let admin = token(&with("roles", json!(["reader", "admin"])));
        assert_eq!(outcome(&t.s.check(bearer("admin", &admin)).await), "200");
        t.s.stop().await;
    }

    #[tokio::test]
    async fn claw_routes_refuse_bearer_tokens_bearer_routes_refuse_claw_and_any_takes_both() {
        let mut t = setup("bearer-profiles").await;
        // The default (claw) route answers a Bearer header as the reference does.
        let claw_route = check_request(
            "GET",
            "/v1/orders",
            &[("authorization", &format!("Bearer {}", token(&claims())))],
            b"",
        );
        assert_eq!(
            outcome(&t.s.check(claw_route).await),
            "401 PROXY_AUTH_INVALID_SCHEME"
        );
        let claw_request =
            |nonce: &str| t.w.signed(&t.w.alpha, "GET", "/v1/orders", b"", nonce, &[]);
        let r = t.s.check(on("orders", claw_request("p-1"))).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_PROFILE_NOT_ALLOWED");
        let r =
            t.s.check(on("orders", check_request("GET", "/v1/orders", &[], b"")))
                .await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_MISSING_TOKEN");
        assert_eq!(
            outcome(&t.s.check(on("either", claw_request("p-2"))).await),
            "200"
        );
        assert_eq!(
            outcome(&t.s.check(bearer("either", &token(&claims()))).await),
            "200"
        );
        t.s.stop().await;
    }

    /// A request carrying a proof by `signer` (P-256) over the exact method, path and body.
    fn proven(token: &str, signer: &p256::ecdsa::SigningKey, nonce: &str) -> CheckRequest {
        use p256::ecdsa::signature::Signer;
        let (ts, hash) = ((NOW_MS / 1000).to_string(), body_sha256(b"{}"));
        let canonical = canonical_string("POST", "/v1/orders", &ts, nonce, &hash);
        let sig: p256::ecdsa::Signature = signer.sign(canonical.as_bytes());
        let auth = format!("Bearer {token}");
        let proof = b64(&sig.to_bytes());
        let headers = [
            ("authorization", auth.as_str()),
            ("x-claw-timestamp", ts.as_str()),
            ("x-claw-nonce", nonce),
            ("x-claw-body-sha256", hash.as_str()),
            ("x-claw-proof", proof.as_str()),
        ];
        on(
            "orders",
            check_request("POST", "/v1/orders", &headers, b"{}"),
        )
    }

    #[tokio::test]
    async fn a_key_bound_token_needs_a_valid_proof_and_is_replay_protected() {
        let mut t = setup("bearer-cnf").await;
        let agent = p256_signer("agent-7-key");
        let (x, y) = p256_xy(&agent);
        let bound = token(&with(
            "cnf",
            json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}}),
        ));
        let plain = on(
            "orders",
            check_request(
                "POST",
                "/v1/orders",
                &[("authorization", &format!("Bearer {bound}"))],
                b"{}",
            ),
        );
        assert_eq!(
            outcome(&t.s.check(plain).await),
            "401 PROXY_AUTH_INVALID_TIMESTAMP"
        );
        let stolen = proven(&bound, &p256_signer("mallory"), "n-1");
        assert_eq!(
            outcome(&t.s.check(stolen).await),
            "401 PROXY_AUTH_INVALID_PROOF"
        );
        let request = proven(&bound, &agent, "n-2");
        assert_eq!(outcome(&t.s.check(request.clone()).await), "200");
        assert_eq!(outcome(&t.s.check(request).await), "401 PROXY_AUTH_REPLAY");
        t.s.stop().await;
    }

    #[tokio::test]
    async fn the_conformance_runner_still_passes_every_scenario() {
        let summary =
            super::support::conformance::run(&super::support::conformance::vectors_path()).await;
        assert_eq!(summary.failed, 0, "{summary:?}");
        assert_eq!(summary.passed + summary.skipped, summary.total);
    }

    /// Issue 18, finding 9: claims that would split a header (CR/LF) or forge a list item (a
    /// comma) never reach the upstream: the token is refused.
    #[tokio::test]
    async fn bearer_claims_that_would_split_or_forge_headers_are_refused() {
        let mut t = setup("bearer-header-safe").await;
        let bad = [
            ("sub", json!("agent-7\r\nx-claw-agent-did: did:cdi:evil")),
            ("jti", json!("tok\n1")),
            ("roles", json!(["reader", "admin,reader"])),
            ("permissions", json!(["orders:read\u{0}"])),
        ];
        for (field, value) in bad {
            let r =
                t.s.check(bearer("orders", &token(&with(field, value))))
                    .await;
            assert_eq!(outcome(&r), "401 PROXY_AUTH_BEARER_CLAIMS", "{field}");
        }
        let r = t.s.check(bearer("orders", &token(&claims()))).await;
        assert_eq!(outcome(&r), "200");
        t.s.stop().await;
    }

    /// Issue 18, finding 1: a 60 KiB bearer token (a JSON object of 6,000 members) is refused for
    /// its size before anything parses it.
    #[tokio::test]
    async fn a_60_kib_bearer_token_is_refused_before_parsing() {
        let mut t = setup("bearer-60k").await;
        let members: Vec<String> = (0..6_000).map(|i| format!("\"m{i}\":0")).collect();
        let payload = format!("{{{}}}", members.join(","));
        let huge = sign_jws_es(
            r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#,
            &payload,
            &p256_signer("issuer-k1"),
        );
        assert!(huge.len() > 60 * 1024, "{}", huge.len());
        let r = t.s.check(bearer("orders", &huge)).await;
        assert_eq!(outcome(&r), "401 PROXY_AUTH_BEARER_MALFORMED");
        assert!(
            denied(&r).2.contains("Bearer token is too large"),
            "refused for its size, not for its content: {}",
            denied(&r).2
        );
        t.s.stop().await;
    }

    /// The stage labels of the table at the top of `src/pipeline/mod.rs` that `profile`'s
    /// column does not mark `never`, in the table's order.
    fn table_rows(profile: usize) -> Vec<String> {
        let source = include_str!("../src/pipeline/mod.rs");
        let rows: Vec<Vec<&str>> = source
            .lines()
            .filter_map(|l| l.strip_prefix("//! | "))
            .map(|l| l.trim_end_matches(" |").split(" | ").collect::<Vec<_>>())
            .filter(|cells| cells[0].parse::<u32>().is_ok())
            .collect();
        assert_eq!(rows.len(), 11, "one row per stage");
        rows.iter()
            .filter(|cells| cells[2 + profile] != "never")
            .map(|cells| cells[1].trim_matches('`').to_owned())
            .collect()
    }

    fn trail(trail: &claw_authz::pipeline::Trail) -> Vec<String> {
        trail
            .stages()
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    }

    /// Issue 17: a check that passes every row of its profile enters exactly the stages the
    /// table lists for that profile, in the table's order.
    #[tokio::test]
    async fn every_profile_runs_the_rows_of_the_table() {
        use claw_authz::pipeline::Decision;
        use claw_authz::request::RequestView;
        let t = setup("pipeline-table").await;
        let pipeline = &t.s.app.pipeline;

        let claw = on(
            "full_claw",
            t.w.alpha.message(NOW_MS, "n-table", "access-1"),
        );
        let (decision, stages) = pipeline.check_traced(&RequestView::from_check(claw)).await;
        assert!(matches!(decision, Decision::Allow { .. }), "{decision:?}");
        assert_eq!(trail(&stages), table_rows(0));
        assert_eq!(
            t.w.validate.calls(),
            1,
            "the access row called the registry"
        );

        let agent = p256_signer("agent-7-key");
        let (x, y) = p256_xy(&agent);
        let cnf = json!({"jwk": {"kty": "EC", "crv": "P-256", "x": x, "y": y}});
        let bound = on(
            "full_bearer",
            proven(&token(&with("cnf", cnf)), &agent, "n-table"),
        );
        let (decision, stages) = pipeline.check_traced(&RequestView::from_check(bound)).await;
        assert!(matches!(decision, Decision::Allow { .. }), "{decision:?}");
        assert_eq!(trail(&stages), table_rows(1));

        let request = claw_authz::httpsig::Request {
            method: "GET".into(),
            scheme: "https".into(),
            authority: "api.example.com".into(),
            target: "/v1/table".into(),
            fields: Vec::new(),
        };
        let spec = claw_authz::httpsig::SignatureSpec {
            label: "sig1".into(),
            components: ["@method", "@authority", "@path"]
                .map(String::from)
                .to_vec(),
            created: i64::try_from(NOW_MS / 1000).unwrap(),
            nonce: Some("n-table".into()),
            ..Default::default()
        };
        let (input, signature) = signature_key().sign_message(&request, &spec).unwrap();
        let headers = [
            ("host", "api.example.com"),
            ("signature-input", input.as_str()),
            ("signature", signature.as_str()),
        ];
        let signed = on(
            "full_httpsig",
            claw_authz::dev::check::check_request("GET", "/v1/table", &headers, b""),
        );
        let (decision, stages) = pipeline
            .check_traced(&RequestView::from_check(signed))
            .await;
        assert!(matches!(decision, Decision::Allow { .. }), "{decision:?}");
        assert_eq!(trail(&stages), table_rows(2));
    }
}
