//! HTTP Message Signatures (RFC 9421) on requests: the `Signature-Input` and `Signature` fields,
//! the signature base, and the verification with a public key.
//!
//! What is signed is rebuilt here byte for byte (§2.5): every covered component as
//! `"<identifier>": <value>` on its own line, then `"@signature-params"` with the member of
//! `Signature-Input` exactly as it was received. The verifier never trusts a label: the caller
//! chooses the signature by what it covers ([`Signature::covers`]) and by its `tag`.
//!
//! Work is bounded before parsing: the two fields, the signatures in them and the components a
//! signature may cover all have a ceiling ([`MAX_FIELD_BYTES`], [`MAX_SIGNATURES`],
//! [`MAX_COMPONENTS`]).

pub mod components;
pub mod digest;
pub mod keys;

use sfv::{BareItem, FieldType, ListEntry, Parser};

use crate::crypto::{Alg, PublicKey};

pub use components::Message;

/// The longest `Signature-Input` or `Signature` field read.
pub const MAX_FIELD_BYTES: usize = 8 * 1024;
/// The most signatures one request may carry.
pub const MAX_SIGNATURES: usize = 8;
/// The most components one signature may cover.
pub const MAX_COMPONENTS: usize = 32;

/// Why a signature was refused. The text is for logs and tests; callers answer every one of
/// them with the same denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `Signature-Input` or `Signature` is missing, too large or not a Structured Field
    /// dictionary of the expected shape.
    Malformed(&'static str),
    /// A label appears twice in one field.
    DuplicateLabel,
    /// A label appears in one of the two fields only.
    UnpairedLabel,
    /// No signature covers what the route requires (or carries its tag).
    NoAcceptableSignature,
    /// A covered component this verifier cannot or must not rebuild.
    Component(String),
    /// A covered component the message does not have.
    MissingComponent(String),
    /// The same component covered twice.
    DuplicateComponent,
    /// `alg` names an algorithm the key does not use (`hmac-sha256` is never accepted).
    Algorithm,
    /// No key is known under the signature's `keyid`.
    UnknownKey,
    /// The covered `Signature-Agent` names no configured agent.
    UnknownAgent,
    /// `created` missing, in the future or older than allowed; `expires` past.
    Time(&'static str),
    /// The policy requires a `nonce` and there is none.
    MissingNonce,
    /// `Content-Digest` missing, unusable or not the body's digest.
    Digest(&'static str),
    /// The signature does not verify.
    BadSignature,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Malformed(what) => write!(f, "malformed {what}"),
            Error::DuplicateLabel => f.write_str("a label appears twice"),
            Error::UnpairedLabel => f.write_str("a label appears in one field only"),
            Error::NoAcceptableSignature => {
                f.write_str("no signature covers what the route requires")
            }
            Error::Component(c) => write!(f, "component {c} is not supported"),
            Error::MissingComponent(c) => write!(f, "component {c} is not in the request"),
            Error::DuplicateComponent => f.write_str("a component is covered twice"),
            Error::Algorithm => f.write_str("the algorithm does not match the key"),
            Error::UnknownKey => f.write_str("unknown keyid"),
            Error::UnknownAgent => f.write_str("unknown signature agent"),
            Error::Time(what) => write!(f, "{what}"),
            Error::MissingNonce => f.write_str("the signature has no nonce"),
            Error::Digest(what) => write!(f, "content-digest: {what}"),
            Error::BadSignature => f.write_str("the signature does not verify"),
        }
    }
}

/// One covered component: its name (lowercase field name, or `@derived`) and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub params: sfv::Parameters,
}

impl Component {
    /// The identifier as the signature base writes it: the serialized `sf-string` with its
    /// parameters, e.g. `"@query-param";name="Pet"`.
    pub fn identifier(&self) -> String {
        sfv::Item {
            bare_item: BareItem::String(
                sfv::StringRef::from_str(&self.name)
                    .map(ToOwned::to_owned)
                    .unwrap_or_default(),
            ),
            params: self.params.clone(),
        }
        .serialize()
    }

    fn string_param(&self, key: &str) -> Option<&str> {
        match self.params.get(key)? {
            BareItem::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.params.contains_key(key)
    }
}

/// One signature of the request: its `Signature-Input` member and its `Signature` value.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub label: String,
    pub components: Vec<Component>,
    /// The member's value as received (the `@signature-params` line).
    pub params_text: String,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub alg: Option<String>,
    pub keyid: Option<String>,
    pub tag: Option<String>,
    pub value: Vec<u8>,
}

impl Signature {
    /// Whether the signature covers the component `name`: the field (or derived component)
    /// itself, re-serialized (`sf`), or one of its dictionary members (`key`, as Web Bot Auth
    /// covers `signature-agent`); not its lines wrapped as bytes (`bs`).
    pub fn covers(&self, name: &str) -> bool {
        self.components
            .iter()
            .any(|c| c.name == name && c.params.keys().all(|k| matches!(k.as_str(), "sf" | "key")))
    }
}

/// Parses the two fields into their signatures, in the order of `Signature-Input`. Every label
/// must appear once in each field.
pub fn parse(input: &str, signature: &str) -> Result<Vec<Signature>, Error> {
    if input.len() > MAX_FIELD_BYTES || signature.len() > MAX_FIELD_BYTES {
        return Err(Error::Malformed("field too large"));
    }
    let raw = members(input).ok_or(Error::Malformed("Signature-Input"))?;
    let sigs = members(signature).ok_or(Error::Malformed("Signature"))?;
    if raw.len() > MAX_SIGNATURES || sigs.len() > MAX_SIGNATURES {
        return Err(Error::Malformed("too many signatures"));
    }
    for list in [&raw, &sigs] {
        for (i, (label, _)) in list.iter().enumerate() {
            if list[..i].iter().any(|(l, _)| l == label) {
                return Err(Error::DuplicateLabel);
            }
        }
    }
    if raw.len() != sigs.len() || raw.iter().any(|(l, _)| !sigs.iter().any(|(s, _)| s == l)) {
        return Err(Error::UnpairedLabel);
    }
    let inputs: sfv::Dictionary = Parser::new(input)
        .parse()
        .map_err(|_| Error::Malformed("Signature-Input"))?;
    let values: sfv::Dictionary = Parser::new(signature)
        .parse()
        .map_err(|_| Error::Malformed("Signature"))?;
    // The parsed dictionaries must hold exactly the members the split found (a repeated key
    // collapses in a parsed dictionary, the last one winning)...
    let same_labels = |parsed: &sfv::Dictionary, split: &[(&str, &str)]| {
        parsed.len() == split.len() && parsed.keys().zip(split).all(|(k, (l, _))| k.as_str() == *l)
    };
    if !same_labels(&inputs, &raw) || !same_labels(&values, &sigs) {
        return Err(Error::DuplicateLabel);
    }
    raw.into_iter()
        .map(|(label, text)| {
            let entry = inputs.get(label).ok_or(Error::UnpairedLabel)?;
            // ...and each member's text as received (the `@signature-params` line) must parse,
            // alone, to the very member whose parameters are checked: the signed line and the
            // parameters judged can never come from different text.
            let alone: Option<sfv::Dictionary> =
                Parser::new(&format!("{label}={text}")).parse().ok();
            match alone {
                Some(d) if d.len() == 1 && d.get(label) == Some(entry) => {}
                _ => return Err(Error::Malformed("Signature-Input member")),
            }
            let value = match values.get(label) {
                Some(ListEntry::Item(item)) => item.bare_item.as_byte_sequence(),
                _ => None,
            }
            .ok_or(Error::Malformed("Signature"))?;
            one(label, text, entry, value)
        })
        .collect()
}

fn one(label: &str, text: &str, entry: &ListEntry, value: &[u8]) -> Result<Signature, Error> {
    let ListEntry::InnerList(list) = entry else {
        return Err(Error::Malformed("Signature-Input member"));
    };
    if list.items.len() > MAX_COMPONENTS {
        return Err(Error::Malformed("too many components"));
    }
    let components = list
        .items
        .iter()
        .map(|item| match &item.bare_item {
            BareItem::String(name) => Ok(Component {
                name: name.as_str().to_owned(),
                params: item.params.clone(),
            }),
            _ => Err(Error::Malformed("component identifier")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let int = |key: &str| -> Result<Option<i64>, Error> {
        match list.params.get(key) {
            None => Ok(None),
            Some(BareItem::Integer(n)) => Ok(Some(i64::from(*n))),
            Some(_) => Err(Error::Malformed("signature parameter")),
        }
    };
    let string = |key: &str| -> Result<Option<String>, Error> {
        match list.params.get(key) {
            None => Ok(None),
            Some(BareItem::String(s)) => Ok(Some(s.as_str().to_owned())),
            Some(_) => Err(Error::Malformed("signature parameter")),
        }
    };
    Ok(Signature {
        label: label.to_owned(),
        components,
        params_text: text.to_owned(),
        created: int("created")?,
        expires: int("expires")?,
        nonce: string("nonce")?,
        alg: string("alg")?,
        keyid: string("keyid")?,
        tag: string("tag")?,
        value: value.to_vec(),
    })
}

/// The members of a dictionary field as `(key, value text)`, split at the commas outside
/// strings and inner lists, each value as received (trimmed of the optional whitespace around
/// it). `None` when the text cannot be split that way.
fn members(field: &str) -> Option<Vec<(&str, &str)>> {
    let bytes = field.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut depth, mut in_string, mut escaped) = (0, 0u32, false, false);
    // A Display String (`%"..."`) has no backslash escapes: its `\` is a plain character.
    let mut display = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') if !display => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                display = i > 0 && bytes[i - 1] == b'%';
            }
            b'(' => depth += 1,
            b')' => depth = depth.checked_sub(1)?,
            b',' if depth == 0 => {
                out.push(member(&field[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_string || depth != 0 {
        return None;
    }
    out.push(member(&field[start..])?);
    Some(out)
}

fn member(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_matches([' ', '\t']);
    let (key, value) = text.split_once('=')?;
    Some((key, value))
}

/// The signature base of `signature` over `message` (§2.5), without a trailing newline.
pub fn base(message: &dyn Message, signature: &Signature) -> Result<String, Error> {
    let mut out = String::with_capacity(256);
    let mut seen: Vec<String> = Vec::with_capacity(signature.components.len());
    for component in &signature.components {
        let identifier = component.identifier();
        // The same name and parameters in any order is the same component.
        let mut params: Vec<String> = component
            .params
            .iter()
            .map(|(k, v)| format!("{}={:?}", k.as_str(), v))
            .collect();
        params.sort();
        let key = format!("{}|{}", component.name, params.join(";"));
        if seen.contains(&key) {
            return Err(Error::DuplicateComponent);
        }
        let value = components::value(message, component)?;
        if value.contains(['\n', '\r']) {
            return Err(Error::Component(identifier));
        }
        out.push_str(&identifier);
        out.push_str(": ");
        out.push_str(&value);
        out.push('\n');
        seen.push(key);
    }
    out.push_str("\"@signature-params\": ");
    out.push_str(&signature.params_text);
    Ok(out)
}

/// A policy's component name, checked: a derived component (`@method`, ...) or a lowercase field
/// name.
pub fn component_id(name: &str) -> Option<String> {
    let derived = [
        "@method",
        "@authority",
        "@scheme",
        "@target-uri",
        "@request-target",
        "@path",
        "@query",
    ];
    let field = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        });
    (derived.contains(&name) || field).then(|| name.to_owned())
}

/// A request held in full: what a signer signs, and what tests verify.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    /// Path and query, as sent.
    pub target: String,
    /// Field lines in order, names in any case.
    pub fields: Vec<(String, String)>,
}

impl Message for Request {
    fn method(&self) -> &str {
        &self.method
    }
    fn scheme(&self) -> &str {
        &self.scheme
    }
    fn authority(&self) -> &str {
        &self.authority
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn field_lines(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a signer puts in `Signature-Input`.
#[derive(Debug, Clone, Default)]
pub struct SignatureSpec {
    pub label: String,
    /// Component names (derived or lowercase field names), or whole serialized identifiers
    /// with parameters (`"signature-agent";key="sig1"`).
    pub components: Vec<String>,
    pub created: i64,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub keyid: String,
    pub tag: Option<String>,
    /// Whether to name the algorithm (`alg`).
    pub alg: Option<String>,
}

/// Signs `request` as `spec` says with `sign` (which returns the raw signature bytes); returns
/// the `Signature-Input` and `Signature` field values.
pub fn sign(
    request: &Request,
    spec: &SignatureSpec,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<(String, String), Error> {
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut params = String::from("(");
    params.push_str(
        &spec
            .components
            .iter()
            .map(|c| match c.starts_with('"') {
                true => c.clone(),
                false => quoted(c),
            })
            .collect::<Vec<_>>()
            .join(" "),
    );
    params.push_str(&format!(");created={}", spec.created));
    if let Some(e) = spec.expires {
        params.push_str(&format!(";expires={e}"));
    }
    params.push_str(&format!(";keyid={}", quoted(&spec.keyid)));
    if let Some(alg) = &spec.alg {
        params.push_str(&format!(";alg={}", quoted(alg)));
    }
    if let Some(n) = &spec.nonce {
        params.push_str(&format!(";nonce={}", quoted(n)));
    }
    if let Some(t) = &spec.tag {
        params.push_str(&format!(";tag={}", quoted(t)));
    }
    let input = format!("{}={params}", spec.label);
    let placeholder = format!("{}=:AAAA:", spec.label);
    let parsed = parse(&input, &placeholder)?.remove(0);
    let base = base(request, &parsed)?;
    let value = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        sign(base.as_bytes()),
    );
    Ok((input, format!("{}=:{value}:", spec.label)))
}

/// The `alg` value of a key's algorithm in RFC 9421's registry.
pub fn alg_name(key: &PublicKey) -> &'static str {
    match key {
        PublicKey::Ed25519(_) => "ed25519",
        PublicKey::P256(_) => "ecdsa-p256-sha256",
        // RS256 is RFC 9421's `rsa-v1_5-sha256`; PS256 (SHA-256) has no name there.
        PublicKey::Rsa(k) if k.alg() == Alg::RS256 => "rsa-v1_5-sha256",
        PublicKey::Rsa(_) => "(none)",
    }
}

/// Verifies `signature` over `base` with `key`: the key decides the algorithm, and an `alg`
/// parameter must name that same algorithm (so `hmac-sha256` never passes with a public key).
pub fn verify(key: &PublicKey, signature: &Signature, base: &str) -> Result<(), Error> {
    if let Some(alg) = &signature.alg
        && alg != alg_name(key)
    {
        return Err(Error::Algorithm);
    }
    // Configured and directory keys are Ed25519 or P-256 (`keys::from_jwk`); an RSA key never
    // verifies a message signature.
    if matches!(key, PublicKey::Rsa(_)) {
        return Err(Error::Algorithm);
    }
    match key.verify(base.as_bytes(), &signature.value) {
        true => Ok(()),
        false => Err(Error::BadSignature),
    }
}

#[cfg(test)]
mod tests;
