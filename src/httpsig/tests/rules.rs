//! The parsing rules around Appendix B: labels, the signature-params line, component
//! parameters, derived components, limits, and Web Bot Auth's published vectors.

use super::*;

#[test]
fn duplicate_labels_are_refused() {
    let sig = "a=:AAAA:, b=:AAAA:";
    assert_eq!(
        parse(r#"a=("@method");created=1, a=("@path");created=1"#, sig),
        Err(Error::DuplicateLabel)
    );
    assert_eq!(
        parse(r#"a=("@method");created=1"#, "a=:AAAA:, a=:AAAA:"),
        Err(Error::DuplicateLabel)
    );
}

#[test]
fn a_label_in_one_field_only_is_refused() {
    assert_eq!(
        parse(
            r#"a=("@method");created=1, b=("@path");created=1"#,
            "a=:AAAA:"
        ),
        Err(Error::UnpairedLabel)
    );
    assert_eq!(
        parse(r#"a=("@method");created=1"#, "b=:AAAA:"),
        Err(Error::UnpairedLabel)
    );
}

#[test]
fn the_signature_params_line_is_the_member_as_received() {
    // Extra spaces inside the inner list are valid Structured Fields; the signer signed them.
    let sig = one_signature(
        r#"x=(  "@method"   "@path" );created=1618884473 ,  y=();created=2"#
            .split(" ,  ")
            .next()
            .unwrap(),
        "x=:AAAA:",
    );
    assert_eq!(
        sig.params_text,
        r#"(  "@method"   "@path" );created=1618884473"#
    );
    let base = base(&test_request(), &sig).unwrap();
    assert!(
        base.ends_with("\"@signature-params\": (  \"@method\"   \"@path\" );created=1618884473")
    );
}

#[test]
fn header_parameters_sf_key_and_bs() {
    let message = Fixture {
        method: "GET",
        authority: "example.com",
        target: "/",
        status: None,
        fields: vec![
            ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)  "),
            ("Example-Header", "value, with, lots"),
            ("Example-Header", "of, commas"),
        ],
    };
    let value = |id: &str| {
        let sig = one_signature(&format!("s=({id});created=1"), "s=:AAAA:");
        base(&message, &sig).map(|b| b.lines().next().unwrap().to_owned())
    };
    // RFC 9421 §2.1.1 and §2.1.2's examples.
    assert_eq!(
        value(r#""example-dict""#).unwrap(),
        r#""example-dict": a=1,    b=2;x=1;y=2,   c=(a   b   c)"#
    );
    assert_eq!(
        value(r#""example-dict";sf"#).unwrap(),
        r#""example-dict";sf: a=1, b=2;x=1;y=2, c=(a b c)"#
    );
    assert_eq!(
        value(r#""example-dict";key="a""#).unwrap(),
        r#""example-dict";key="a": 1"#
    );
    assert_eq!(
        value(r#""example-dict";key="b""#).unwrap(),
        r#""example-dict";key="b": 2;x=1;y=2"#
    );
    assert_eq!(
        value(r#""example-dict";key="c""#).unwrap(),
        r#""example-dict";key="c": (a b c)"#
    );
    assert!(matches!(
        value(r#""example-dict";key="d""#),
        Err(Error::MissingComponent(_))
    ));
    // §2.1.3: each field line wrapped as a byte sequence.
    assert_eq!(
        value(r#""example-header";bs"#).unwrap(),
        r#""example-header";bs: :dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:"#
    );
    assert_eq!(
        value(r#""example-header""#).unwrap(),
        r#""example-header": value, with, lots, of, commas"#
    );
    assert!(matches!(
        value(r#""example-header";sf"#),
        Err(Error::Component(_))
    ));
    assert!(matches!(
        value(r#""absent""#),
        Err(Error::MissingComponent(_))
    ));
    assert!(matches!(
        value(r#""example-dict";req"#),
        Err(Error::Component(_))
    ));
}

#[test]
fn derived_components_of_section_2_2() {
    let message = Fixture {
        method: "POST",
        authority: "www.example.com",
        target: "/path?param=value&foo=bar&baz=bat%2Dman",
        status: None,
        fields: vec![],
    };
    let value = |id: &str| {
        let sig = one_signature(&format!("s=({id});created=1"), "s=:AAAA:");
        base(&message, &sig).map(|b| b.lines().next().unwrap().to_owned())
    };
    assert_eq!(value(r#""@method""#).unwrap(), r#""@method": POST"#);
    assert_eq!(
        value(r#""@target-uri""#).unwrap(),
        r#""@target-uri": https://www.example.com/path?param=value&foo=bar&baz=bat%2Dman"#
    );
    assert_eq!(
        value(r#""@authority""#).unwrap(),
        r#""@authority": www.example.com"#
    );
    assert_eq!(value(r#""@scheme""#).unwrap(), r#""@scheme": https"#);
    assert_eq!(
        value(r#""@request-target""#).unwrap(),
        r#""@request-target": /path?param=value&foo=bar&baz=bat%2Dman"#
    );
    assert_eq!(value(r#""@path""#).unwrap(), r#""@path": /path"#);
    assert_eq!(
        value(r#""@query""#).unwrap(),
        r#""@query": ?param=value&foo=bar&baz=bat%2Dman"#
    );
    assert_eq!(
        value(r#""@query-param";name="baz""#).unwrap(),
        r#""@query-param";name="baz": bat-man"#
    );
    assert!(matches!(value(r#""@status""#), Err(Error::Component(_))));
    assert!(matches!(
        value(r#""@signature-params""#),
        Err(Error::Component(_))
    ));
    assert!(matches!(value(r#""@method";sf"#), Err(Error::Component(_))));
    assert!(matches!(
        value(r#""@method" "@method""#),
        Err(Error::DuplicateComponent)
    ));
}

#[test]
fn an_absent_query_is_a_lone_question_mark() {
    let message = Fixture {
        method: "GET",
        authority: "example.com",
        target: "/",
        status: None,
        fields: vec![],
    };
    let sig = one_signature(r#"s=("@query" "@path");created=1"#, "s=:AAAA:");
    assert!(
        base(&message, &sig)
            .unwrap()
            .starts_with("\"@query\": ?\n\"@path\": /\n")
    );
}

#[test]
fn limits_hold_before_parsing() {
    let long = format!("a=({});created=1", "\"x\" ".repeat(MAX_FIELD_BYTES / 4 + 1));
    assert_eq!(
        parse(&long, "a=:AAAA:"),
        Err(Error::Malformed("field too large"))
    );
    let many: Vec<String> = (0..=MAX_SIGNATURES).map(|i| format!("s{i}=()")).collect();
    let values: Vec<String> = (0..=MAX_SIGNATURES)
        .map(|i| format!("s{i}=:AAAA:"))
        .collect();
    assert_eq!(
        parse(&many.join(", "), &values.join(", ")),
        Err(Error::Malformed("too many signatures"))
    );
    let components = format!(
        "a=({});created=1",
        (0..=MAX_COMPONENTS)
            .map(|i| format!("\"h{i}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(
        parse(&components, "a=:AAAA:"),
        Err(Error::Malformed("too many components"))
    );
    assert!(parse("a=(", "a=:AAAA:").is_err());
    assert!(parse(r#"a=("unterminated);created=1"#, "a=:AAAA:").is_err());
    assert!(parse("", "").is_err());
}

/// Web Bot Auth (draft-meunier-webbotauth-httpsig-protocol, the vectors of its current
/// revision and of cloudflare/web-bot-auth's test data): `GET https://example.com/path/to/resource`
/// signed with the B.1.4 key.
fn web_bot_auth(agent: &'static str, input: &str, signature: &str) -> Result<String, Error> {
    let request = Fixture {
        method: "GET",
        authority: "example.com",
        target: "/path/to/resource",
        status: None,
        fields: vec![("Signature-Agent", agent)],
    };
    let sig = one_signature(input, signature);
    assert_eq!(
        sig.keyid.as_deref(),
        Some(crate::httpsig::keys::TEST_KEY_THUMBPRINTS[0])
    );
    assert_eq!(sig.tag.as_deref(), Some("web-bot-auth"));
    let base = base(&request, &sig)?;
    verify(&ed25519_key(), &sig, &base).map(|()| base)
}

#[test]
fn web_bot_auth_dictionary_form() {
    let base = web_bot_auth(
        r#"agent2="https://signature-agent.test""#,
        r#"sig2=("@authority" "signature-agent";key="agent2");created=1735689600;keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";alg="ed25519";expires=4889289600;nonce="n9p433xm+NJ3ph3upfBIGmsuwHw387YV7Q/F+6BSpGCVjYCqQw6rznNA8PVVLySrAWsv0hQtFioQb6E1YsauiA==";tag="web-bot-auth""#,
        "sig2=:RdNFx5Bj6au3YgAMQL/RzmUlZE8QZLIaXGRpw985hWnwPfMxT228NMk6ehRS1PSl4e8PhbNZACSanGdhEwYCCg==:",
    )
    .unwrap();
    assert!(base.starts_with(
        "\"@authority\": example.com\n\"signature-agent\";key=\"agent2\": \"https://signature-agent.test\"\n"
    ));
}

#[test]
fn web_bot_auth_legacy_string_form() {
    let base = web_bot_auth(
        r#""https://signature-agent.test""#,
        r#"sig2=("@authority" "signature-agent");created=1735689600;keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";alg="ed25519";expires=1735693200;nonce="e8N7S2MFd/qrd6T2R3tdfAuuANngKI7LFtKYI/vowzk4lAZYadIX6wW25MwG7DCT9RUKAJ0qVkU0mEeLElW1qg==";tag="web-bot-auth""#,
        "sig2=:jdq0SqOwHdyHr9+r5jw3iYZH6aNGKijYp/EstF4RQTQdi5N5YYKrD+mCT1HA1nZDsi6nJKuHxUi/5Syp3rLWBA==:",
    )
    .unwrap();
    assert!(base.contains("\n\"signature-agent\": \"https://signature-agent.test\"\n"));
}

#[test]
fn web_bot_auth_without_a_signature_agent() {
    web_bot_auth(
        r#""https://signature-agent.test""#,
        r#"sig1=("@authority");created=1735689600;keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";alg="ed25519";expires=4889289600;nonce="zIW8+cdmA3vdYagbxojpONwa/l0EKJ/O3/wD486VvsQjO/RxPaSt6ZxvQaMcQzNnqKN/mQ6hpGiFro2L2qkz5A==";tag="web-bot-auth""#,
        "sig1=:QKN4fTdIYfh82fvoZCQiQA1weuozfCS/Led2zTMbewMMqH8PI2Wsy/5c4ao6B6D09nraNQdBNOADg8aM1MqfCg==:",
    )
    .unwrap();
    // The same signature over another authority does not verify.
    let request = Fixture {
        method: "GET",
        authority: "example.org",
        target: "/path/to/resource",
        status: None,
        fields: vec![],
    };
    let sig = one_signature(
        r#"sig1=("@authority");created=1735689600;keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";alg="ed25519";expires=4889289600;nonce="zIW8+cdmA3vdYagbxojpONwa/l0EKJ/O3/wD486VvsQjO/RxPaSt6ZxvQaMcQzNnqKN/mQ6hpGiFro2L2qkz5A==";tag="web-bot-auth""#,
        "sig1=:QKN4fTdIYfh82fvoZCQiQA1weuozfCS/Led2zTMbewMMqH8PI2Wsy/5c4ao6B6D09nraNQdBNOADg8aM1MqfCg==:",
    );
    let base = base(&request, &sig).unwrap();
    assert_eq!(
        verify(&ed25519_key(), &sig, &base),
        Err(Error::BadSignature)
    );
}

/// Found in review: a Display String (`%"\"`, whose backslash is a plain character) once hid a
/// second `sig1` from the member split while the parsed dictionary kept it, so a captured
/// signature's signed line came with fresh parameters (a new nonce and `created`).
#[test]
fn a_member_hidden_from_the_split_is_refused() {
    let captured = b_2_6_signature();
    let t = &captured.params_text;
    let value = base64::engine::general_purpose::STANDARD.encode(&captured.value);
    let input = format!(
        r#"sig1={t}, sig2=("@method");d=%"\", sig1=("@method" "@authority" "@path");created=9999999999;keyid="test-key-ed25519";nonce="fresh";e="\"""#
    );
    // Structured Fields reads the hidden member (RFC 9651 Display Strings).
    let parsed: sfv::Dictionary = sfv::Parser::new(&input).parse().unwrap();
    assert_eq!(parsed.len(), 2);
    let signature = format!("sig1=:{value}:, sig2=:AAAA:");
    assert!(parse(&input, &signature).is_err());
    // A display string elsewhere is fine when nothing hides behind it.
    let plain = format!(r#"sig1={t};d=%"a\b""#);
    assert!(parse(&plain, &format!("sig1=:{value}:")).is_ok());
}

#[test]
fn unknown_component_parameters_and_reordered_duplicates_are_refused() {
    let value = |ids: &str| {
        let sig = one_signature(&format!("s=({ids});created=1"), "s=:AAAA:");
        base(&test_request(), &sig)
    };
    assert!(matches!(
        value(r#""content-type";foo"#),
        Err(Error::Component(_))
    ));
    assert_eq!(
        value(r#""content-digest";sf;key="sha-512" "content-digest";key="sha-512";sf"#),
        Err(Error::DuplicateComponent)
    );
}
