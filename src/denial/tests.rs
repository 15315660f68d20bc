//! Unit tests of `src/denial/mod.rs`.

use super::*;
use tonic::Code;

/// One of every variant.
fn every() -> Vec<Denial> {
    use Denial::*;
    let did = || "did:cdi:registry.example.com:agent:01KDVA7EC0AGENTA0000000001".to_owned();
    vec![
        MissingToken,
        InvalidScheme,
        KeysUnavailable(None),
        KeysUnavailable(Some(Detail::Status(500))),
        KeysPayloadInvalid,
        KeysInvalid,
        InvalidAit("r".into()),
        MissingTimestamp,
        InvalidTimestamp,
        TimestampSkew { max_skew_secs: 300 },
        InvalidNonce("r".into()),
        InvalidProof("r".into()),
        Replay,
        NonceStoreUnavailable,
        AgentRevoked,
        AitRevoked,
        TrustUnconfirmed { agent_did: did() },
        CrlUnavailable,
        UnknownAgent { agent_did: did() },
        AccessTokenRequired,
        AccessTokenInvalid,
        AccessValidationUnavailable(Detail::Reason("fetch failed".into())),
        BodyIncomplete,
        BodyNotForwarded,
        InvalidPath,
        UnknownPolicy,
        Bearer(BearerError::Issuer),
        BearerKeysUnavailable,
        ProfileNotAllowed,
        TokenRevoked,
        MissingRoles(vec!["admin".into()]),
        MissingPermissions(vec!["write".into()]),
        TrustScoreTooLow { required: 0.5 },
        RateLimited {
            retry_after_secs: 1,
        },
        ClientRateLimited {
            retry_after_secs: 1,
        },
        RateLimitUnavailable,
    ]
}

#[test]
fn every_status_has_its_grpc_code() {
    for denial in every() {
        let spec = denial.spec();
        let grpc = match spec.status {
            400 | 413 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            500 => Code::Internal,
            other => panic!("{denial:?}: unexpected status {other}"),
        };
        assert_eq!(spec.grpc, grpc, "{denial:?}");
        assert!(spec.code.starts_with("PROXY_"), "{denial:?}");
        assert_eq!(
            spec.code == UNAVAILABLE,
            spec.status == 503,
            "{denial:?}: every 503 and only a 503 is a dependency failure"
        );
    }
}
