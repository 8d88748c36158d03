//! Stats and host facts end to end: statsd over UDP → agent aggregator → outbox → `POST …/stats`
//! → `stats:{g:n}` and `stats:{g:n}:latest` → `GET /metrics/agents`; `GET /metrics` parsed as
//! Prometheus text while jobs run; the stats endpoint's checks; the info commands' answers
//! against their JSON Schemas.

use std::time::Duration;

use prometheus_parse::{LineInfo, Scrape, Value as PromValue};
use serde_json::{json, Value};
use tests::{command, execute, wait_for, Cluster};

const T: Duration = Duration::from_secs(30);

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Fetches a Prometheus endpoint and parses it strictly: every line must be a comment, a
/// `# HELP`/`# TYPE` line or a sample with a number, and no series may repeat.
fn scrape(c: &Cluster, path: &str) -> Scrape {
    let response = c
        .controller
        .http()
        .get(format!("{}{path}", c.controller.url()))
        .send()
        .expect("GET");
    assert_eq!(response.status(), 200, "{path}");
    let text = response.text().expect("body");
    let mut series = std::collections::HashSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
                assert!(
                    series.insert(format!("{metric_name}{labels:?}")),
                    "repeated series {line:?}"
                );
            }
            LineInfo::Ignored => panic!("{path}: not Prometheus text: {line:?}"),
            _ => {}
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The value of a sample, found by name and labels.
fn sample(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => *v,
            other => panic!("{name} is not a plain sample: {other:?}"),
        })
}

fn hget_json(c: &Cluster, key: &str, field: &str) -> Option<Value> {
    c.client.hget_json(key, field)
}

#[test]
fn udp_statsd_reaches_redis_and_the_agents_metrics_endpoint() {
    let port = free_udp_port();
    let c = Cluster::start_configured(&format!(
        "stats_flush_interval = 0.5\nstatsd_listen = \"127.0.0.1:{port}\"\n"
    ));
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.send_to(
        b"e2e.hits:1|c|@0.5\ne2e.hits:1|c\ne2e.lat:5|ms\ne2e.users:a|s",
        ("127.0.0.1", port),
    )
    .expect("send");

    let hits = wait_for("e2e.hits in stats:{1:1}:latest", T, || {
        hget_json(&c, "stats:{1:1}:latest", "e2e.hits")
    });
    assert_eq!(
        (hits["type"].clone(), hits["sum"].clone()),
        (json!("counter"), json!(3.0))
    );
    assert!(
        hits["epoch"].as_u64().is_some() && hits["interval"].as_f64().is_some(),
        "{hits}"
    );
    let lat = wait_for("e2e.lat", T, || {
        hget_json(&c, "stats:{1:1}:latest", "e2e.lat")
    });
    assert_eq!(
        (lat["count"].clone(), lat["p99"].clone()),
        (json!(1.0), json!(5.0))
    );

    let batches: Vec<schemas::StatsBatch> = c
        .client
        .stream("stats:{1:1}")
        .iter()
        .map(|fields| serde_json::from_str(&fields["batch"]).expect("a stats batch"))
        .collect();
    assert!(batches.iter().all(|b| (b.gid, b.nid) == (1, 1)));
    assert!(batches
        .iter()
        .flat_map(|b| &b.metrics)
        .any(|m| m.key == "e2e.users"));

    let recorded = sample(&scrape(&c, "/metrics"), "jsacc_stats_batches_total", &[]);
    assert!(recorded >= Some(1.0), "{recorded:?}");

    let agents = scrape(&c, "/metrics/agents");
    let labels = [("gid", "1"), ("nid", "1")];
    assert_eq!(sample(&agents, "jsagent_e2e_hits_sum", &labels), Some(3.0));
    assert_eq!(sample(&agents, "jsagent_e2e_lat_p99", &labels), Some(5.0));
    assert_eq!(
        sample(&agents, "jsagent_e2e_users_count", &labels),
        Some(1.0)
    );
}

#[test]
fn metrics_parse_and_their_counters_move_as_jobs_run() {
    let c = Cluster::start(&[&[]]);
    let before = scrape(&c, "/metrics");
    let routed = sample(&before, "jsacc_jobs_routed_total", &[]).expect("routed");
    let ok = sample(&before, "jsacc_jobs_finished_total", &[("state", "OK")]).expect("OK");
    let failed =
        sample(&before, "jsacc_jobs_finished_total", &[("state", "ERROR")]).expect("ERROR");
    for _ in 0..3 {
        assert_eq!(c.client.run(&execute(1, 1, "true", &[]), T)["state"], "OK");
    }
    assert_eq!(
        c.client.run(&execute(1, 1, "false", &[]), T)["state"],
        "ERROR"
    );

    let after = scrape(&c, "/metrics");
    assert_eq!(
        sample(&after, "jsacc_jobs_routed_total", &[]),
        Some(routed + 4.0)
    );
    let finished = |state| sample(&after, "jsacc_jobs_finished_total", &[("state", state)]);
    assert_eq!(
        (finished("OK"), finished("ERROR")),
        (Some(ok + 3.0), Some(failed + 1.0))
    );
    assert_eq!(sample(&after, "jsacc_agents_online", &[]), Some(1.0));
    assert!(sample(&after, "jsacc_cmds_queue_depth", &[]).is_some());
    assert!(sample(&after, "jsacc_polls_parked", &[]).is_some());
    assert_eq!(sample(&after, "jsacc_agent_queues_depth", &[]), Some(0.0));
    assert_eq!(
        sample(&after, "jsacc_agent_delivered_depth", &[]),
        Some(0.0)
    );
    let latency = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "jsacc_http_request_duration_seconds"
                && s.labels.get("route") == Some("result")
        })
        .expect("a latency histogram of result posts");
    match &latency.value {
        PromValue::Histogram(buckets) => {
            let inf = buckets.last().expect("buckets");
            assert!(inf.count >= 1.0, "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

#[test]
fn the_stats_endpoint_checks_its_batches_and_its_caller() {
    let c = Cluster::start(&[&[]]);
    let token = c.agents[0].token();
    let http = c.controller.http();
    let post = |path: &str, token: Option<&str>, body: String| {
        let mut req = http
            .post(format!("{}/v1/agents/{path}/stats", c.controller.url()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t.trim());
        }
        let r = req.send().expect("POST");
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let batch = |gid: u64, kind: &str| {
        json!({"gid": gid, "nid": 1, "epoch": schemas::now_ms(), "interval": 10.0,
               "metrics": [{"key": "ops.web.temp", "type": kind, "value": 21.5}]})
    };
    let good = batch(1, "gauge");
    let body = json!([good, batch(1, "weird"), batch(2, "gauge")]).to_string();
    let (status, answer) = post("1/1", Some(&token), body.clone());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["recorded"], &answer["duplicates"]),
        (&json!(1), &json!(0))
    );
    let rejected: Vec<u64> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| r["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(rejected, [1, 2]);
    // The same post again (its answer was lost, say): nothing is appended twice.
    let (status, again) = post("1/1", Some(&token), body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["recorded"], &again["duplicates"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(again["rejected"].as_array().map(Vec::len), Some(2));
    let copies = c
        .client
        .stream("stats:{1:1}")
        .iter()
        .filter(|e| serde_json::from_str::<Value>(&e["batch"]).ok().as_ref() == Some(&good))
        .count();
    assert_eq!(copies, 1, "the batch is in the stream once");
    let temp = hget_json(&c, "stats:{1:1}:latest", "ops.web.temp").expect("latest value");
    assert_eq!(
        (temp["type"].clone(), temp["value"].clone()),
        (json!("gauge"), json!(21.5))
    );

    let (status, answer) = post("1/1", Some(&token), batch(1, "weird").to_string());
    assert_eq!(
        (status, answer["error"].clone()),
        (400, json!("bad_request"))
    );
    assert_eq!(post("1/1", Some(&token), "not json".into()).0, 400);
    assert_eq!(post("1/1", None, batch(1, "gauge").to_string()).0, 401);
    assert_eq!(
        post("1/7", Some(&token), batch(1, "gauge").to_string()).0,
        403
    );
}

#[test]
fn host_facts_answer_documents_that_validate_against_their_schemas() {
    let c = Cluster::start(&[&[]]);
    for (cmd, schema) in [
        ("get_os_info", "os_info"),
        ("get_cpu_info", "cpu_info"),
        ("get_mem_info", "mem_info"),
        ("get_disk_info", "disk_info"),
        ("get_nic_info", "nic_info"),
    ] {
        let r = c.client.run(&command(1, 1, cmd, json!({})), T);
        assert_eq!(r["state"], "OK", "{r}");
        let path = format!(
            "{}/../schemas/{schema}.schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("schema file");
        let validator = jsonschema::validator_for(&serde_json::from_str(&text).expect("JSON"))
            .expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&r["data"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{cmd}: {errors:?}\n{:#}", r["data"]);
    }
}

#[test]
fn ten_processes_with_the_same_domain_and_name_are_summed_into_one_series() {
    let c = Cluster::start_configured("stats_interval = 1\nstats_flush_interval = 1\n");
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut job = tests::execute(1, 1, "sleep", &["60"]);
        job["args"]["domain"] = json!("ops");
        job["args"]["name"] = json!("ten");
        ids.push(job["id"].as_str().expect("id").to_owned());
        c.client.push(&job);
    }
    let processes = wait_for("ten sleeps summed in ops.ten.process.processes", T, || {
        let v = hget_json(&c, "stats:{1:1}:latest", "ops.ten.process.processes")?;
        (v["value"] == json!(10.0)).then_some(v)
    });
    assert_eq!(processes["type"], "gauge");
    let rss = hget_json(&c, "stats:{1:1}:latest", "ops.ten.process.rss").expect("rss");
    assert!(rss["value"].as_f64().expect("rss value") > 0.0, "{rss}");
    // One series: no per-job keys.
    let keys: Vec<String> = redis::cmd("HKEYS")
        .arg("stats:{1:1}:latest")
        .query(&mut c.client.blocking())
        .expect("HKEYS");
    assert!(
        keys.iter()
            .all(|k| !ids.iter().any(|id| k.contains(id.as_str()))),
        "{keys:?}"
    );
    let killall = tests::command(1, 1, "killall", json!({}));
    assert_eq!(c.client.run(&killall, T)["state"], "OK");
}

#[test]
fn a_jobs_level_10_lines_are_aggregated_under_its_domain_and_name() {
    let c = Cluster::start_configured("stats_flush_interval = 1\n");
    let script =
        "echo '10::hits:2|c'; printf '10:::\\nhits:3|c\\nlat:5|ms\\nnot a metric\\n:::\\n'";
    let mut job = tests::execute(1, 1, "sh", &["-c", script]);
    job["args"]["domain"] = json!("app");
    job["args"]["name"] = json!("worker");
    let r = c.client.run(&job, T);
    assert_eq!(r["state"], "OK", "{r}");
    let hits = wait_for("app.worker.hits in stats:{1:1}:latest", T, || {
        hget_json(&c, "stats:{1:1}:latest", "app.worker.hits")
    });
    assert_eq!(
        (hits["type"].clone(), hits["sum"].clone()),
        (json!("counter"), json!(5.0))
    );
    let lat = hget_json(&c, "stats:{1:1}:latest", "app.worker.lat").expect("timer");
    assert_eq!(lat["count"], json!(1.0), "{lat}");
}
