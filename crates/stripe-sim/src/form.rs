//! Owns Stripe's request encoding: form bodies (and query strings) with bracketed nested keys,
//! decoded into a JSON tree so handlers read parameters the way Stripe documents them.
//!
//! `items[0][price]=p&items[0][quantity]=2&expand[]=customer&metadata[k]=v` becomes
//! `{"items": [{"price": "p", "quantity": "2"}], "expand": ["customer"], "metadata": {"k": "v"}}`.
//! Every leaf stays a string, as on the wire; handlers convert with the typed getters below and
//! answer Stripe's `parameter_invalid_*` errors when a value does not convert.

use serde_json::{Map, Value};

use crate::error::StripeError;

/// Decodes `application/x-www-form-urlencoded` (body or query string).
pub fn decode(raw: &[u8]) -> Result<Value, StripeError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(raw) {
        let path = parse_key(&key).ok_or_else(|| StripeError::invalid(&key, "Invalid parameter name."))?;
        insert(&mut root, &path, value.into_owned())
            .map_err(|()| StripeError::invalid(&key, "Conflicting parameter shapes."))?;
    }
    Ok(compact_arrays(root))
}

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
    Push,
}

/// Segments a key may have.
const MAX_DEPTH: usize = 16;

/// `a[b][0][]` → [Key a, Key b, Index 0, Push].
fn parse_key(key: &str) -> Option<Vec<Seg>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    // No parameter name holds a control character; refusing them also keeps a key from posing
    // as the internal array mark (found by fuzzing: `%00array[]=b` made the whole body a list).
    if head.is_empty() || key.chars().any(char::is_control) {
        return None;
    }
    let mut path = vec![Seg::Key(head.to_owned())];
    while !rest.is_empty() {
        // Stripe's deepest parameters nest a handful of levels; a deeper key is refused rather
        // than recursed into (a long `a[b][b]…` would otherwise exhaust the stack).
        if path.len() > MAX_DEPTH {
            return None;
        }
        let close = rest.find(']')?;
        if !rest.starts_with('[') {
            return None;
        }
        let inner = &rest[1..close];
        path.push(if inner.is_empty() {
            Seg::Push
        } else if let Ok(i) = inner.parse::<usize>() {
            // Stripe caps list parameters far below this; a huge index is not a list.
            if i > 10_000 {
                return None;
            }
            Seg::Index(i)
        } else {
            Seg::Key(inner.to_owned())
        });
        rest = &rest[close + 1..];
    }
    Some(path)
}

/// Arrays are built as objects keyed by index (so `items[1]` may arrive before `items[0]`), then
/// turned into arrays in index order by [`compact_arrays`].
const ARRAY_MARK: &str = "\u{0}array";

fn insert(node: &mut Value, path: &[Seg], value: String) -> Result<(), ()> {
    let Some((first, rest)) = path.split_first() else {
        *node = Value::String(value);
        return Ok(());
    };
    let map = match node {
        Value::Object(map) => map,
        Value::Null => {
            *node = Value::Object(Map::new());
            node.as_object_mut().ok_or(())?
        }
        _ => return Err(()),
    };
    let key = match first {
        Seg::Key(k) => k.clone(),
        Seg::Index(i) => {
            map.insert(ARRAY_MARK.into(), Value::Bool(true));
            format!("{i:010}")
        }
        Seg::Push => {
            map.insert(ARRAY_MARK.into(), Value::Bool(true));
            format!("{:010}", map.len())
        }
    };
    let child = map.entry(key).or_insert(Value::Null);
    insert(child, rest, value)
}

fn compact_arrays(node: Value) -> Value {
    match node {
        Value::Object(mut map) => {
            let is_array = map.remove(ARRAY_MARK).is_some();
            let mut entries: Vec<(String, Value)> =
                map.into_iter().map(|(k, v)| (k, compact_arrays(v))).collect();
            if is_array {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(entries.into_iter().collect())
            }
        }
        other => other,
    }
}

/// Typed reads of decoded parameters, each naming the parameter in its error.
pub trait Params {
    fn str_param(&self, name: &str) -> Option<&str>;
    fn required_str(&self, name: &str) -> Result<&str, StripeError>;
    fn int_param(&self, name: &str) -> Result<Option<i64>, StripeError>;
    fn bool_param(&self, name: &str) -> Result<Option<bool>, StripeError>;
    fn list_param(&self, name: &str) -> &[Value];
}

impl Params for Value {
    fn str_param(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    fn required_str(&self, name: &str) -> Result<&str, StripeError> {
        match self.str_param(name) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(StripeError::missing(name)),
        }
    }

    fn int_param(&self, name: &str) -> Result<Option<i64>, StripeError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| StripeError::invalid_integer(name)),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| StripeError::invalid_integer(name)),
            Some(_) => Err(StripeError::invalid_integer(name)),
        }
    }

    fn bool_param(&self, name: &str) -> Result<Option<bool>, StripeError> {
        match self.get(name).and_then(Value::as_str) {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(StripeError::invalid(name, "Invalid boolean: must be one of true or false")),
        }
    }

    fn list_param(&self, name: &str) -> &[Value] {
        self.get(name).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_keys_lists_and_pushes_decode_into_a_tree() {
        let raw = "items[1][price]=p2&items[0][price]=p1&items[0][quantity]=3&expand[]=a&expand[]=b\
                   &metadata[hydra_tenant_id]=t1&subscription_details[items][0][id]=si_1&name=A+B%26C";
        assert_eq!(
            decode(raw.as_bytes()).unwrap(),
            json!({
                "items": [{"price": "p1", "quantity": "3"}, {"price": "p2"}],
                "expand": ["a", "b"],
                "metadata": {"hydra_tenant_id": "t1"},
                "subscription_details": {"items": [{"id": "si_1"}]},
                "name": "A B&C",
            })
        );
    }

    #[test]
    fn percent_encoded_brackets_and_indexed_scalars_are_accepted() {
        assert_eq!(decode(b"expand%5B0%5D=x&expand%5B1%5D=y").unwrap(), json!({"expand": ["x", "y"]}));
    }

    #[test]
    fn malformed_or_conflicting_keys_are_refused() {
        assert!(decode(b"[x]=1").is_err());
        assert!(decode(b"a[b=1").is_err());
        assert!(decode(b"a=1&a[b]=2").is_err());
        assert!(decode(b"a[99999999]=1").is_err());
        assert!(decode(b"%00array[]=b&a=1").is_err(), "a key posing as the array mark");
        // A key nested past any parameter Stripe has is refused, not recursed into.
        let deep = format!("a{}=1", "[b]".repeat(100_000));
        assert!(decode(deep.as_bytes()).is_err());
    }

    #[test]
    fn typed_reads_name_the_parameter() {
        let p = decode(b"quantity=x&n=5&flag=true&empty=").unwrap();
        assert_eq!(p.int_param("n").unwrap(), Some(5));
        assert_eq!(p.int_param("empty").unwrap(), None);
        assert_eq!(p.int_param("quantity").unwrap_err().param.as_deref(), Some("quantity"));
        assert_eq!(p.bool_param("flag").unwrap(), Some(true));
        assert_eq!(p.required_str("missing").unwrap_err().code.as_deref(), Some("parameter_missing"));
    }
}
