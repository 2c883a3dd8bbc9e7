//! Just enough of the Kubernetes protobuf encoding to read a
//! `SelfSubjectAccessReview` spec: the `k8s\0` magic, `runtime.Unknown`, and
//! length-delimited fields.

use serde_json::{json, Map, Value};

/// Iterates `(field number, bytes)` over the length-delimited fields of a
/// message, skipping varint and fixed-size ones. `None` on malformed input.
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                out.push((key >> 3, buf.get(..len)?));
                buf = buf.get(len..)?;
            }
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A message's string fields named by number, as a JSON object.
fn strings(msg: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let mut m = Map::new();
    for (num, bytes) in fields(msg)? {
        if let Some((_, name)) = names.iter().find(|(n, _)| *n == num) {
            m.insert((*name).into(), json!(String::from_utf8_lossy(bytes)));
        }
    }
    Some(Value::Object(m))
}

/// Decodes the `spec` of a protobuf `SelfSubjectAccessReview` as JSON.
pub(crate) fn access_review_spec(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let raw = fields(unknown)?.into_iter().find(|(n, _)| *n == 2)?.1;
    let spec = fields(raw)?.into_iter().find(|(n, _)| *n == 2)?.1;
    let mut out = Map::new();
    for (num, msg) in fields(spec)? {
        match num {
            1 => {
                let names = [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ];
                out.insert("resourceAttributes".into(), strings(msg, &names)?);
            }
            2 => {
                let names = [(1, "path"), (2, "verb")];
                out.insert("nonResourceAttributes".into(), strings(msg, &names)?);
            }
            _ => {}
        }
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u8, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3) | 2, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_resource_attributes() {
        let attrs = [field(1, b"default"), field(2, b"get"), field(5, b"pods")].concat();
        let spec = field(1, &attrs);
        let review = [field(1, b""), field(2, &spec)].concat();
        let unknown = [
            field(1, &field(2, b"SelfSubjectAccessReview")),
            field(2, &review),
        ]
        .concat();
        let body = [b"k8s\0".as_slice(), &unknown].concat();
        assert_eq!(
            access_review_spec(&body).unwrap(),
            json!({"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}})
        );
    }
}
