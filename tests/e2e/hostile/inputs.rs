//! Hostile input that does not come over HTTP: commands pushed into `cmds_queue` (garbage,
//! over `--max-command`, a job key of the wrong type, durations near `u64::MAX`), statsd
//! garbage over UDP to agent 1:1, and jobs whose output is hostile to the agent's log parser
//! and result limit.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{command, execute};

use super::{case, Case, Seen, World};

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    garbage_commands(&mut cases);
    huge_durations(&mut cases);
    stuck_commands(&mut cases);
    job_output(&mut cases);
    // Last: a flood of metric names makes agent 1:1's stats posts large.
    statsd(&mut cases);
    cases
}

/// The newest dead letter whose `raw` satisfies `matches`, within `limit`.
fn dead_letter(
    w: &World,
    matches: impl Fn(&str) -> bool,
    limit: Duration,
) -> Result<Value, String> {
    let start = Instant::now();
    loop {
        // Newest first, and only the head: a 10 MB letter must not be read again and again.
        let items: Vec<Vec<u8>> = w
            .client
            .query(redis::cmd("LRANGE").arg("cmds_queue:dead").arg(0).arg(199));
        let found = items
            .iter()
            .filter_map(|i| serde_json::from_slice::<Value>(i).ok())
            .find(|d| d["raw"].as_str().is_some_and(&matches));
        match found {
            Some(d) if d["reason"].as_str().is_some_and(|r| !r.is_empty()) => return Ok(d),
            Some(d) => {
                return Err(format!(
                    "dead letter without a reason: {}",
                    short(&d.to_string())
                ))
            }
            None if start.elapsed() > limit => {
                return Err(format!("no dead letter within {limit:?}"))
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn short(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        format!("{cut}… ({} bytes)", text.len())
    } else {
        cut
    }
}

/// The `ERROR` answer of job `id`, with a reason.
fn error_result(w: &World, id: &str) -> Result<String, String> {
    match w.client.result(id, Duration::from_secs(30)) {
        Some(r) if r["state"] == "ERROR" && r["data"].as_str().is_some_and(|d| !d.is_empty()) => {
            Ok(short(r["data"].as_str().unwrap_or("")))
        }
        Some(r) => Err(format!(
            "want an ERROR with a reason, got {}",
            short(&r.to_string())
        )),
        None => Err("no result within 30 s".into()),
    }
}

fn garbage_commands(cases: &mut Vec<Case>) {
    let deep_args = format!(
        r#"{{"id":"deep-{}","gid":1,"nid":1,"cmd":"execute","args":{{"cmd":"/bin/true","env":{}{}}}}}"#,
        uuid::Uuid::new_v4(),
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let raws = [
        ("not JSON", format!("not json {}", uuid::Uuid::new_v4())),
        ("a lone brace", format!("{{ {}", uuid::Uuid::new_v4())),
        (
            "control bytes",
            format!("\u{0}\u{1}\u{2}{}", uuid::Uuid::new_v4()),
        ),
        ("a JSON array", format!("[\"{}\"]", uuid::Uuid::new_v4())),
        ("a JSON string", format!("\"{}\"", uuid::Uuid::new_v4())),
        (
            "an object without an id",
            format!(
                r#"{{"gid":1,"nid":1,"cmd":"ping","x":"{}"}}"#,
                uuid::Uuid::new_v4()
            ),
        ),
        ("args 10000 arrays deep", deep_args),
    ];
    for (name, raw) in raws {
        cases.push(case(format!("cmds_queue: {name}"), move |w| {
            w.client.push_raw(&raw);
            let d = dead_letter(w, |r| r == raw, Duration::from_secs(30))?;
            Ok(format!(
                "dead-lettered: {}",
                short(d["reason"].as_str().unwrap_or(""))
            ))
        }));
    }
    cases.push(case("cmds_queue: an id with a Redis hash tag", |w| {
        let id = format!("tag{{{}}}", uuid::Uuid::new_v4());
        w.client
            .push(&json!({"id": id, "gid": 1, "nid": 1, "cmd": "ping"}));
        error_result(w, &id)
    }));
    for (name, mb) in [
        ("a 2 MB command (over --max-command 1 MiB)", 2),
        ("a 10 MB command", 10),
    ] {
        cases.push(case(format!("cmds_queue: {name}"), move |w| {
            let padding = "x".repeat(mb << 20);
            let cmd = execute(1, 1, "/bin/echo", &[&padding]);
            let id = cmd["id"].as_str().expect("id").to_owned();
            let raw = cmd.to_string();
            let prefix = raw[..raw.find(",\"nid\"").unwrap_or(60).min(120)].to_owned();
            w.client.push_raw(&raw);
            let answer = error_result(w, &id);
            let d = dead_letter(
                w,
                |r| r.starts_with(&prefix) || r.contains(&id),
                Duration::from_secs(30),
            );
            match (answer, d) {
                (Ok(why), Ok(_)) => Ok(format!("ERROR and dead-lettered: {why}")),
                (a, d) => Err(format!(
                    "answer: {a:?}; dead letter: {:?}",
                    d.map(|v| short(&v.to_string()))
                )),
            }
        }));
    }
}

fn huge_durations(cases: &mut Vec<Case>) {
    let durations: [(&str, &str, Value, bool); 6] = [
        ("execute", "max_time", json!(u64::MAX), true),
        ("execute", "max_time", json!(i64::MIN), true),
        ("execute", "max_time", json!(1.8446744073709552e19), false),
        ("execute", "recurring_period", json!(u64::MAX - 1), true),
        ("execute", "stats_interval", json!(u64::MAX), true),
        ("ping", "max_wait", json!(u64::MAX), true),
    ];
    for (cmd, field, value, named) in durations {
        cases.push(case(
            format!("cmds_queue: {cmd} with {field} {value}"),
            move |w| {
                let mut args = json!({field: value.clone()});
                if cmd == "execute" {
                    args["cmd"] = json!("/bin/true");
                }
                let c = command(1, 1, cmd, args);
                w.client.push(&c);
                let why = error_result(w, c["id"].as_str().expect("id"))?;
                if named && !why.contains(field) {
                    return Err(format!("the reason does not name `{field}`: {why}"));
                }
                Ok(why)
            },
        ));
    }
}

/// A command Redis refuses to record (its `job:<id>` is a string): tried `--route-tries` times,
/// then dead-lettered, without holding up the commands behind it.
fn stuck_commands(cases: &mut Vec<Case>) {
    cases.push(case(
        "cmds_queue: a job key that already exists as a string (WRONGTYPE)",
        |w| {
            let id = format!("wrongtype-{}", uuid::Uuid::new_v4());
            let () = w
                .client
                .query(redis::cmd("SET").arg(format!("job:{id}")).arg("occupied"));
            let raw = json!({"id": id, "gid": 1, "nid": 2, "cmd": "ping"}).to_string();
            w.client.push_raw(&raw);
            // The commands behind it are routed meanwhile.
            let behind = command(1, 2, "ping", json!({}));
            w.client.push(&behind);
            let start = Instant::now();
            let passed = w
                .client
                .result(behind["id"].as_str().expect("id"), Duration::from_secs(30));
            if passed.as_ref().is_none_or(|r| r["state"] != "OK") {
                return Err(format!("a ping pushed behind it: {passed:?}"));
            }
            let routed_after = start.elapsed();
            let d = dead_letter(w, |r| r == raw, Duration::from_secs(60))?;
            Ok(format!(
                "a ping behind it answered after {routed_after:.1?}; dead-lettered: {}",
                short(d["reason"].as_str().unwrap_or(""))
            ))
        },
    ));
}

fn statsd(cases: &mut Vec<Case>) {
    let send = |w: &World, datagrams: &[Vec<u8>]| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
        for d in datagrams {
            // A datagram the kernel refuses (too big) is not the agent's business.
            let _ = socket.send_to(d, w.statsd);
        }
    };
    cases.push(case("statsd: 500 datagrams of random bytes", move |w| {
        let mut x = uuid::Uuid::new_v4().as_u64_pair().0 | 1;
        let datagrams: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                (0..(i * 37 % 1400 + 1))
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        send(w, &datagrams);
        statsd_alive(w)
    }));
    cases.push(case(
        "statsd: the largest datagram, all separators",
        move |w| {
            send(
                w,
                &[
                    ":|@\n".repeat(65_507 / 4).into_bytes(),
                    vec![b'\n'; 65_507],
                    vec![b':'; 65_507],
                ],
            );
            statsd_alive(w)
        },
    ));
    cases.push(case("statsd: lines no parser should accept", move |w| {
        let long_name = "n".repeat(5000);
        let lines = [
            "a:1|c|@0",
            ":1|c",
            "a:|c",
            "a:nan|g",
            "a:inf|ms",
            "a:-inf|h",
            "a:1e999|h",
            "a:1|zz",
            "|||",
            "::::",
            "a:1|c|@-1",
            "a:1|c|@abc",
            "a:1|c|@1e999",
            "a:+1e308|g",
            "a:-1e308|g",
            "a:1:2:3|c",
            "a:1|s|",
            "a:0x10|c",
            "a:1|c|#tag:x",
            "a:1|ms|@0.0000000001",
            &format!("{long_name}:1|c"),
            &format!("a:{}|s", "m".repeat(60_000)),
        ];
        send(w, &[lines.join("\n").into_bytes()]);
        statsd_alive(w)
    }));
    cases.push(case("statsd: invalid UTF-8 and NUL bytes", move |w| {
        send(
            w,
            &[b"\xff\xfe:1|c\n\0\0\0:1|g\nok\xc3\x28:1|c\n\xed\xa0\x80:1|ms".to_vec()],
        );
        statsd_alive(w)
    }));
    cases.push(case("statsd: 5000 distinct metric names", move |w| {
        let datagrams: Vec<Vec<u8>> = (0..50)
            .map(|d| {
                (0..100)
                    .map(|i| format!("hostile.many.m{d}_{i}:1|c\n"))
                    .collect::<String>()
                    .into_bytes()
            })
            .collect();
        send(w, &datagrams);
        statsd_alive(w)
    }));
}

/// After garbage: a valid counter sent to agent 1:1's statsd port is flushed and reaches the
/// controller (`stats:{1:1}:latest` holds it with an epoch after it was sent).
fn statsd_alive(w: &World) -> Seen {
    const KEY: &str = "hostile.alive";
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let sent = schemas::now_ms();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let _ = socket.send_to(format!("{KEY}:1|c").as_bytes(), w.statsd);
        let latest = w.client.hget_json("stats:{1:1}:latest", KEY);
        if latest.is_some_and(|v| v["epoch"].as_u64().is_some_and(|e| e >= sent)) {
            let invalid = w
                .client
                .hget_json("stats:{1:1}:latest", "jsagent.statsd.invalid");
            let invalid = invalid
                .map(|v| v["sum"].to_string())
                .unwrap_or_else(|| "-".into());
            return Ok(format!(
                "a valid counter arrived after {:.1?} (jsagent.statsd.invalid in the last flush: {invalid})",
                start.elapsed()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = w.agents[0].logs();
    let last_warning = logs
        .lines()
        .rev()
        .find(|l| l.contains("WARN") || l.contains("ERROR"));
    Err(format!(
        "{KEY} not flushed to stats:{{1:1}}:latest within 60 s; agent 1:1's last warning: {}",
        last_warning.unwrap_or("none")
    ))
}

/// Jobs whose output attacks the agent: lines and results far over the 1 MiB result limit,
/// bytes that are not text, blocks never closed, a flood of lines.
fn job_output(cases: &mut Vec<Case>) {
    let scripts = [
        (
            "a 3 MB stdout line and a 3 MB result message (result limit 1 MiB)",
            "head -c 3000000 /dev/zero | tr '\\0' x; echo; printf '20::\"'; head -c 3000000 /dev/zero | tr '\\0' y; printf '\"\\n'",
        ),
        (
            "invalid UTF-8, NUL bytes and a block never closed",
            "printf '\\377\\376\\000abc\\n2::\\377\\n9:::\\nnever closed\\n' ; printf '\\377' >&2",
        ),
        ("100000 lines at once", "seq 1 100000; seq 1 100000 >&2"),
    ];
    for (name, script) in scripts {
        cases.push(case(format!("job output: {name}"), move |w| {
            let cmd = execute(1, 1, "/bin/sh", &["-c", script]);
            w.client.push(&cmd);
            let Some(r) = w
                .client
                .result(cmd["id"].as_str().expect("id"), Duration::from_secs(90))
            else {
                return Err("no result within 90 s".into());
            };
            let size = r.to_string().len();
            if r["state"] != "OK" {
                return Err(format!(
                    "state {}: {}",
                    r["state"],
                    short(&r["data"].to_string())
                ));
            }
            if size > (1 << 20) + (16 << 10) {
                return Err(format!("a result of {size} bytes (over 1 MiB)"));
            }
            Ok(format!("OK, result of {size} bytes"))
        }));
    }
}
