use std::time::Duration;

use schemas::JobResult;
use serde_json::json;

use super::*;
use crate::logs::Logs;
use crate::testkit::Kit;

/// The checked `[[job]]` tables of `text`, for agent 1:2 (the kit's).
fn configured(text: &str) -> Vec<ConfigJob> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        job: Vec<toml::Table>,
    }
    let file: File = toml::from_str(text).expect("TOML");
    crate::config::jobs::parse(&file.job, 1, 2).expect("valid tables")
}

/// One start of the agent on the kit's store: a fresh supervisor, then the config jobs.
async fn boot(kit: &Kit, jobs: &[ConfigJob]) -> (Supervisor, Booted) {
    let logs = Logs::start(&kit.config, kit.store.clone(), None)
        .await
        .expect("logs");
    let supervisor = Supervisor::new(&kit.config, kit.store.clone(), logs);
    // The kit's dispatcher only words the results of removed jobs here.
    let booted = start(&kit.store, &kit.dispatcher, &supervisor, jobs)
        .await
        .expect("boot");
    (supervisor, booted)
}

/// The results of job `id` in the outbox, waiting until there are at least `n`.
async fn results_of(kit: &Kit, id: &str, n: usize) -> Vec<JobResult> {
    for _ in 0..600 {
        let found: Vec<JobResult> = kit
            .results()
            .await
            .into_iter()
            .filter(|r| r.id == id)
            .collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} results for {id}");
}

const DAEMON: &str = "[[job]]\nid = \"web\"\ncmd = \"sleep\"\nargs = [\"100\"]\n";
const HOURLY: &str = "[[job]]\nid = \"tick\"\ncmd = \"echo\"\nargs = [\"old\"]\nevery = 3600\n";

#[tokio::test]
async fn config_jobs_start_at_boot_under_their_cfg_ids() {
    let kit = crate::testkit::kit("cfg-boot").await;
    let jobs = configured(&format!("{DAEMON}{HOURLY}"));
    let (supervisor, booted) = boot(&kit, &jobs).await;
    assert_eq!(booted.started, 2);
    kit.running("cfg:1:2:web").await;
    let tick = &results_of(&kit, "cfg:1:2:tick", 1).await[0];
    assert_eq!(
        (tick.run, tick.is_final, tick.state),
        (1, false, JobState::Ok)
    );
    assert_eq!(tick.streams[0], "old\n");
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_removed_table_stops_its_job_and_forgets_it() {
    let kit = crate::testkit::kit("cfg-removed").await;
    let (supervisor, _) = boot(&kit, &configured(DAEMON)).await;
    kit.running("cfg:1:2:web").await;
    supervisor.shutdown(Duration::from_secs(5)).await;

    let (supervisor, booted) = boot(&kit, &[]).await;
    assert_eq!(booted.removed, 1);
    let last = results_of(&kit, "cfg:1:2:web", 1).await.pop().unwrap();
    assert_eq!((last.state, last.is_final), (JobState::Killed, true));
    assert_eq!(last.data, json!(REMOVED));
    assert!(kit.store.unfinished().await.unwrap().is_empty());
    // Forgotten: a later start without the table does not report it again.
    let (supervisor2, booted) = boot(&kit, &[]).await;
    assert_eq!(booted, Booted::default());
    supervisor.shutdown(Duration::from_secs(5)).await;
    supervisor2.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_changed_table_runs_its_new_definition_at_once_and_counts_on() {
    let kit = crate::testkit::kit("cfg-changed").await;
    let (supervisor, _) = boot(&kit, &configured(HOURLY)).await;
    results_of(&kit, "cfg:1:2:tick", 1).await;
    supervisor.shutdown(Duration::from_secs(5)).await;

    // Unchanged: it keeps to its period (the next run is an hour away), nothing runs twice.
    let (supervisor, booted) = boot(&kit, &configured(HOURLY)).await;
    assert_eq!((booted.resumed, booted.started), (1, 0));
    supervisor.shutdown(Duration::from_secs(5)).await;
    let stored = kit.store.config_jobs().await.unwrap();
    assert_eq!(stored[0].job.runs, 1, "{stored:?}");

    let changed = HOURLY.replace("old", "new");
    let (supervisor, booted) = boot(&kit, &configured(&changed)).await;
    assert_eq!(booted.changed, 1);
    let second = results_of(&kit, "cfg:1:2:tick", 2).await.pop().unwrap();
    assert_eq!((second.run, second.is_final), (2, false));
    assert_eq!(second.streams[0], "new\n");
    assert_eq!(second.args["args"], json!(["new"]));
    supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_killed_config_job_comes_back_at_the_next_start() {
    let kit = crate::testkit::kit("cfg-killed").await;
    let (supervisor, _) = boot(&kit, &configured(DAEMON)).await;
    kit.running("cfg:1:2:web").await;
    let kill = kit
        .internal("k1", "kill", json!({"id": "cfg:1:2:web"}))
        .await;
    supervisor.kill(kill, "cfg:1:2:web");
    let killed = results_of(&kit, "cfg:1:2:web", 1).await.pop().unwrap();
    assert_eq!((killed.state, killed.run), (JobState::Killed, 1));
    supervisor.shutdown(Duration::from_secs(5)).await;

    let (supervisor, booted) = boot(&kit, &configured(DAEMON)).await;
    assert_eq!(booted.started, 1);
    kit.running("cfg:1:2:web").await;
    let stored = kit.store.config_jobs().await.unwrap();
    assert_eq!((stored[0].job.runs, stored[0].finished), (2, false));
    supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Regression: a config job's `env` (often secrets) was echoed in its results' `args`, and so
/// kept in Redis and shown by `jsctl job` and the dashboard. The process still gets the values.
#[tokio::test]
async fn a_config_jobs_result_shows_its_env_keys_not_their_values() {
    let kit = crate::testkit::kit("cfg-env").await;
    let table = "[[job]]\nid = \"env\"\ncmd = \"sh\"\nargs = [\"-c\", \"echo $SECRET\"]\n\
                 env = { SECRET = \"s3cret-value\" }\nevery = 3600\n";
    let (supervisor, _) = boot(&kit, &configured(table)).await;
    let result = results_of(&kit, "cfg:1:2:env", 1).await.remove(0);
    assert_eq!(result.streams[0], "s3cret-value\n");
    assert_eq!(result.args["env"], json!({"SECRET": "***"}));
    let body = serde_json::to_string(&result).expect("serializes");
    assert_eq!(body.matches("s3cret-value").count(), 1, "{body}");
    supervisor.shutdown(Duration::from_secs(5)).await;
}
