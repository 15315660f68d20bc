//! `CheckResponse` written straight to protobuf from borrowed strings.
//!
//! Building prost's message first cost an owned copy of every header name and value, and a
//! `HashMap` (SipHash, one allocation per entry) for the dynamic metadata `Struct`, only to be
//! encoded and dropped: on a check whose answer is not shared (a new bearer token, a message
//! signature, every denial) that was about 3 µs. The field numbers are those of
//! `envoy/service/auth/v3/external_auth.proto` and the messages it uses; the tests decode every
//! shape with prost's generated types, so a wrong number or length cannot pass.

use bytes::BufMut;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use prost::encoding::{encode_varint, encoded_len_varint};

/// Length-delimited and varint wire types. Every field below is numbered under 16, so each
/// key is one byte.
const LEN: u8 = 2;
const VARINT: u8 = 0;

/// `OVERWRITE_IF_EXISTS_OR_ADD`, on every header (see the module `response`).
const OVERWRITE: u64 = HeaderAppendAction::OverwriteIfExistsOrAdd as u64;

/// What Envoy does with the request.
pub(super) enum Http<'a> {
    /// `OkHttpResponse`: headers set over the client's, headers removed.
    Ok {
        set: &'a [(&'a str, &'a str)],
        remove: &'a [&'a str],
    },
    /// `DeniedHttpResponse`: the client gets this status, these headers and this body.
    Denied {
        status: u16,
        headers: &'a [(&'a str, &'a str)],
        body: &'a str,
    },
}

/// A whole `CheckResponse`: the gRPC status (`google.rpc.Status`), the HTTP part, and the
/// dynamic metadata (a `Struct` of strings).
pub(super) struct Parts<'a> {
    pub(super) code: i32,
    pub(super) message: &'a str,
    pub(super) http: Http<'a>,
    pub(super) metadata: &'a [(&'a str, &'a str)],
}

impl Parts<'_> {
    /// The encoded message, in a buffer of exactly its size.
    pub(super) fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut w = Writer(Vec::with_capacity(len));
        w.nested(1, self.status_len());
        if self.code != 0 {
            w.varint(1, self.code as u64);
        }
        if !self.message.is_empty() {
            w.string(2, self.message);
        }
        match self.http {
            Http::Ok { set, remove } => {
                w.nested(3, ok_len(set, remove));
                for (name, value) in set {
                    w.header(name, value);
                }
                for name in remove {
                    w.string(5, name);
                }
            }
            Http::Denied {
                status,
                headers,
                body,
            } => {
                w.nested(2, denied_len(status, headers, body));
                w.nested(1, varint_len(u64::from(status)));
                w.varint(1, u64::from(status));
                for (name, value) in headers {
                    w.header(name, value);
                }
                w.string(3, body);
            }
        }
        w.nested(4, struct_len(self.metadata));
        for (key, value) in self.metadata {
            w.nested(1, entry_len(key, value));
            w.string(1, key);
            w.nested(2, nested_len(value.len()));
            w.string(3, value);
        }
        debug_assert_eq!(w.0.len(), len);
        w.0
    }

    fn status_len(&self) -> usize {
        let code = if self.code == 0 {
            0
        } else {
            varint_len(self.code as u64)
        };
        let message = if self.message.is_empty() {
            0
        } else {
            nested_len(self.message.len())
        };
        code + message
    }

    fn encoded_len(&self) -> usize {
        let http = match self.http {
            Http::Ok { set, remove } => ok_len(set, remove),
            Http::Denied {
                status,
                headers,
                body,
            } => denied_len(status, headers, body),
        };
        nested_len(self.status_len()) + nested_len(http) + nested_len(struct_len(self.metadata))
    }
}

/// A length-delimited field's size on the wire (key, length, content) from its content's.
fn nested_len(content: usize) -> usize {
    1 + encoded_len_varint(content as u64) + content
}

/// A varint field's size on the wire.
fn varint_len(value: u64) -> usize {
    1 + encoded_len_varint(value)
}

/// A `HeaderValueOption` (`header` {`key`, `value`}, `append_action`), as a field.
fn header_len(name: &str, value: &str) -> usize {
    let header = nested_len(name.len()) + nested_len(value.len());
    nested_len(nested_len(header) + varint_len(OVERWRITE))
}

fn headers_len(headers: &[(&str, &str)]) -> usize {
    headers.iter().map(|(n, v)| header_len(n, v)).sum()
}

fn ok_len(set: &[(&str, &str)], remove: &[&str]) -> usize {
    headers_len(set) + remove.iter().map(|n| nested_len(n.len())).sum::<usize>()
}

fn denied_len(status: u16, headers: &[(&str, &str)], body: &str) -> usize {
    nested_len(varint_len(u64::from(status))) + headers_len(headers) + nested_len(body.len())
}

/// One entry of `Struct.fields`: the key, and a `Value` holding `string_value`.
fn entry_len(key: &str, value: &str) -> usize {
    nested_len(key.len()) + nested_len(nested_len(value.len()))
}

fn struct_len(entries: &[(&str, &str)]) -> usize {
    entries
        .iter()
        .map(|(k, v)| nested_len(entry_len(k, v)))
        .sum()
}

struct Writer(Vec<u8>);

impl Writer {
    /// The key and length of a length-delimited field; its content follows.
    fn nested(&mut self, field: u8, len: usize) {
        self.0.put_u8((field << 3) | LEN);
        encode_varint(len as u64, &mut self.0);
    }

    fn string(&mut self, field: u8, s: &str) {
        self.nested(field, s.len());
        self.0.put_slice(s.as_bytes());
    }

    fn varint(&mut self, field: u8, value: u64) {
        self.0.put_u8((field << 3) | VARINT);
        encode_varint(value, &mut self.0);
    }

    /// A `HeaderValueOption` in field 2 (of `OkHttpResponse` and `DeniedHttpResponse` alike).
    fn header(&mut self, name: &str, value: &str) {
        let header = nested_len(name.len()) + nested_len(value.len());
        self.nested(2, nested_len(header) + varint_len(OVERWRITE));
        self.nested(1, header);
        self.string(1, name);
        self.string(2, value);
        self.varint(3, OVERWRITE);
    }
}

#[cfg(test)]
mod tests;
