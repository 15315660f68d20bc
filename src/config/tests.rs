use super::*;
use crate::cache::crl::StaleBehavior;
use crate::policy::reference_rules;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

#[test]
fn defaults_and_derived_issuer() {
    let c = Config::load(
        "registry:\n  url: https://Registry.Example.com:443/\n",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.registry.issuer, "https://registry.example.com");
    assert_eq!(
        c.registry.keys_url,
        "https://Registry.Example.com:443/.well-known/claw-keys.json"
    );
    assert_eq!(c.crl.stale_behavior, StaleBehavior::FailOpen);
    assert_eq!(c.routes, reference_rules());
    assert_eq!(c.headers.remove, Defaults::REMOVE_HEADERS);
}

#[test]
fn env_overrides_win() {
    let c = Config::load(
        "registry:\n  url: https://a.example\ncrl:\n  max_age_secs: 60\n",
        &env(&[
            ("CLAW_AUTHZ_CRL__MAX_AGE_SECS", "120"),
            ("CLAW_AUTHZ_CRL__STALE_BEHAVIOR", "fail-closed"),
        ]),
    )
    .unwrap();
    assert_eq!(c.crl.max_age, std::time::Duration::from_secs(120));
    assert_eq!(c.crl.stale_behavior, StaleBehavior::FailClosed);
}

#[test]
fn every_problem_is_listed() {
    let errors = Config::load(
        "registry:\n  ulr: x\ncrl:\n  max_age_secs: -3\n  stale_behavior: maybe\nlisten:\n  grpc: nowhere\nroutes:\n  - {path: nope}\n",
        &env(&[("CLAW_AUTHZ_PROOF__MAX_SKEW_SECS", "lots")]),
    )
    .unwrap_err();
    let text = errors.join("\n");
    for needle in [
        "registry.ulr: unknown setting",
        "crl.max_age_secs: must be an integer",
        "crl.stale_behavior: must be one of fail-open, fail-closed, got maybe",
        "listen.grpc: must be an ip:port address or unix:/absolute/path",
        "routes[0]: needs exactly one of",
        "proof.max_skew_secs: must be an integer",
        "registry.url: is required",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(errors.len(), 7, "{text}");
}

#[test]
fn an_exposed_events_endpoint_needs_a_token_and_redis_stores_need_a_url() {
    let errors = Config::load(
        "registry:\n  url: https://a.example\nlisten:\n  admin: 0.0.0.0:9901\nnonce:\n  store: redis\n",
        &env(&[]),
    )
    .unwrap_err();
    let text = errors.join("\n");
    assert!(
        text.contains("events.token_file: is required when listen.admin is not a loopback address"),
        "{text}"
    );
    assert!(
        text.contains("nonce.store: is redis, so redis.url is required"),
        "{text}"
    );
    assert_eq!(errors.len(), 2, "{text}");
    let c = Config::load(
        "registry:\n  url: https://a.example\nlisten:\n  admin: 0.0.0.0:9901\nevents:\n  admin_endpoint: false\n",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.nonce.store, NonceStoreKind::File);
    assert!(c.events.consume && c.events.stream == "claw:events");
}

#[test]
fn bearer_issuers_and_policy_grants_are_read_and_checked() {
    let c = Config::load(
        "registry:\n  url: https://a.example\nbearer:\n  issuers:\n    - {issuer: https://auth.example, audience: svc, jwks_url: https://auth.example/jwks}\npolicies:\n  p: {profile: bearer, require_roles: [r], require_permissions: [x, y], min_trust_score: 0.5}\n",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.bearer[0].max_iat_skew, std::time::Duration::from_secs(60));
    let p = &c.policies["p"];
    assert_eq!(p.profile, crate::policy::Profile::Bearer);
    assert_eq!((p.require_roles.len(), p.require_permissions.len()), (1, 2));
    assert_eq!(p.min_trust_score, Some(0.5));
    let errors = Config::load(
        "registry:\n  url: https://a.example\nbearer:\n  issuers:\n    - {issuer: x, audience: svc, jwks_url: ftp://x, colour: red}\npolicies:\n  p: {profile: jwt, require_roles: admin}\n",
        &env(&[]),
    )
    .unwrap_err();
    let text = errors.join("\n");
    for needle in [
        "bearer.issuers[0]: unknown key colour",
        "bearer.issuers[0]: needs issuer, an http(s) jwks_url",
        "policies.p.profile: must be claw, bearer, httpsig or any",
        "policies.p.require_roles: must be a list of strings",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(errors.len(), 4, "{text}");
}

#[test]
fn resource_routes_and_dpop_are_read_and_checked() {
    let c = Config::load(
        "registry:\n  url: https://a.example\nbearer:\n  issuers:\n    - {issuer: https://as.example, jwks_url: https://as.example/jwks}\n\
         dpop: {iat_window_secs: 30, require_nonce: true, authority: mcp.example.com}\n\
         policies:\n  mcp: {profile: bearer, resource: https://mcp.example.com/mcp, authorization_servers: [https://as.example], scopes_supported: [tools, admin], required_scopes: [tools], require_dpop: true}\n",
        &env(&[]),
    )
    .unwrap();
    let p = &c.policies["mcp"];
    assert_eq!(p.resource.as_deref(), Some("https://mcp.example.com/mcp"));
    assert_eq!(p.required_scopes, ["tools"]);
    assert!(p.require_dpop);
    assert_eq!(c.bearer[0].audience, None);
    assert_eq!(c.dpop.iat_window.as_secs(), 30);
    assert!(c.dpop.require_nonce);
    let errors = Config::load(
        "registry:\n  url: https://a.example\nbearer:\n  issuers:\n    - {issuer: https://as.example, jwks_url: https://as.example/jwks}\n\
         dpop: {scheme: ftp, nonce_secret_file: /nonexistent/secret}\n\
         policies:\n  open: {profile: any}\n  mixed: {profile: any, required_scopes: [a]}\n  mcp: {profile: bearer, resource: \"HTTPS://MCP.example.com/mcp#x\", scopes_supported: [\"a b\"]}\n  meta: {profile: bearer, resource: https://x.example/, require_dpop: yes}\n",
        &env(&[]),
    )
    .unwrap_err();
    let text = errors.join("\n");
    for needle in [
        "dpop.scheme: must be http or https",
        "dpop.nonce_secret_file: cannot read /nonexistent/secret",
        "policies.open: accepts bearer tokens but has no resource, and issuer https://as.example has no audience",
        "policies.mcp.resource: must be the canonical http(s) URI",
        "policies.mcp.scopes_supported: must be a list of strings without spaces",
        "policies.meta.authorization_servers: is required with resource",
        "policies.meta.require_dpop: must be true or false",
        "policies.mixed: resource, require_dpop, required_scopes and tool_scopes need profile: bearer",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn plain_http_registries_and_jwks_need_insecure_http() {
    let plain = "registry:\n  url: http://registry.internal\n  crl_url: https://crl.example/v1/crl\n  \
                 keys_url: http://keys.internal/keys\n\
                 bearer:\n  issuers:\n    - {issuer: https://auth.example, audience: svc, jwks_url: http://auth.example/jwks}\n";
    let errors = Config::load(plain, &env(&[])).unwrap_err();
    let refused: Vec<&str> = errors
        .iter()
        .filter(|e| e.contains("is plain http"))
        .map(|e| e.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        refused,
        [
            "registry.url",
            "registry.keys_url",
            "bearer.issuers[0].jwks_url"
        ],
        "{errors:?}"
    );
    let allowed = plain
        .replace("  crl_url:", "  insecure_http: true\n  crl_url:")
        .replace("/jwks}", "/jwks, insecure_http: true}");
    let c = Config::load(&allowed, &env(&[])).unwrap();
    assert_eq!(
        c.registry.validate_url,
        "http://registry.internal/v1/agents/auth/validate"
    );
}

/// Issue 18, finding 11: what `check-config` prints never carries the Redis password, and the
/// nonce margin cannot be 0 (a replay at the last millisecond of the window).
#[test]
fn check_config_prints_no_secret_and_the_nonce_margin_is_at_least_a_second() {
    let yaml = "registry:\n  url: https://a.example\nredis:\n  url: redis://claw:hunter2-secret@redis:6379/0\n";
    let c = Config::load(yaml, &env(&[])).unwrap();
    let printed = serde_yaml_ng::to_string(&c.effective).unwrap();
    assert!(!printed.contains("hunter2-secret"), "{printed}");
    assert!(
        printed.contains("redis://claw:REDACTED@redis:6379/0"),
        "{printed}"
    );
    assert_eq!(
        c.redis.url.as_deref(),
        Some("redis://claw:hunter2-secret@redis:6379/0")
    );

    let zero = "registry:\n  url: https://a.example\nnonce:\n  margin_secs: 0\n";
    let errors = Config::load(zero, &env(&[])).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with("nonce.margin_secs:")),
        "{errors:?}"
    );
}

#[test]
fn a_cluster_prefix_cannot_break_the_hash_tags() {
    let yaml = "registry:\n  url: https://a.example\nredis:\n  url: redis://r:6379/0\n  cluster: true\n  prefix: \"app{x:\"\n";
    let errors = Config::load(yaml, &env(&[])).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with("redis.prefix:")),
        "{errors:?}"
    );
    let fine = yaml.replace("app{x:", "app:");
    assert!(Config::load(&fine, &env(&[])).is_ok());
}

#[test]
fn the_grpc_listener_takes_a_unix_socket_path_without_tls() {
    let c = Config::load(
        "registry:\n  url: https://a.example\nlisten:\n  grpc: unix:/run/claw/grpc.sock\n",
        &env(&[]),
    )
    .unwrap();
    let expected = super::ListenAddr::Unix("/run/claw/grpc.sock".into());
    assert_eq!(c.listen.grpc, expected);
    assert_eq!(c.listen.grpc.to_string(), "unix:/run/claw/grpc.sock");
    let cert = std::env::temp_dir().join("claw-config-test-cert.pem");
    std::fs::write(&cert, "not read at load").unwrap();
    let errors = Config::load(
        "registry:\n  url: https://a.example\nlisten:\n  grpc: unix:run/relative.sock\n",
        &env(&[]),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        [
            "listen.grpc: must be an ip:port address or unix:/absolute/path, got unix:run/relative.sock"
        ]
    );
    let errors = Config::load(
        &format!(
            "registry:\n  url: https://a.example\nlisten:\n  grpc: unix:/run/claw/grpc.sock\ntls:\n  cert_file: {0}\n  key_file: {0}\n",
            cert.display()
        ),
        &env(&[]),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        ["tls.cert_file: applies to a TCP listen.grpc, not a unix: socket"]
    );
}

#[test]
fn webhook_urls_are_printed_without_their_secrets() {
    let dir = std::env::temp_dir().join(format!("claw-webhook-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("s");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let yaml = format!(
        "registry:\n  url: https://a.example\nsecurity_events:\n  webhooks:\n    - {{url: \"https://user:pw@soc.example/hook?token=t0p\", secret_file: {}}}\n",
        secret.display()
    );
    let c = Config::load(&yaml, &env(&[])).unwrap();
    assert_eq!(
        c.security.webhooks[0].url,
        "https://user:pw@soc.example/hook?token=t0p"
    );
    assert_eq!(c.security.webhooks[0].secret.len(), 24);
    let printed = serde_yaml_ng::to_string(&c.effective).unwrap();
    assert!(printed.contains("https://soc.example/hook"), "{printed}");
    assert!(!printed.contains("t0p") && !printed.contains("pw@") && !printed.contains("whsec_"));
    let bad = yaml.replace(&secret.display().to_string(), "/nonexistent");
    let errors = Config::load(&bad, &env(&[])).unwrap_err().join("\n");
    assert!(
        errors.contains("security_events.webhooks[0].secret_file: cannot read /nonexistent"),
        "{errors}"
    );
}
