//! Checking what agents post before anything touches Redis: pure functions (fuzzed) that turn
//! a body into typed items, refusing what is wrong with an [`Invalid`] that names it.
//!
//! Results, logs and stats share one shape of intake ([`batch`]): a JSON array whose items are
//! checked one by one, so one bad item is refused alone and the rest are taken; results and
//! stats also take a single object, whose refusal is the whole post's. The operator API's bodies
//! and the enrollment are one object each ([`object`]).

use serde_json::Value;

/// A refused input: a code (`bad_request`, `mismatched_agent`) and a message that says what
/// is wrong. The HTTP layer answers it with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn bad_request(message: impl Into<String>) -> Invalid {
        Invalid {
            code: "bad_request",
            message: message.into(),
        }
    }

    /// A body names another agent than its path.
    pub fn mismatched_agent(named: (u64, u64), path: (u64, u64)) -> Invalid {
        Invalid {
            code: "mismatched_agent",
            message: format!(
                "the body names agent {}:{} but was posted as {}:{}",
                named.0, named.1, path.0, path.1
            ),
        }
    }
}

/// What a posted body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One object, or an array of them (results, stats).
    ObjectOrArray,
    /// An array whose items may themselves be arrays, taken one level deep (logs: the agent
    /// posts one outbox row, itself an array, per item).
    NestedArray,
}

/// The items of a post, checked one by one.
#[derive(Debug)]
pub struct Batch<T> {
    /// The accepted items, in order.
    pub valid: Vec<T>,
    /// The refused items, in order.
    pub refused: Vec<Refused>,
    /// The body was one object, not an array.
    pub single: bool,
}

/// An item [`batch`] refused.
#[derive(Debug)]
pub struct Refused {
    /// Its position among the items (after flattening, for [`Shape::NestedArray`]).
    pub index: usize,
    /// Its `id` field, or "" when it has none.
    pub id: String,
    pub why: Invalid,
}

/// Parses `body` as `shape` and checks each item with `check`. A body that is not JSON or not
/// of the shape is an error naming `expected`; so is a single object that `check` refuses.
pub fn batch<T>(
    body: &[u8],
    shape: Shape,
    expected: &str,
    mut check: impl FnMut(Value) -> Result<T, Invalid>,
) -> Result<Batch<T>, Invalid> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Invalid::bad_request(format!("not JSON: {e}")))?;
    let items = match (value, shape) {
        (item @ Value::Object(_), Shape::ObjectOrArray) => {
            return Ok(Batch {
                valid: vec![check(item)?],
                refused: Vec::new(),
                single: true,
            });
        }
        (Value::Array(items), Shape::ObjectOrArray) => items,
        (Value::Array(items), Shape::NestedArray) => {
            let mut flat = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Array(inner) => flat.extend(inner),
                    other => flat.push(other),
                }
            }
            flat
        }
        _ => return Err(Invalid::bad_request(format!("expected {expected}"))),
    };
    let mut batch = Batch {
        valid: Vec::with_capacity(items.len()),
        refused: Vec::new(),
        single: false,
    };
    for (index, item) in items.into_iter().enumerate() {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match check(item) {
            Ok(t) => batch.valid.push(t),
            Err(why) => batch.refused.push(Refused { index, id, why }),
        }
    }
    Ok(batch)
}

/// Reads `body` as one JSON object of type `T` (`what` names it in refusals). A refusal names
/// the field that does not fit (`what: gid: invalid type: string "x", expected u64`); a JSON
/// array is refused rather than taken as the fields in order, as serde would.
pub fn object<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Invalid::bad_request(format!("{what}: not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Invalid::bad_request(format!(
            "{what}: expected a JSON object"
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let message = match field.as_str() {
            "." => format!("{what}: {}", e.inner()),
            _ => format!("{what}: {field}: {}", e.inner()),
        };
        Invalid::bad_request(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn even(v: Value) -> Result<u64, Invalid> {
        match v.get("n").and_then(Value::as_u64) {
            Some(n) if n % 2 == 0 => Ok(n),
            _ => Err(Invalid::bad_request("odd")),
        }
    }

    #[test]
    fn each_item_is_refused_alone() {
        let body = br#"[{"n": 2}, {"id": "x", "n": 3}, {"n": 4}]"#;
        let b = batch(body, Shape::ObjectOrArray, "numbers", even).unwrap();
        assert_eq!((b.valid, b.single), (vec![2, 4], false));
        assert_eq!((b.refused[0].index, b.refused[0].id.as_str()), (1, "x"));
    }

    #[test]
    fn a_single_object_is_refused_as_the_whole_post() {
        let one = batch(br#"{"n": 2}"#, Shape::ObjectOrArray, "numbers", even).unwrap();
        assert_eq!((one.valid, one.single), (vec![2], true));
        let bad = batch(br#"{"n": 1}"#, Shape::ObjectOrArray, "numbers", even).unwrap_err();
        assert_eq!(bad.message, "odd");
        let nested = batch(br#"{"n": 2}"#, Shape::NestedArray, "an array", even).unwrap_err();
        assert_eq!(nested.message, "expected an array");
    }

    #[test]
    fn nested_arrays_are_taken_one_level_deep() {
        let body = br#"[[{"n": 2}, {"n": 4}], {"n": 6}, [[{"n": 8}]]]"#;
        let b = batch(body, Shape::NestedArray, "an array", even).unwrap();
        assert_eq!(b.valid, vec![2, 4, 6]);
        assert_eq!(b.refused.len(), 1);
    }

    #[test]
    fn what_is_not_json_says_so() {
        for body in [&b"nope"[..], b"42", b"\"x\""] {
            let e = batch(body, Shape::ObjectOrArray, "numbers", even).unwrap_err();
            assert_eq!(e.code, "bad_request");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        gid: u64,
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn an_object_refusal_names_the_field() {
        let pair: Pair = object(br#"{"gid": 3, "name": "x"}"#, "pair").unwrap();
        assert_eq!((pair.gid, pair.name.as_deref()), (3, Some("x")));
        let cases: [(&[u8], &str); 7] = [
            (br#"{"gid": "3"}"#, "pair: gid: invalid type: string"),
            (br#"{"gid": -1}"#, "pair: gid: invalid value: integer `-1`"),
            (br#"{"gid": 1e400}"#, "pair: not JSON"),
            (
                br#"{"gid": 18446744073709551616}"#,
                "pair: gid: invalid type",
            ),
            (
                br#"{"gid": 1, "name": 5}"#,
                "pair: name: invalid type: integer",
            ),
            (br#"{"name": "x"}"#, "pair: missing field `gid`"),
            (
                br#"{"gid": 1, "nam": "x"}"#,
                "pair: nam: unknown field `nam`",
            ),
        ];
        for (body, start) in cases {
            let e = object::<Pair>(body, "pair").unwrap_err();
            assert!(
                e.message.starts_with(start),
                "{}: {}",
                String::from_utf8_lossy(body),
                e.message
            );
        }
    }

    #[test]
    fn an_object_body_is_an_object() {
        for body in [
            &br#"[3, "x"]"#[..],
            b"3",
            b"null",
            b"\"gid\"",
            b"",
            b"{",
            b"\xff",
        ] {
            let e = object::<Pair>(body, "pair").unwrap_err();
            assert_eq!(e.code, "bad_request");
            assert!(e.message.starts_with("pair: "), "{}", e.message);
        }
    }
}
