//! Every example document validates against its JSON Schema and round-trips through the Rust types.

use std::path::{Path, PathBuf};

use schemas::{
    Command, CpuInfo, DiskInfo, JobResult, LogMessage, MemInfo, NicInfo, OsInfo, StatsBatch,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(schema: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&load(&root().join(schema))).expect("schema compiles")
}

/// Examples named `<prefix>.*.json` or `<prefix>.json`.
fn examples(prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == format!("{prefix}.json") || name.starts_with(&format!("{prefix}."))
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no examples for {prefix}");
    found
}

fn check<T: Serialize + DeserializeOwned>(schema: &str, prefix: &str) {
    let v = validator(schema);
    for path in examples(prefix) {
        let doc = load(&path);
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        let typed: T = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = serde_json::to_value(&typed).expect("serializes");
        assert!(
            v.is_valid(&back),
            "{} does not validate after a round trip",
            path.display()
        );
        let again: T = serde_json::from_value(back.clone()).expect("parses again");
        assert_eq!(
            serde_json::to_value(&again).expect("serializes"),
            back,
            "{}",
            path.display()
        );
    }
}

#[test]
fn commands_validate_and_round_trip() {
    check::<Command>("command.schema.json", "command");
    for path in examples("command") {
        let raw = std::fs::read(&path).expect("readable");
        Command::parse(&raw).unwrap_or_else(|(_, e)| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn results_validate_and_round_trip() {
    check::<JobResult>("result.schema.json", "result");
}

#[test]
fn log_messages_validate_and_round_trip() {
    check::<LogMessage>("log_message.schema.json", "log_message");
}

#[test]
fn stats_batches_validate_and_round_trip() {
    check::<StatsBatch>("stats_batch.schema.json", "stats_batch");
}

#[test]
fn host_facts_validate_and_round_trip() {
    check::<OsInfo>("os_info.schema.json", "os_info");
    check::<CpuInfo>("cpu_info.schema.json", "cpu_info");
    check::<MemInfo>("mem_info.schema.json", "mem_info");
    check::<DiskInfo>("disk_info.schema.json", "disk_info");
    check::<NicInfo>("nic_info.schema.json", "nic_info");
}

#[test]
fn schema_refuses_what_the_parser_refuses() {
    let v = validator("command.schema.json");
    for bad in [
        r#"{"gid":1,"nid":1,"cmd":"ping"}"#,
        r#"{"id":"x","gid":1,"cmd":"ping"}"#,
        r#"{"id":"x","gid":1,"nid":1,"role":"web","cmd":"ping"}"#,
        r#"{"id":"x","gid":1,"nid":1,"cmd":"fly"}"#,
        r#"{"id":"x","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"/bin/ls","max_time":"10"}}"#,
        r#"{"id":"a,b","gid":1,"nid":1,"cmd":"ping"}"#,
        r#"{"id":"x","gid":1,"nid":1,"cmd":"execute","args":{"cmd":"/bin/ls","tz":"UTC"}}"#,
    ] {
        let doc: Value = serde_json::from_str(bad).expect("json");
        assert!(!v.is_valid(&doc), "schema accepted {bad}");
        assert!(
            Command::parse(bad.as_bytes()).is_err(),
            "parser accepted {bad}"
        );
    }
}

#[test]
fn stats_schema_wants_the_values_of_each_type() {
    let v = validator("stats_batch.schema.json");
    let batch = |metric: Value| serde_json::json!({"gid": 1, "nid": 1, "epoch": 1, "interval": 10, "metrics": [metric]});
    for bad in [
        serde_json::json!({"key": "a", "type": "counter", "sum": 1}),
        serde_json::json!({"key": "a", "type": "gauge"}),
        serde_json::json!({"key": "a", "type": "timer", "count": 1}),
        serde_json::json!({"key": "a", "type": "set", "count": "3"}),
        serde_json::json!({"key": "a", "type": "meter", "sum": 1}),
    ] {
        assert!(!v.is_valid(&batch(bad.clone())), "accepted {bad}");
    }
    assert!(v.is_valid(&batch(
        serde_json::json!({"key": "a", "type": "counter", "sum": 1, "rate": 0.1})
    )));
}
