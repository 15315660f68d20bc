//! The wire decoder against prost: on generated messages, merged ones, mangled ones and random
//! bytes, every message prost decodes gives the same view, and nothing panics.

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, Pipe, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use proptest::prelude::*;
use prost::Message;

use crate::request::RequestView;

/// prost's view of `bytes`, when prost decodes them.
fn by_prost(bytes: &[u8]) -> Option<RequestView> {
    CheckRequest::decode(bytes)
        .ok()
        .map(RequestView::from_check)
}

/// The decoder's answer must be prost's wherever prost decodes the bytes.
fn agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = RequestView::decode(bytes);
    if let Some(theirs) = by_prost(bytes) {
        prop_assert_eq!(ours, Ok(theirs), "bytes {:?}", bytes);
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9 :/._-]{1,12}",
        Just(" padded ".to_owned()),
        Just("é€".to_owned()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization".to_owned()),
        Just("Content-Length".to_owned()),
        Just("content-length".to_owned()),
        Just(":path".to_owned()),
        Just(":method".to_owned()),
        Just("host".to_owned()),
        Just("x-claw-nonce".to_owned()),
        Just("x-envoy-auth-partial-body".to_owned()),
        "[a-zA-Z-]{1,8}",
    ]
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    (name(), text(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(key, value, raw)| {
        HeaderValue {
            key,
            value,
            raw_value: raw,
        }
    })
}

fn address() -> impl Strategy<Value = Option<Address>> {
    prop_oneof![
        Just(None),
        Just(Some(Address { address: None })),
        text().prop_map(|a| Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: a,
                ..SocketAddress::default()
            })),
        })),
        text().prop_map(|path| Some(Address {
            address: Some(AddressKind::Pipe(Pipe { path, mode: 0 })),
        })),
    ]
}

prop_compose! {
    fn http()(
        method in text(),
        path in text(),
        host in text(),
        scheme in text(),
        headers in prop::collection::hash_map(name(), text(), 0..6),
        header_map in prop::option::of(prop::collection::vec(header_value(), 0..5)),
        body in text(),
        raw_body in prop::collection::vec(any::<u8>(), 0..6),
        id in text(),
    ) -> HttpRequest {
        HttpRequest {
            id,
            method,
            headers,
            header_map: header_map.map(|headers| HeaderMap { headers }),
            path,
            host,
            scheme,
            body,
            raw_body,
            size: 7,
            ..HttpRequest::default()
        }
    }
}

prop_compose! {
    fn check_request()(
        http in prop::option::of(http()),
        source in address(),
        destination in address(),
        extensions in prop::collection::hash_map(text(), text(), 0..3),
        attributes in any::<bool>(),
    ) -> CheckRequest {
        CheckRequest {
            attributes: attributes.then(|| AttributeContext {
                source: source.map(|a| Peer { address: Some(a), ..Peer::default() }),
                destination: destination.map(|a| Peer { address: Some(a), ..Peer::default() }),
                request: http.map(|h| Request { http: Some(h), time: None }),
                context_extensions: extensions,
                ..AttributeContext::default()
            }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_message_gives_prosts_view(request in check_request()) {
        let bytes = request.encode_to_vec();
        prop_assert!(RequestView::decode(&bytes).is_ok());
        agrees(&bytes)?;
    }

    /// Two messages one after the other are one merged message: last values win, maps and
    /// lines add up, the address variant sent last holds.
    #[test]
    fn merged_messages_give_prosts_view(a in check_request(), b in check_request()) {
        let mut bytes = a.encode_to_vec();
        bytes.extend(b.encode_to_vec());
        agrees(&bytes)?;
    }

    /// A byte changed, inserted or cut anywhere: where prost still decodes, the views agree.
    #[test]
    fn a_mangled_message_gives_prosts_view_or_none(
        request in check_request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..4u8,
    ) {
        let mut bytes = request.encode_to_vec();
        if bytes.is_empty() {
            bytes.push(byte);
        }
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            2 => bytes.truncate(i),
            _ => bytes[i] ^= 0x80,
        }
        agrees(&bytes)?;
    }

    #[test]
    fn random_bytes_never_panic_and_agree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agrees(&bytes)?;
    }
}

/// Unknown fields of every wire type, groups nested in groups included, are stepped over as
/// prost steps over them; a group closed by another number is refused by both.
#[test]
fn unknown_fields_and_groups_are_stepped_over_as_prost_does() {
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/x".into(),
                    ..HttpRequest::default()
                }),
                time: None,
            }),
            ..AttributeContext::default()
        }),
    };
    let message = request.encode_to_vec();
    let unknown: &[&[u8]] = &[
        &[0x28, 0x96, 0x01],                                           // 5: varint
        &[0x31, 1, 2, 3, 4, 5, 6, 7, 8],                               // 6: 64-bit
        &[0x3d, 1, 2, 3, 4],                                           // 7: 32-bit
        &[0x42, 2, b'h', b'i'],                                        // 8: length-delimited
        &[0x4b, 0x50, 1, 0x5b, 0x5c, 0x4c], // 9: a group holding a varint and group 11
        &[0x4b, 0x54],                      // 9: a group closed as 10: refused
        &[0x4c],                            // an end-group with none open: refused
        &[0x4b],                            // a group never closed: refused
        &[0x0e],                            // wire type 6: refused
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02], // a varint past 64 bits
    ];
    for (i, extra) in unknown.iter().enumerate() {
        let mut bytes = message.clone();
        bytes.extend_from_slice(extra);
        let ours = RequestView::decode(&bytes);
        let theirs = by_prost(&bytes);
        assert_eq!(ours.ok(), theirs, "case {i}");
    }
    let view = RequestView::decode(&message).unwrap();
    assert_eq!(
        (view.method.as_str(), view.raw_path.as_str()),
        ("POST", "/v1/x")
    );
}

/// The one difference: a field the view never reads is not checked, where prost refuses the
/// whole message for it (here invalid UTF-8 in `destination.service`).
#[test]
fn a_field_the_view_never_reads_is_not_checked() {
    // attributes { destination { service: "\xff" } }
    let bytes = [0x0a, 0x05, 0x12, 0x03, 0x12, 0x01, 0xff];
    assert!(CheckRequest::decode(&bytes[..]).is_err());
    assert_eq!(
        RequestView::decode(&bytes),
        Ok(RequestView::from_check(CheckRequest::default()))
    );
}

/// Header names that differ only in case become one, the same one whatever order the map
/// iterates in (it used to follow that order): the name sent in lowercase wins.
#[test]
fn names_that_differ_only_in_case_become_the_one_sent_in_lowercase() {
    for _ in 0..32 {
        let headers = [
            ("Content-Length", "1"),
            ("content-length", "2"),
            ("CONTENT-LENGTH", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        headers,
                        ..HttpRequest::default()
                    }),
                    time: None,
                }),
                ..AttributeContext::default()
            }),
        };
        let view = RequestView::decode(&request.encode_to_vec()).unwrap();
        assert_eq!(view.header("content-length"), Some("2"));
    }
}

/// Every map on the decoder's path (`context_extensions`, the source's `labels`, the request's
/// `headers`) is read as length-delimited whatever wire type its key says, as prost 0.14.4 reads
/// it; and the source address follows the variant sent last, merged when it repeats.
#[test]
fn maps_under_any_wire_type_and_address_variants_follow_prost() {
    // An entry `{1: "k", 2: "v"}`, its length first.
    let entry = [6u8, 0x0a, 1, b'k', 0x12, 1, b'v'];
    let within = |tag: u8, inner: &[u8]| {
        let mut m = vec![tag, inner.len() as u8];
        m.extend_from_slice(inner);
        m
    };
    for wire in [0u8, 1, 2, 3, 5] {
        // attributes.context_extensions (10)
        let mut attributes = vec![(10 << 3) | wire];
        attributes.extend_from_slice(&entry);
        let bytes = within(0x0a, &attributes);
        assert!(
            by_prost(&bytes).is_some(),
            "prost reads extensions, wire {wire}"
        );
        assert_eq!(
            RequestView::decode(&bytes).ok(),
            by_prost(&bytes),
            "extensions, wire {wire}"
        );
        // attributes.source.labels (3)
        let mut peer = vec![(3 << 3) | wire];
        peer.extend_from_slice(&entry);
        let bytes = within(0x0a, &within(0x0a, &peer));
        assert_eq!(
            RequestView::decode(&bytes).ok(),
            by_prost(&bytes),
            "labels, wire {wire}"
        );
        // attributes.request.http.headers (3)
        let mut http = vec![(3 << 3) | wire];
        http.extend_from_slice(&entry);
        let bytes = within(0x0a, &within(0x22, &within(0x12, &http)));
        assert!(
            by_prost(&bytes).is_some(),
            "prost reads headers, wire {wire}"
        );
        assert_eq!(
            RequestView::decode(&bytes).ok(),
            by_prost(&bytes),
            "headers, wire {wire}"
        );
    }
    // source.address: socket "a", then a pipe, then a socket with no address: "" (dropped);
    // socket "a" then socket with only a port: still "a".
    let socket_a = within(0x0a, &within(0x12, b"a"));
    let pipe = within(0x12, &[]);
    let bare_socket = within(0x0a, &[0x18, 80]);
    for address in [
        [socket_a.clone(), pipe.clone(), bare_socket.clone()].concat(),
        [socket_a.clone(), bare_socket.clone()].concat(),
        [pipe, socket_a].concat(),
    ] {
        let bytes = within(0x0a, &within(0x0a, &within(0x0a, &address)));
        let theirs = by_prost(&bytes);
        assert!(theirs.is_some());
        assert_eq!(RequestView::decode(&bytes).ok(), theirs);
    }
}

/// A million empty header entries make one header, and the entries read never hold more than
/// a fold's worth of them.
#[test]
fn repeated_empty_header_entries_are_one_header() {
    let http = [0x1a, 0x00].repeat(1 << 20);
    let mut message = Vec::new();
    let wrap = |tag: u8, inner: &[u8]| {
        let mut m = vec![tag];
        let mut len = inner.len();
        while len >= 0x80 {
            m.push((len as u8) | 0x80);
            len >>= 7;
        }
        m.push(len as u8);
        m.extend_from_slice(inner);
        m
    };
    let request = wrap(0x12, &http);
    let attributes = wrap(0x22, &request);
    message.extend(wrap(0x0a, &attributes));
    let parts = super::parts(&message).unwrap();
    assert!(
        parts.headers.capacity() <= 256,
        "{}",
        parts.headers.capacity()
    );
    let view = RequestView::decode(&message).unwrap();
    assert_eq!(Some(view.clone()), by_prost(&message));
    assert_eq!(view.header(""), Some(""));
}
