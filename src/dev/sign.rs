//! The client side of the protocol: what an agent sends and what a registry mints.
//!
//! Used by the demo's dev registry and scripted agents, by `claw-authz sign`, and by tests. The
//! path is normalized exactly as the verifier will normalize Envoy's `:path`, so a signature
//! made here verifies there.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;

use crate::protocol::b64;
use crate::protocol::ids::encode_ulid;
use crate::protocol::path::path_with_query;
use crate::protocol::pop::{body_sha256, canonical_string};

/// The four proof headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub body_sha256: String,
    pub proof: String,
}

impl ProofHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("x-claw-timestamp", &self.timestamp),
            ("x-claw-nonce", &self.nonce),
            ("x-claw-body-sha256", &self.body_sha256),
            ("x-claw-proof", &self.proof),
        ]
    }
}

/// 16 random bytes as base64url, the shape the reference's clients send.
pub fn random_nonce() -> String {
    b64::encode(uuid::Uuid::new_v4().as_bytes())
}

pub fn random_ulid(ms: u64) -> String {
    encode_ulid(ms, uuid::Uuid::new_v4().as_u128())
}

/// An Ed25519 key from a 32-byte seed.
#[derive(Clone)]
pub struct Ed25519Signer(SigningKey);

impl Ed25519Signer {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Ed25519Signer(SigningKey::from_bytes(&seed))
    }

    pub(crate) fn from_seed_b64(seed: &str) -> Result<Self, String> {
        b64::decode_array::<32>(seed)
            .map(Self::from_seed)
            .map_err(|_| "the seed must be 32 bytes of base64url".to_owned())
    }

    pub fn random() -> Self {
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::from_seed(seed)
    }

    pub fn public_b64(&self) -> String {
        b64::encode(self.0.verifying_key().as_bytes())
    }

    pub(crate) fn seed_b64(&self) -> String {
        b64::encode(&self.0.to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Proof headers for a request; `raw_path` is normalized as the verifier will see it.
    pub fn sign_request(
        &self,
        method: &str,
        raw_path: &str,
        body: &[u8],
        timestamp_secs: u64,
        nonce: &str,
    ) -> ProofHeaders {
        proof_headers(
            |m| self.sign(m).to_vec(),
            method,
            raw_path,
            body,
            timestamp_secs,
            nonce,
        )
    }
}

/// Proof headers signed by `sign`; `raw_path` is normalized as the verifier will see it.
fn proof_headers(
    sign: impl Fn(&[u8]) -> Vec<u8>,
    method: &str,
    raw_path: &str,
    body: &[u8],
    timestamp_secs: u64,
    nonce: &str,
) -> ProofHeaders {
    let path = path_with_query(raw_path).unwrap_or_else(|_| raw_path.to_owned());
    let timestamp = timestamp_secs.to_string();
    let hash = body_sha256(body);
    let canonical = canonical_string(method, &path, &timestamp, nonce, &hash);
    ProofHeaders {
        proof: b64::encode(&sign(canonical.as_bytes())),
        timestamp,
        nonce: nonce.to_owned(),
        body_sha256: hash,
    }
}

/// A P-256 agent key (ES256 proofs: `r || s`, 64 bytes).
pub struct P256Signer(EcdsaKeyPair);

impl P256Signer {
    pub fn random() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .expect("the system random source works");
        P256Signer(pair)
    }

    /// `cnf.jwk` for an AIT: `{kty: EC, crv: P-256, x, y}`.
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.0.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64::encode(&point[1..33]), "y": b64::encode(&point[33..65])})
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }
}

/// An agent's key of either algorithm.
pub enum AgentSigner {
    Ed25519(Ed25519Signer),
    P256(P256Signer),
}

impl AgentSigner {
    /// `cnf.jwk` for an AIT.
    pub fn jwk(&self) -> serde_json::Value {
        match self {
            AgentSigner::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": k.public_b64()})
            }
            AgentSigner::P256(k) => k.jwk(),
        }
    }

    pub fn sign_request(
        &self,
        method: &str,
        raw_path: &str,
        body: &[u8],
        timestamp_secs: u64,
        nonce: &str,
    ) -> ProofHeaders {
        let sign = |m: &[u8]| match self {
            AgentSigner::Ed25519(k) => k.sign(m).to_vec(),
            AgentSigner::P256(k) => k.sign(m),
        };
        proof_headers(sign, method, raw_path, body, timestamp_secs, nonce)
    }
}

impl AgentSigner {
    /// The public key, as the verifier will parse it.
    pub fn public_key(&self) -> crate::crypto::PublicKey {
        crate::httpsig::keys::from_jwk(&self.jwk()).expect("a freshly generated key is valid")
    }

    /// RFC 9421 signature fields (`Signature-Input`, `Signature`) over `request`, with this
    /// key's thumbprint as `keyid` when `spec.keyid` is empty.
    pub fn sign_message(
        &self,
        request: &crate::httpsig::Request,
        spec: &crate::httpsig::SignatureSpec,
    ) -> Result<(String, String), crate::httpsig::Error> {
        let mut spec = spec.clone();
        if spec.keyid.is_empty() {
            spec.keyid = crate::httpsig::keys::thumbprint(&self.public_key());
        }
        crate::httpsig::sign(request, &spec, |base| match self {
            AgentSigner::Ed25519(k) => k.sign(base).to_vec(),
            AgentSigner::P256(k) => k.sign(base),
        })
    }
}

/// An RSA key (2048 bits) of an OAuth authorization server or a DPoP client: `RS256` or
/// `PS256`.
pub struct RsaSigner {
    pair: aws_lc_rs::rsa::KeyPair,
    pss: bool,
}

impl RsaSigner {
    /// A fresh key; `pss` picks `PS256` over `RS256`.
    pub fn random(pss: bool) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("the system random source works");
        RsaSigner { pair, pss }
    }

    pub fn alg(&self) -> &'static str {
        if self.pss { "PS256" } else { "RS256" }
    }

    /// `{kty: RSA, n, e}`.
    pub fn jwk(&self) -> serde_json::Value {
        let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(self.pair.public_key());
        json!({"kty": "RSA", "n": b64::encode(&c.n), "e": b64::encode(&c.e)})
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256};
        let padding = if self.pss {
            &RSA_PSS_SHA256
        } else {
            &RSA_PKCS1_SHA256
        };
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(padding, &SystemRandom::new(), message, &mut signature)
            .expect("RSA signing works");
        signature
    }
}

/// A compact JWS of `header` and `claims`, signed by `sign`.
pub fn compact_jws(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64::encode(&signature))
}

/// A `DPoP` proof (RFC 9449 §4.2) by the key `jwk` under `alg`, with these claims (`jti`,
/// `htm`, `htu`, `iat`, and `ath`, `nonce` when the request needs them).
pub fn dpop_proof(
    jwk: &serde_json::Value,
    alg: &str,
    claims: &serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let header = json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk});
    compact_jws(&header, claims, sign)
}

/// A registry's signing key: mints AITs and CRLs and publishes its keys document.
#[derive(Clone)]
pub struct RegistrySigner {
    pub kid: String,
    pub issuer: String,
    key: Ed25519Signer,
}

/// What an AIT says about an agent.
#[derive(Debug, Clone)]
pub struct AitSpec {
    pub agent_ulid: String,
    pub owner_ulid: String,
    pub name: String,
    pub public_key_b64: String,
    pub jti: String,
    pub issued_at: u64,
    pub ttl_secs: u64,
}

impl RegistrySigner {
    pub fn new(kid: &str, issuer: &str, key: Ed25519Signer) -> Self {
        RegistrySigner {
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
            key,
        }
    }

    /// The DID authority: the issuer's lowercased host.
    pub fn authority(&self) -> String {
        crate::protocol::ids::issuer_authority(&self.issuer).unwrap_or_default()
    }

    pub fn agent_did(&self, ulid: &str) -> String {
        format!("did:cdi:{}:agent:{ulid}", self.authority())
    }

    pub fn human_did(&self, ulid: &str) -> String {
        format!("did:cdi:{}:human:{ulid}", self.authority())
    }

    pub fn keys_document(&self) -> String {
        json!({"keys": [{
            "kid": self.kid, "alg": "EdDSA", "crv": "Ed25519",
            "x": self.key.public_b64(), "status": "active",
        }]})
        .to_string()
    }

    /// The key as a standard JWKS (`kty: OKP`), the form other verifiers such as Envoy's
    /// `jwt_authn` read.
    pub fn jwks(&self) -> String {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": self.key.public_b64(),
        }]})
        .to_string()
    }

    /// A plain EdDSA JWT (`typ: JWT`) over `claims`.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        self.sign_jws("JWT", claims)
    }

    fn sign_jws(&self, typ: &str, claims: &serde_json::Value) -> String {
        let header = json!({"alg": "EdDSA", "typ": typ, "kid": self.kid}).to_string();
        let input = format!(
            "{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(&sig))
    }

    pub fn mint_ait(&self, spec: &AitSpec) -> String {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": spec.public_key_b64});
        self.mint_ait_with_key(spec, jwk)
    }

    /// An AIT whose `cnf.jwk` is `jwk` (`spec.public_key_b64` is ignored).
    pub(crate) fn mint_ait_with_key(&self, spec: &AitSpec, jwk: serde_json::Value) -> String {
        self.sign_jws(
            "AIT",
            &json!({
                "iss": self.issuer,
                "sub": self.agent_did(&spec.agent_ulid),
                "ownerDid": self.human_did(&spec.owner_ulid),
                "name": spec.name,
                "framework": "generic",
                "cnf": {"jwk": jwk},
                "iat": spec.issued_at,
                "nbf": spec.issued_at,
                "exp": spec.issued_at + spec.ttl_secs,
                "jti": spec.jti,
            }),
        )
    }

    /// A CRL revoking `(agent DID, AIT jti)` pairs; the registry sends one with every list.
    pub fn sign_crl(&self, revoked: &[(String, String)], issued_at: u64, jti: &str) -> String {
        let revocations: Vec<_> = revoked
            .iter()
            .map(|(did, ait_jti)| json!({"jti": ait_jti, "agentDid": did, "revokedAt": issued_at}))
            .collect();
        self.sign_jws(
            "CRL",
            &json!({
                "iss": self.issuer, "jti": jti, "iat": issued_at,
                "exp": issued_at + 390, "revocations": revocations,
            }),
        )
    }
}
