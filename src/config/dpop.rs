//! `dpop`: how DPoP proofs (RFC 9449) on the bearer profile are checked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::fields::Reader;
use crate::protocol::dpop::nonce::NonceKey;

/// The `dpop` section.
#[derive(Debug, Clone)]
pub struct DpopConfig {
    /// How far a proof's `iat` may be from now, either way.
    pub iat_window: Duration,
    /// Proofs must carry a nonce this service issued (`DPoP-Nonce`, RFC 9449 §8).
    pub require_nonce: bool,
    /// Issues and checks those nonces (from `nonce_secret_file`, shared by every replica, or
    /// random per process).
    pub nonces: Arc<NonceKey>,
    /// The scheme and authority of `htu` as the client used them, when a proxy in front
    /// rewrites them (default: the request's, as Envoy saw it).
    pub authority: Option<String>,
    pub scheme: Option<String>,
}

impl DpopConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> DpopConfig {
        let r = r.section("dpop");
        let iat_window = r.secs("iat_window_secs", 60, 1, 3_600);
        let require_nonce = r.bool("require_nonce", false);
        let lifetime = r.secs("nonce_lifetime_secs", 300, 10, 86_400).as_secs();
        let secret_file = r.opt_string("nonce_secret_file").map(PathBuf::from);
        let nonces = match &secret_file {
            None => NonceKey::random(lifetime),
            Some(f) => match std::fs::read(f) {
                Ok(secret) if secret.trim_ascii().len() >= 32 => {
                    NonceKey::new(secret.trim_ascii(), lifetime)
                }
                Ok(_) => {
                    r.error(
                        "nonce_secret_file",
                        &format!("{} must hold at least 32 bytes", f.display()),
                    );
                    NonceKey::random(lifetime)
                }
                Err(e) => {
                    r.error(
                        "nonce_secret_file",
                        &format!("cannot read {}: {e}", f.display()),
                    );
                    NonceKey::random(lifetime)
                }
            },
        };
        let authority = r.opt_string("authority");
        if authority
            .as_deref()
            .is_some_and(|a| !crate::stage::bearer::is_authority(a))
        {
            r.error("authority", "must be host[:port]");
        }
        let scheme = r.opt_string("scheme");
        if scheme
            .as_deref()
            .is_some_and(|s| s != "http" && s != "https")
        {
            r.error("scheme", "must be http or https");
        }
        DpopConfig {
            iat_window,
            require_nonce,
            nonces: Arc::new(nonces),
            authority,
            scheme,
        }
    }
}
