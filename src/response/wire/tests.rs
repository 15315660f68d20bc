use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use proptest::prelude::*;
use prost::Message;

use super::*;

/// Each header as (name, value, append action), as prost decodes it (the deprecated `append`
/// checked absent).
#[allow(deprecated)]
fn headers(options: &[HeaderValueOption]) -> Vec<(String, String, i32)> {
    options
        .iter()
        .map(|o| {
            assert_eq!(o.append, None);
            assert!(!o.keep_empty_value);
            let h = o.header.as_ref().expect("a header");
            assert!(h.raw_value.is_empty());
            (h.key.clone(), h.value.clone(), o.append_action)
        })
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String, i32)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned(), OVERWRITE as i32))
        .collect()
}

/// Decodes `parts`' bytes with prost and checks every field against `parts` (the deprecated
/// `OkHttpResponse.dynamic_metadata` checked absent).
#[allow(deprecated)]
fn round_trip(parts: &Parts<'_>) {
    let bytes = parts.encode();
    let decoded = CheckResponse::decode(bytes.as_slice()).expect("prost decodes it");
    let status = decoded.status.expect("a status, even when OK");
    assert_eq!(
        (status.code, status.message.as_str()),
        (parts.code, parts.message)
    );
    assert!(status.details.is_empty());
    match (&parts.http, decoded.http_response.expect("an HTTP part")) {
        (Http::Ok { set, remove }, HttpResponse::OkResponse(ok)) => {
            assert_eq!(headers(&ok.headers), owned(set));
            assert_eq!(ok.headers_to_remove, *remove);
            assert_eq!(ok.dynamic_metadata, None);
            assert!(ok.response_headers_to_add.is_empty());
        }
        (
            Http::Denied {
                status,
                headers: sent,
                body,
            },
            HttpResponse::DeniedResponse(denied),
        ) => {
            assert_eq!(denied.status.map(|s| s.code), Some(i32::from(*status)));
            assert_eq!(headers(&denied.headers), owned(sent));
            assert_eq!(denied.body, *body);
        }
        (_, other) => panic!("the wrong HTTP part: {other:?}"),
    }
    let metadata = decoded.dynamic_metadata.expect("metadata");
    assert_eq!(metadata.fields.len(), parts.metadata.len());
    for (key, value) in parts.metadata {
        let kind = metadata.fields[*key].kind.clone();
        assert_eq!(kind, Some(Kind::StringValue((*value).to_owned())), "{key}");
    }
}

#[test]
fn an_allow_answer_decodes_to_what_was_written() {
    round_trip(&Parts {
        code: 0,
        message: "",
        http: Http::Ok {
            set: &[
                ("x-claw-agent-did", "did:claw:agent:01HZ"),
                ("x-claw-issuer", ""),
            ],
            remove: &["authorization", "x-claw-proof", ""],
        },
        metadata: &[("policy", "default"), ("decision", "allow"), ("empty", "")],
    });
}

#[test]
fn a_denial_decodes_to_what_was_written_with_lengths_past_two_varint_bytes() {
    let body = "x".repeat(20_000);
    round_trip(&Parts {
        code: 16,
        message: "PROXY_AUTH_INVALID_PROOF",
        http: Http::Denied {
            status: 401,
            headers: &[
                ("content-type", "application/json"),
                ("www-authenticate", "Claw"),
            ],
            body: &body,
        },
        metadata: &[("decision", "deny"), ("code", &body)],
    });
}

#[test]
fn an_empty_answer_still_carries_status_http_part_and_metadata() {
    let parts = Parts {
        code: 0,
        message: "",
        http: Http::Ok {
            set: &[],
            remove: &[],
        },
        metadata: &[],
    };
    // Status, `ok_response` and `dynamic_metadata`, each present and empty.
    assert_eq!(parts.encode(), [0x0a, 0, 0x1a, 0, 0x22, 0]);
    round_trip(&parts);
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,20}",
        proptest::collection::vec(any::<char>(), 100..400).prop_map(String::from_iter),
    ]
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..8)
}

fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

proptest! {
    #[test]
    fn any_answer_decodes_to_what_was_written(
        code in prop_oneof![Just(0), 1..17, Just(i32::MAX), Just(-1)],
        message in text(),
        denied in any::<Option<u16>>(),
        headers in pairs(),
        remove in proptest::collection::vec(text(), 0..16),
        body in text(),
        metadata in pairs().prop_map(|mut p| {
            // A `Struct`'s keys are distinct.
            p.sort();
            p.dedup_by(|a, b| a.0 == b.0);
            p
        }),
    ) {
        let headers = borrowed(&headers);
        let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
        let metadata = borrowed(&metadata);
        let http = match denied {
            Some(status) => Http::Denied { status, headers: &headers, body: &body },
            None => Http::Ok { set: &headers, remove: &remove },
        };
        round_trip(&Parts { code, message: &message, http, metadata: &metadata });
    }
}
