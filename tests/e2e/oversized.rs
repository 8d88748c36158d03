//! Oversized results (issue 10, item 2): a job whose output would make a result larger than the
//! controller takes still gets its final result — shortened to 1 MiB by the agent, or, when the
//! controller refuses even that, an `ERROR` result saying why. Before, the controller answered
//! 413, the agent dropped the result and the job stayed `RUNNING` for ever.

use std::time::Duration;

use serde_json::Value;
use tests::{execute, Cluster, ControllerOpts};

const T: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;

/// A shell command printing `lines` lines `<i>:xxxx…` of `width` bytes to stdout, and as many to
/// stderr.
fn printer(lines: usize, width: usize) -> String {
    format!(
        "awk 'BEGIN {{ s = \"x\"; while (length(s) < {width}) s = s s; s = substr(s, 1, {width}); \
         for (i = 0; i < {lines}; i++) {{ print i \":\" s; print i \":\" s > \"/dev/stderr\" }} }}'"
    )
}

/// The results of a job as Redis holds them, raw.
fn raw_results(c: &Cluster, id: &str) -> Vec<String> {
    c.client.query(
        redis::cmd("LRANGE")
            .arg(format!("cmds_queue_{id}"))
            .arg(0)
            .arg(-1),
    )
}

/// 200 lines of 100 KB on each stream: 40 MB printed, tails of 2 × 200 × 64 KiB — a result of
/// 25 MiB, over the controller's default `--max-body` of 16 MiB.
#[test]
fn a_result_over_the_controllers_limit_arrives_shortened_to_one_mib() {
    let c = Cluster::start(&[&[]]);
    let cmd = execute(1, 1, "sh", &["-c", &printer(200, 100_000)]);
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    let r = c
        .client
        .result(&id, T)
        .unwrap_or_else(|| panic!("no result within {T:?}\n{}", c.dump()));
    assert_eq!(
        (r["state"].as_str(), r["exit_code"].as_i64()),
        (Some("OK"), Some(0)),
        "{}",
        c.dump()
    );
    let raw = raw_results(&c, &id);
    assert!(raw.iter().all(|r| r.len() <= MIB), "a result over 1 MiB");
    for (fd, stream) in r["streams"].as_array().expect("streams").iter().enumerate() {
        let stream = stream.as_str().expect("a stream is text");
        assert!(stream.len() <= MIB, "stream {fd}: {} bytes", stream.len());
        let mut lines = stream.lines();
        let first = lines.next().expect("a first line");
        assert!(
            first.starts_with("… ") && first.ends_with(" bytes cut (result limit 1 MiB)"),
            "stream {fd} starts with {first:?}"
        );
        let kept: Vec<&str> = lines.collect();
        assert!(kept.len() >= 2, "stream {fd} kept {} lines", kept.len());
        // The newest lines, each cut at 64 KiB and marked.
        let last = kept.last().expect("a last line");
        assert!(last.starts_with("199:xxx"), "{}", &last[..20]);
        assert!(
            last.ends_with(" … [34468 bytes cut]"),
            "{}",
            &last[last.len() - 40..]
        );
    }
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("OK"));
}

/// With a `--max-body` below the agent's 1 MiB, even a shortened result can be refused: the job
/// then ends `ERROR`, saying why, instead of staying `RUNNING`.
#[test]
fn a_result_the_controller_still_refuses_ends_the_job_with_an_error_saying_why() {
    let opts = ControllerOpts {
        extra: vec!["--max-body".into(), "200000".into()],
        ..Default::default()
    };
    let c = Cluster::start_with(&[&[]], opts);
    // 2 × 30 lines of 10 KB: 600 KB, under the agent's limit, over the controller's.
    let cmd = execute(1, 1, "sh", &["-c", &printer(30, 10_000)]);
    let id = cmd["id"].as_str().expect("id").to_owned();
    c.client.push(&cmd);
    let r = c
        .client
        .result(&id, T)
        .unwrap_or_else(|| panic!("no result within {T:?}\n{}", c.dump()));
    assert_eq!(r["state"].as_str(), Some("ERROR"), "{r}");
    let data = r["data"].as_str().expect("a reason");
    assert!(
        data.starts_with("result of ") && data.contains("refused by the controller (413 too large"),
        "{data}"
    );
    assert!(
        data.contains("200000"),
        "the controller's limit is named: {data}"
    );
    assert_eq!(r["streams"], serde_json::json!(["", ""]));
    assert_eq!(r["args"], cmd["args"]);
    assert_eq!(c.client.job_field(&id, "state").as_deref(), Some("ERROR"));
    // A small result still passes through the same controller.
    let small = execute(1, 1, "echo", &["hello"]);
    let r = c.client.run(&small, T);
    assert_eq!(r["state"].as_str(), Some("OK"), "{r}");
    assert_eq!(r["streams"][0], Value::from("hello\n"));
}
