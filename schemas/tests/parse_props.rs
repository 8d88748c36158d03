//! Property tests of [`Command::parse`], the parser every byte pushed onto `cmds_queue` goes
//! through: it never panics, refuses with a reason, and what it accepts round-trips.

use proptest::prelude::*;
use schemas::{Command, CommandKind};
use serde_json::{json, Value};

/// Arbitrary JSON, nested a few levels, with the field names commands use.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            Just("id".to_owned()),
            Just("gid".to_owned()),
            Just("nid".to_owned()),
            Just("cmd".to_owned()),
            Just("args".to_owned()),
            Just("role".to_owned()),
            Just("fanout".to_owned()),
            Just("max_time".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Command::parse(&bytes);
    }

    #[test]
    fn never_panics_on_json_and_refusals_have_reasons(value in any_json()) {
        if let Err((_, e)) = Command::parse(value.to_string().as_bytes()) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn accepted_commands_round_trip(
        id in "[A-Za-z0-9._:-]{1,40}",
        gid in 0u64..1_000_000,
        nid in 0u64..1_000_000,
        exe in "/[a-z]{1,10}",
        args in prop::collection::vec(".{0,10}", 0..4),
        max_time in -1i64..100_000,
    ) {
        let raw = json!({"id": id, "gid": gid, "nid": nid, "cmd": "execute",
                         "args": {"cmd": exe, "args": args, "max_time": max_time}});
        let (cmd, kind) = Command::parse(raw.to_string().as_bytes()).expect("valid command");
        prop_assert_eq!(&cmd.id, &id);
        prop_assert!(matches!(kind, CommandKind::Execute(ref a) if a.max_time == max_time));
        let again = serde_json::to_vec(&cmd).expect("serializes");
        let (back, _) = Command::parse(&again).expect("parses again");
        prop_assert_eq!(back, cmd);
    }
}
