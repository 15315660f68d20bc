//! A `CheckRequest` decoded straight from its protobuf bytes into the [`Parts`] of a view.
//!
//! prost decodes the whole message, every field of every nested message, into its own structs
//! first; the view then moves the few it reads out of them. That took about 5 us per Check
//! (issue 20). This reads the fields the view needs and steps over the rest:
//!
//! - `attributes` (1): `source` (1) → `address` (1) → `socket_address` (1) → `address` (2);
//!   `request` (4) → `http` (2); `context_extensions` (10).
//! - `http`: `method` (2), `headers` (3), `path` (4), `host` (5), `scheme` (6), `body` (11),
//!   `raw_body` (12), `header_map` (13) → `headers` (1) → `key` (1), `value` (2),
//!   `raw_value` (3).
//!
//! Protobuf's rules hold as prost applies them: the last value of a field wins, a message sent
//! twice is merged (so reading both into the same parts is the merge), map entries default a
//! missing key or value to "", a later entry replaces an earlier one, and a `oneof` keeps the
//! variant sent last. So does the leniency of prost 0.14.4 (the version locked): a map entry is
//! read as length-delimited whatever wire type its key says. Work is linear in the message's
//! size; nothing recurses past the six levels read. Every message prost decodes gives the same view; the test below checks it
//! against prost on generated and mangled messages. The one difference is in what is refused:
//! a field the view never reads is stepped over unchecked, where prost also refuses, say,
//! invalid UTF-8 in `destination.service`. Envoy never sends such a message, and nothing of that
//! field reaches a decision.

use super::Parts;

/// The bytes are not a protobuf `CheckRequest` (the caller answers gRPC `INTERNAL`, as prost's
/// codec did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The parts of the view of the `CheckRequest` in `message`.
pub(crate) fn parts(message: &[u8]) -> Result<Parts<'_>, Malformed> {
    let mut parts = Parts::default();
    let mut address = Address::None;
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        let value = fields.value(tag, wire)?;
        if tag == 1 {
            attributes(value.message()?, &mut parts, &mut address)?;
        }
    }
    if let Address::Socket(a) = address {
        parts.source_address = Some(a);
    }
    Ok(parts)
}

/// The variant of `source.address` sent last (`oneof address`).
enum Address<'m> {
    None,
    Socket(&'m str),
    Other,
}

fn attributes<'m>(
    message: &'m [u8],
    parts: &mut Parts<'m>,
    address: &mut Address<'m>,
) -> Result<(), Malformed> {
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        if tag == 10 {
            let (key, value) = map_entry(fields.entry()?)?;
            parts.context_extensions.insert(key.into(), value.into());
            continue;
        }
        let value = fields.value(tag, wire)?;
        match tag {
            1 => peer(value.message()?, address)?,
            4 => request(value.message()?, parts)?,
            _ => {}
        }
    }
    Ok(())
}

fn peer<'m>(message: &'m [u8], address: &mut Address<'m>) -> Result<(), Malformed> {
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        if tag == 3 {
            // `labels`, a map: not read, but stepped over as prost reads it.
            fields.entry()?;
            continue;
        }
        let value = fields.value(tag, wire)?;
        if tag == 1 {
            let mut fields = Fields(value.message()?);
            while let Some((tag, wire)) = fields.next()? {
                let value = fields.value(tag, wire)?;
                match tag {
                    1 => {
                        let message = value.message()?;
                        // The same variant again is merged into; another one starts anew.
                        if !matches!(address, Address::Socket(_)) {
                            *address = Address::Socket("");
                        }
                        if let Address::Socket(a) = address {
                            socket_address(message, a)?;
                        }
                    }
                    2 | 3 => {
                        value.message()?;
                        *address = Address::Other;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn socket_address<'m>(message: &'m [u8], address: &mut &'m str) -> Result<(), Malformed> {
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        let value = fields.value(tag, wire)?;
        if tag == 2 {
            *address = value.string()?;
        }
    }
    Ok(())
}

fn request<'m>(message: &'m [u8], parts: &mut Parts<'m>) -> Result<(), Malformed> {
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        let value = fields.value(tag, wire)?;
        if tag == 2 {
            http(value.message()?, parts)?;
        }
    }
    Ok(())
}

fn http<'m>(message: &'m [u8], parts: &mut Parts<'m>) -> Result<(), Malformed> {
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        if tag == 3 {
            let (key, value) = map_entry(fields.entry()?)?;
            parts.headers.push(key, value);
            continue;
        }
        let value = fields.value(tag, wire)?;
        match tag {
            2 => parts.method = value.string()?,
            4 => parts.path = value.string()?,
            5 => parts.host = value.string()?,
            6 => parts.scheme = value.string()?,
            11 => parts.body = value.string()?,
            12 => parts.raw_body = value.message()?,
            13 => {
                let lines = parts.header_map.get_or_insert_with(Vec::new);
                let mut fields = Fields(value.message()?);
                while let Some((tag, wire)) = fields.next()? {
                    let value = fields.value(tag, wire)?;
                    if tag == 1 {
                        lines.push(header_value(value.message()?)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn header_value(message: &[u8]) -> Result<(&str, &str, &[u8]), Malformed> {
    let (mut key, mut value, mut raw) = ("", "", &[][..]);
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        let field = fields.value(tag, wire)?;
        match tag {
            1 => key = field.string()?,
            2 => value = field.string()?,
            3 => raw = field.message()?,
            _ => {}
        }
    }
    Ok((key, value, raw))
}

/// One `map<string, string>` entry (key, value): a missing key or value is "".
fn map_entry(message: &[u8]) -> Result<(&str, &str), Malformed> {
    let (mut key, mut value) = ("", "");
    let mut fields = Fields(message);
    while let Some((tag, wire)) = fields.next()? {
        let field = fields.value(tag, wire)?;
        match tag {
            1 => key = field.string()?,
            2 => value = field.string()?,
            _ => {}
        }
    }
    Ok((key, value))
}

/// A field's value, by wire type.
enum Value<'m> {
    /// Varint, 64-bit, 32-bit or a group: nothing the view reads.
    Scalar,
    /// Length-delimited: a string, bytes or a message.
    Delimited(&'m [u8]),
}

impl<'m> Value<'m> {
    /// A message, a string or bytes must come length-delimited.
    fn message(self) -> Result<&'m [u8], Malformed> {
        match self {
            Value::Delimited(bytes) => Ok(bytes),
            Value::Scalar => Err(Malformed),
        }
    }

    fn string(self) -> Result<&'m str, Malformed> {
        std::str::from_utf8(self.message()?).map_err(|_| Malformed)
    }
}

/// The fields of one message, in order.
struct Fields<'m>(&'m [u8]);

impl<'m> Fields<'m> {
    /// The next field's number and wire type; `None` at the end of the message. Its value is
    /// read next, by [`Fields::value`] or [`Fields::entry`].
    fn next(&mut self) -> Result<Option<(u32, u8)>, Malformed> {
        if self.0.is_empty() {
            return Ok(None);
        }
        self.key().map(Some)
    }

    /// A map entry's message. prost reads one as length-delimited whatever wire type its key
    /// gave (a map field is never checked), so this does too.
    fn entry(&mut self) -> Result<&'m [u8], Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
        self.take(len)
    }

    /// The value of field `tag`, read as its wire type says.
    fn value(&mut self, tag: u32, wire: u8) -> Result<Value<'m>, Malformed> {
        let value = match wire {
            0 => self.varint().map(|_| Value::Scalar)?,
            1 => self.take(8).map(|_| Value::Scalar)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                Value::Delimited(self.take(len)?)
            }
            3 => self.skip_group(tag).map(|()| Value::Scalar)?,
            5 => self.take(4).map(|_| Value::Scalar)?,
            // An end-group with no group open, or no wire type at all.
            _ => return Err(Malformed),
        };
        Ok(value)
    }

    /// A field key: its number (1 or more, at most 32 bits of key) and wire type.
    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = u32::try_from(self.varint()?).map_err(|_| Malformed)?;
        let tag = key >> 3;
        if tag == 0 {
            return Err(Malformed);
        }
        Ok((tag, (key & 7) as u8))
    }

    /// A base-128 varint of at most 10 bytes that fits 64 bits.
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            if i == 9 && byte > 1 {
                return Err(Malformed);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.0 = &self.0[i + 1..];
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'m [u8], Malformed> {
        if len > self.0.len() {
            return Err(Malformed);
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    /// Steps over a group (wire type 3) up to its end-group of the same number, groups nested
    /// in it included; without recursion, so its depth costs no stack.
    fn skip_group(&mut self, tag: u32) -> Result<(), Malformed> {
        let mut open = vec![tag];
        while let Some(&innermost) = open.last() {
            let (tag, wire) = self.key()?;
            match wire {
                0 => self.varint().map(drop)?,
                1 => self.take(8).map(drop)?,
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
                    self.take(len).map(drop)?;
                }
                3 => open.push(tag),
                4 if tag == innermost => {
                    open.pop();
                }
                5 => self.take(4).map(drop)?,
                _ => return Err(Malformed),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
