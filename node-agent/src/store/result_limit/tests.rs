use proptest::prelude::*;
use schemas::JobState;
use serde_json::json;

use super::*;

const MIB: usize = 1 << 20;

fn result() -> JobResult {
    JobResult::new(
        "job-1",
        1,
        2,
        "execute",
        json!({"cmd": "sh", "args": ["-c", "x"]}),
        JobState::Ok,
    )
}

/// Encodes within `limit`, checks the size and that the contract's type reads it back.
fn encoded(r: &JobResult, limit: usize) -> JobResult {
    let text = encode_within(r, limit).unwrap();
    assert!(
        text.len() <= limit,
        "{} bytes over the limit of {limit}",
        text.len()
    );
    let back: JobResult = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            &back.id,
            back.gid,
            back.nid,
            back.state,
            back.run,
            back.is_final
        ),
        (&r.id, r.gid, r.nid, r.state, r.run, r.is_final)
    );
    back
}

/// `n` lines `line <i> xxxx…` of `width` bytes each, ending with a newline.
fn lines(n: usize, width: usize) -> String {
    (0..n)
        .map(|i| {
            let head = format!("line {i} ");
            format!("{head}{}\n", "x".repeat(width - head.len()))
        })
        .collect()
}

#[test]
fn a_result_that_fits_is_left_as_it_is() {
    let mut r = result();
    r.streams = vec!["out\n".into(), "err\n".into()];
    r.data = json!("{\"ok\": true}");
    assert_eq!(encode(&r).unwrap(), serde_json::to_string(&r).unwrap());
}

#[test]
fn full_tails_keep_their_newest_lines_under_one_mib() {
    // What the tails can hold at most: 1000 lines of 64 KiB, on both streams.
    let mut r = result();
    let out = lines(1000, 64 * 1024);
    r.streams = vec![out.clone(), lines(1000, 64 * 1024)];
    let back = encoded(&r, RESULT_LIMIT);
    let short = &back.streams[0];
    let first = short.lines().next().unwrap();
    assert!(
        first.starts_with("… ") && first.ends_with(" bytes cut (result limit 1 MiB)"),
        "{first}"
    );
    let cut: usize = first[4..first.find(" bytes").unwrap()].parse().unwrap();
    let kept: Vec<&str> = short.lines().skip(1).collect();
    assert!(kept.len() >= 5, "only {} lines kept", kept.len());
    assert!(kept.last().unwrap().starts_with("line 999 "));
    assert!(short.ends_with('\n'));
    // Whole lines, the newest, and the count of what went.
    assert!(out.ends_with(&short[first.len() + 1..]));
    assert_eq!(cut + short.len() - first.len() - 1, out.len());
    // Both streams had the same need: they share the room.
    assert!(back.streams[1].lines().count() == kept.len() + 1);
}

#[test]
fn a_small_stream_is_kept_whole_beside_a_huge_one() {
    let mut r = result();
    r.streams = vec![lines(100, 30_000), "the error\n".into()];
    r.data = json!("small data");
    let back = encoded(&r, MIB);
    assert_eq!(back.streams[1], "the error\n");
    assert_eq!(back.data, json!("small data"));
    assert!(back.streams[0].starts_with("… "));
}

#[test]
fn a_single_line_too_long_keeps_its_beginning_marked() {
    let mut r = result();
    r.streams = vec![format!("{}\n", "y".repeat(300_000)), String::new()];
    let back = encoded(&r, 100_000);
    let short = &back.streams[0];
    let mut parts = short.lines();
    let header = parts.next().unwrap();
    assert!(
        header.ends_with("bytes cut (result limit 100000 bytes)"),
        "{header}"
    );
    let line = parts.next().unwrap();
    assert!(
        line.starts_with("yyyy") && line.ends_with(" bytes cut]"),
        "{line}"
    );
    assert!(line.len() > 90_000, "{} bytes kept", line.len());
}

#[test]
fn large_data_keeps_its_beginning_and_says_how_much_was_cut() {
    let mut r = result();
    let data = format!("{{\"values\": [{}]}}", "1,".repeat(1_000_000));
    r.data = Value::String(data.clone());
    r.level = 20;
    let back = encoded(&r, RESULT_LIMIT);
    let short = back.data.as_str().unwrap();
    let (head, marker) = short.split_at(short.rfind("… ").unwrap());
    assert!(data.starts_with(head));
    assert_eq!(
        marker,
        format!(
            "… {} bytes cut (result limit 1 MiB)",
            data.len() - head.len()
        )
    );
    assert_eq!(back.level, 20);
}

#[test]
fn escaped_characters_count_at_their_escaped_size() {
    // A control character takes 6 bytes in JSON (\u0001): the cut must count them so.
    let mut r = result();
    r.data = Value::String("\u{1}".repeat(50_000));
    r.critical = "\"\\".repeat(20_000);
    encoded(&r, 30_000);
}

/// What `get_msgs` answers: log messages, oldest first.
fn messages(n: usize, size: usize) -> Value {
    let msg = |i: usize| {
        json!({"id": i, "jobid": "j", "domain": "d", "name": "n", "epoch": 1_700_000_000_000u64 + i as u64,
            "level": 5, "data": format!("{i}:{}", "m".repeat(size))})
    };
    Value::Array((0..n).map(msg).collect())
}

#[test]
fn get_msgs_keeps_the_newest_messages_that_fit_and_says_so() {
    let mut r = JobResult::new("g", 1, 2, "get_msgs", json!({}), JobState::Ok);
    r.data = messages(1000, 100_000);
    let back = encoded(&r, RESULT_LIMIT);
    let kept = back.data.as_array().unwrap();
    assert!(kept.len() >= 8, "{} kept", kept.len());
    assert_eq!(kept.last().unwrap()["id"], json!(999));
    // Whole messages, in order.
    for (m, id) in kept.iter().zip(1000 - kept.len()..) {
        assert_eq!(m["id"], json!(id));
        assert_eq!(
            m["data"].as_str().unwrap().len(),
            100_000 + id.to_string().len() + 1
        );
    }
    let note = &back.streams[1];
    assert_eq!(
        note,
        &format!(
            "… data: the first {} of 1000 items were left out, the last {} kept (result limit 1 MiB)",
            1000 - kept.len(),
            kept.len()
        )
    );
}

#[test]
fn a_message_larger_than_the_room_is_itself_cut() {
    let mut r = JobResult::new("g", 1, 2, "get_msgs", json!({}), JobState::Ok);
    r.data = messages(3, 2 * MIB);
    let back = encoded(&r, RESULT_LIMIT);
    let kept = back.data.as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["id"], json!(2));
    assert_eq!(kept[0]["level"], json!(5));
    let data = kept[0]["data"].as_str().unwrap();
    assert!(
        data.starts_with("2:mmm") && data.ends_with("bytes cut (result limit 1 MiB)"),
        "{}",
        &data[data.len() - 60..]
    );
    assert!(back.streams[1].contains("the first 2 of 3 items were left out"));
}

#[test]
fn large_args_are_shortened_member_by_member() {
    let mut r = result();
    r.args = json!({"domain": "ops", "name": "big", "script": "print(1)\n".repeat(300_000)});
    let back = encoded(&r, RESULT_LIMIT);
    assert_eq!(
        (&back.args["domain"], &back.args["name"]),
        (&json!("ops"), &json!("big"))
    );
    let script = back.args["script"].as_str().unwrap();
    assert!(script.starts_with("print(1)\n") && script.ends_with("(result limit 1 MiB)"));
}

#[test]
fn a_run_result_stays_a_run_result() {
    let mut r = result();
    r.run = 7;
    r.is_final = false;
    r.state = JobState::Error;
    r.exit_code = Some(3);
    r.streams = vec![lines(200, 10_000), lines(200, 10_000)];
    let back = encoded(&r, MIB);
    assert_eq!(
        (back.run, back.is_final, back.exit_code),
        (7, false, Some(3))
    );
}

#[test]
fn the_limit_is_named_in_mib_when_it_is_whole_mib() {
    assert_eq!(Label(MIB).to_string(), "result limit 1 MiB");
    assert_eq!(Label(4 * MIB).to_string(), "result limit 4 MiB");
    assert_eq!(Label(200_000).to_string(), "result limit 200000 bytes");
}

#[test]
fn shares_give_small_fields_their_size_and_split_the_rest() {
    assert_eq!(share(&[10, 1000, 1000], 610), [10, 300, 300]);
    assert_eq!(share(&[10, 20], 100), [10, 20]);
    assert_eq!(share(&[500, 100, 0], 300), [200, 100, 0]);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,3000}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 40, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Stream text: any characters (control ones too), in lines.
fn stream() -> impl Strategy<Value = String> {
    prop::collection::vec(("[^\n]{0,2000}", any::<bool>()), 0..12).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(line, nl)| if nl { format!("{line}\n") } else { line })
            .collect()
    })
}

fn job_result() -> impl Strategy<Value = JobResult> {
    (
        "[a-zA-Z0-9._:-]{1,200}",
        "[a-z_]{1,20}",
        prop_oneof![Just(Value::Null), json_value()],
        json_value(),
        (stream(), stream(), ".{0,3000}"),
        (any::<u64>(), 0u64..1000, any::<bool>()),
    )
        .prop_map(
            |(id, cmd, args, data, (out, err, critical), (gid, run, fin))| {
                let mut r = JobResult::new(&id, gid, 3, &cmd, args, JobState::Killed);
                r.data = data;
                r.streams = vec![out, err];
                r.critical = critical;
                r.run = run;
                r.is_final = fin || run == 0;
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_json_always_fits_the_limit_and_reads_back(r in job_result(), limit in 1500usize..40_000) {
        let text = encode_within(&r, limit).unwrap();
        prop_assert!(text.len() <= limit, "{} > {}", text.len(), limit);
        let back: JobResult = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(
            (&back.id, back.gid, back.nid, back.state, back.run, back.is_final, back.streams.len()),
            (&r.id, r.gid, r.nid, r.state, r.run, r.is_final, 2)
        );
        // A result that fits is not touched.
        if serde_json::to_string(&r).unwrap().len() <= limit {
            prop_assert_eq!(back, r);
        }
    }
}
