//! The bearer scenarios' issuer: its key, its JWKS on loopback, the token and the floor's key.

use super::*;

/// The bearer scenarios' token issuer: an ES256 key, its JWKS served on loopback, and one token.
pub struct Issuer {
    signer: P256Signer,
    pub jwks_url: String,
    pub token: String,
}

pub const BEARER_ISSUER: &str = "https://issuer.bench.example";
pub const BEARER_AUDIENCE: &str = "bench-api";

impl Issuer {
    pub(super) async fn start(now: u64) -> Result<Issuer, String> {
        let signer = P256Signer::random();
        let mut jwk = signer.jwk();
        jwk["kid"] = "bench-1".into();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let jwks_url = format!(
            "http://{}/jwks.json",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || std::future::ready(jwks.clone())),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let header = r#"{"alg":"ES256","typ":"JWT","kid":"bench-1"}"#;
        let claims = serde_json::json!({
            "iss": BEARER_ISSUER, "aud": BEARER_AUDIENCE, "sub": "agent-bench",
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 86_400,
            "roles": ["reader"], "permissions": ["orders:read"],
        });
        let input = format!(
            "{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let token = format!("{input}.{}", b64::encode(&signer.sign(input.as_bytes())));
        Ok(Issuer {
            signer,
            jwks_url,
            token,
        })
    }

    pub(super) fn template(&self) -> Arc<CheckRequest> {
        let auth = format!("Bearer {}", self.token);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("x-request-id", "5f0c8a53-3f1e-4a4e-9d36-bench0request"),
        ];
        let mut request = check_request("POST", PATH, &headers, BODY);
        // The route's policy, chosen by Envoy's per-route `context_extensions`.
        if let Some(attributes) = request.attributes.as_mut() {
            let policy = ("claw_policy".to_owned(), "orders".to_owned());
            attributes.context_extensions.extend([policy]);
        }
        Arc::new(request)
    }

    /// `x.y` of the issuer's key, base64url.
    pub fn key_b64(&self) -> String {
        let jwk = self.signer.jwk();
        format!(
            "{}.{}",
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        )
    }

    /// The key, the token's signing input and its signature.
    pub(super) fn verification(&self) -> (PublicKey, String, Vec<u8>) {
        let key = floor_p256_key(&self.key_b64()).expect("a generated key is valid");
        let key = PublicKey::P256(key);
        let (input, signature) = self.token.rsplit_once('.').unwrap_or_default();
        let signature = b64::decode(signature).unwrap_or_default();
        (key, input.to_owned(), signature)
    }
}

/// The P-256 key of `x.y` (base64url coordinates).
pub fn floor_p256_key(xy: &str) -> Result<claw_authz::crypto::P256Key, String> {
    let (x, y) = xy.split_once('.').ok_or("x.y")?;
    let x = b64::decode_array::<32>(x).map_err(|_| "x: 32 bytes of base64url")?;
    let y = b64::decode_array::<32>(y).map_err(|_| "y: 32 bytes of base64url")?;
    claw_authz::crypto::P256Key::from_coordinates(&x, &y).map_err(|e| format!("{e:?}"))
}
