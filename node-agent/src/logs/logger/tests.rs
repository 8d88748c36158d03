use super::*;
use crate::logs::logline::{parse_all, Stream};
use crate::store::OutboxKind;
use serde_json::json;

/// A kit whose config points at a data dir of its own (the kit's dispatcher has a log store).
async fn kit(name: &str) -> crate::testkit::Kit {
    let mut kit = crate::testkit::kit(name).await;
    kit.config.data_dir = kit.dir.join("own");
    kit
}

fn args(extra: Value) -> ExecuteArgs {
    let mut base = json!({"domain": "ops", "name": "backup", "cmd": "true"});
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(base).unwrap()
}

fn parsed(text: &str) -> Vec<Parsed> {
    parse_all(Stream::Stdout, text.as_bytes())
}

/// The messages stored, as (level, data).
async fn stored(logs: &Logs, jobid: &str) -> Vec<(u64, String)> {
    logs.flush().await;
    let all = logs
        .get_msgs(MsgFilter {
            jobid: Some(jobid.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["level"].as_u64().unwrap(),
                m["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The messages forwarded to the outbox, as (level, data).
async fn forwarded(logs: &Logs, store: &Store) -> Vec<(u64, String)> {
    logs.flush().await;
    let rows = store.outbox_take(OutboxKind::Logs, 100).await.unwrap();
    rows.iter()
        .flat_map(|r| serde_json::from_str::<Vec<Value>>(&r.body).unwrap())
        .map(|m| {
            (
                m["level"].as_u64().unwrap(),
                m["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn owned(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
    pairs.iter().map(|(l, s)| (*l, (*s).to_owned())).collect()
}

#[tokio::test]
async fn a_bad_filter_names_its_argument() {
    let kit = kit("logger-bad").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    for key in ["loglevels", "loglevels_db", "loglevels_ac"] {
        let Err(reason) = logs.job_logger("j", &args(json!({key: "1-x"}))) else {
            panic!("{key} accepted")
        };
        assert!(reason.starts_with(&format!("bad `{key}`")), "{reason}");
    }
    std::fs::remove_dir_all(kit.dir).unwrap();
}

#[tokio::test]
async fn defaults_store_everything_and_forward_warnings_and_errors() {
    let kit = kit("logger-defaults").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let job = logs.job_logger("j", &args(json!({}))).unwrap();
    job.log(parsed("out\n3::users\n7::careful\n8::broken\n9::down\n"))
        .await
        .unwrap();
    let all = owned(&[
        (1, "out"),
        (3, "users"),
        (7, "careful"),
        (8, "broken"),
        (9, "down"),
    ]);
    assert_eq!(stored(&logs, "j").await, all);
    assert_eq!(forwarded(&logs, &kit.store).await, all[2..]);
    std::fs::remove_dir_all(kit.dir).unwrap();
}

#[tokio::test]
async fn job_filters_choose_what_is_processed_stored_and_forwarded() {
    let kit = kit("logger-filters").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let filters = json!({"loglevels": "1-8", "loglevels_db": "1,3", "loglevels_ac": "3-9"});
    let job = logs.job_logger("j", &args(filters)).unwrap();
    job.log(parsed("out\n3::users\n5::log\n9::ignored\n"))
        .await
        .unwrap();
    assert_eq!(stored(&logs, "j").await, owned(&[(1, "out"), (3, "users")]));
    assert_eq!(
        forwarded(&logs, &kit.store).await,
        owned(&[(3, "users"), (5, "log")])
    );
    assert_eq!(job.captured().critical, "", "level 9 is not processed");
    std::fs::remove_dir_all(kit.dir).unwrap();
}

#[tokio::test]
async fn the_result_keeps_the_last_result_message_and_critical() {
    let kit = kit("logger-captured").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let job = logs.job_logger("j", &args(json!({}))).unwrap();
    assert_eq!(job.captured(), Captured::default());
    job.log(parsed(
        "20::{\"a\":1}\n9::first\n21:::\nb: 2\nc: 3\n:::\n9::second\nplain\n",
    ))
    .await
    .unwrap();
    let want = Captured {
        data: "b: 2\nc: 3".into(),
        level: 21,
        critical: "second".into(),
    };
    assert_eq!(job.captured(), want);
    std::fs::remove_dir_all(kit.dir).unwrap();
}

#[tokio::test]
async fn statsd_blocks_go_to_the_sink_and_invalid_lines_warn() {
    let kit = kit("logger-statsd").await;
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink: StatsSink = {
        let seen = seen.clone();
        Arc::new(move |prefix: &str, text: &str| {
            seen.lock().unwrap().push((prefix.into(), text.into()));
            text.lines().filter(|l| !l.contains('|')).count()
        })
    };
    let logs = Logs::start(&kit.config, kit.store.clone(), Some(sink))
        .await
        .unwrap();
    let job = logs.job_logger("j", &args(json!({}))).unwrap();
    job.log(parsed("10:::\nhits:1|c\nnonsense\n:::\n"))
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [("ops.backup.".to_owned(), "hits:1|c\nnonsense".to_owned())]
    );
    let got = stored(&logs, "j").await;
    assert_eq!(got[0], (7, "1 invalid statsd line(s) ignored".to_owned()));
    assert_eq!(got[1].0, 10);
    std::fs::remove_dir_all(kit.dir).unwrap();
}

#[tokio::test]
async fn an_alert_is_forwarded_whatever_the_filters() {
    let mut kit = kit("logger-alert").await;
    kit.config.loglevels_ac = "1".into();
    kit.config.loglevels_db = "1".into();
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    logs.alert("j", "ops", "backup", "gave up after 3 restarts")
        .await;
    let want = owned(&[(9, "gave up after 3 restarts")]);
    assert_eq!(forwarded(&logs, &kit.store).await, want);
    assert_eq!(stored(&logs, "j").await, want);
    std::fs::remove_dir_all(kit.dir).unwrap();
}

#[tokio::test]
async fn del_msgs_answers_the_count_and_bad_levels_are_errors() {
    let kit = kit("logger-del").await;
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .unwrap();
    let job = logs.job_logger("j", &args(json!({}))).unwrap();
    job.log(parsed("a\nb\n7::c\n")).await.unwrap();
    logs.flush().await;
    let ones = MsgFilter {
        levels: Some("1".into()),
        ..Default::default()
    };
    assert_eq!(logs.del_msgs(ones).await.unwrap(), json!(2));
    assert_eq!(stored(&logs, "j").await, owned(&[(7, "c")]));
    let bad = MsgFilter {
        levels: Some("x".into()),
        ..Default::default()
    };
    assert!(logs
        .get_msgs(bad)
        .await
        .unwrap_err()
        .starts_with("bad `levels`"));
    std::fs::remove_dir_all(kit.dir).unwrap();
}
