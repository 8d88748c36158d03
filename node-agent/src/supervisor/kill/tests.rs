use std::path::Path;
use std::time::{Duration, Instant};

use schemas::{JobResult, JobState};
use serde_json::{json, Value};

use crate::supervisor::KILL_GRACE;
use crate::testkit::{kit_with, Kit};

/// Wall-clock bound of every wait on a real process (the tests may run on paused time).
const LIMIT: Duration = Duration::from_secs(30);

/// The process group of `pid` if it is alive (a zombie is not: it only waits for its
/// parent, maybe init, to reap it), from /proc/<pid>/stat.
fn live_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    match fields.as_slice() {
        [state, _ppid, pgrp, ..] if *state != "Z" => pgrp.parse().ok(),
        _ => None,
    }
}

/// Live processes of process group `pgid`.
fn group(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| live_group(pid) == Some(pgid))
        .collect()
}

/// Polls until `check` holds, on the wall clock; false after [`LIMIT`].
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn wait_file(path: &Path) {
    assert!(
        eventually(|| path.exists()).await,
        "{} never appeared",
        path.display()
    );
}

fn sh(script: &str) -> Value {
    json!({"cmd": "sh", "args": ["-c", script]})
}

impl Kit {
    async fn kill(&self, id: &str, target: &str) -> JobResult {
        let command = self.internal(id, "kill", json!({ "id": target })).await;
        self.supervisor.kill(command, target);
        self.result(id).await
    }

    /// Checks that nothing is left unfinished in the store (nothing `RUNNING` or `QUEUED`).
    async fn all_finished(&self) {
        let left: Vec<String> = self
            .store
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|j| format!("{} {}", j.id, j.state))
            .collect();
        assert!(left.is_empty(), "unfinished: {left:?}");
    }
}

#[tokio::test]
async fn kill_ends_a_running_job_and_its_whole_tree() {
    let f = kit_with("sup-kill-running", None).await;
    f.submit("j", sh("echo started; sleep 300 & sleep 300"), None)
        .await;
    let pgid = f.running("j").await;
    assert!(
        eventually(|| group(pgid).len() >= 2).await,
        "no grandchild in {:?}",
        group(pgid)
    );
    let tree = group(pgid);

    let answer = f.kill("k", "j").await;
    assert_eq!(
        (answer.state, &answer.data, answer.exit_code),
        (
            JobState::Ok,
            &json!({"killed": "j", "was": "running"}),
            None
        )
    );
    let r = f.result("j").await;
    assert_eq!(
        (r.state, r.exit_code, &r.data),
        (JobState::Killed, None, &json!("killed by kill command k"))
    );
    assert_eq!(r.streams, ["started\n", ""]);
    assert!(
        eventually(|| group(pgid).is_empty()).await,
        "survivors of {tree:?}: {:?}",
        group(pgid)
    );
    for pid in &tree {
        assert_eq!(live_group(*pid), None, "{pid} of {tree:?} survived");
    }
    // The job's result is stored before the kill is answered.
    let order: Vec<String> = f.results().await.into_iter().map(|r| r.id).collect();
    assert_eq!(order, ["j", "k"]);
    assert_eq!(
        f.store.job_state("j").await.unwrap().as_deref(),
        Some("KILLED")
    );

    // Killed once: a second kill finds nothing to kill.
    let again = f.kill("k2", "j").await;
    assert_eq!(
        (again.state, again.data),
        (
            JobState::Error,
            json!("no running or queued job `j` on this agent")
        )
    );
    f.all_finished().await;
}

#[tokio::test]
async fn a_killed_tree_gets_sigterm_first() {
    let f = kit_with("sup-kill-term", None).await;
    let marker = f.dir.join("trapped");
    let script = format!(
        "trap 'echo got TERM; exit 7' TERM; touch {}; sleep 300 & wait",
        marker.display()
    );
    f.submit("j", sh(&script), None).await;
    wait_file(&marker).await;
    assert_eq!(f.kill("k", "j").await.state, JobState::Ok);
    let r = f.result("j").await;
    // Its own exit code does not count: it was killed.
    assert_eq!((r.state, r.exit_code), (JobState::Killed, None));
    assert_eq!(r.streams[0], "got TERM\n");
}

#[tokio::test(start_paused = true)]
async fn a_tree_ignoring_sigterm_is_killed_after_the_grace_period_once() {
    let f = kit_with("sup-kill-grace", None).await;
    let marker = f.dir.join("ignoring");
    let script = format!("trap '' TERM; touch {}; sleep 300", marker.display());
    f.submit("j", sh(&script), None).await;
    let pgid = f.running("j").await;
    wait_file(&marker).await;

    let asked = tokio::time::Instant::now();
    let first = f.internal("k1", "kill", json!({"id": "j"})).await;
    f.supervisor.kill(first, "j");
    // While the first kill waits out the grace period, the job is not killed twice. (Paused
    // time auto-advances while the store thread works, so under load the grace period may
    // already be over when the second kill arrives: then the job is gone. Either way the
    // second kill is refused, and the job ends by the first.)
    let second = f.kill("k2", "j").await;
    assert_eq!(second.state, JobState::Error, "{:?}", second.data);
    assert!(
        [
            json!("job `j` is being killed already, by kill command `k1`"),
            json!("no running or queued job `j` on this agent"),
        ]
        .contains(&second.data),
        "{:?}",
        second.data
    );
    let r = f.result("j").await;
    assert_eq!(
        (r.state, &r.data),
        (JobState::Killed, &json!("killed by kill command k1"))
    );
    assert!(asked.elapsed() >= KILL_GRACE, "{:?}", asked.elapsed());
    assert_eq!(f.result("k1").await.state, JobState::Ok);
    assert!(
        eventually(|| group(pgid).is_empty()).await,
        "{:?}",
        group(pgid)
    );
    f.all_finished().await;
}

#[tokio::test]
async fn kill_of_a_queued_job_means_it_never_starts() {
    let f = kit_with("sup-kill-queued", Some(1)).await;
    let marker = f.dir.join("started");
    f.submit("first", json!({"cmd": "sleep", "args": ["300"]}), None)
        .await;
    f.running("first").await;
    f.submit("second", sh(&format!("touch {}", marker.display())), None)
        .await;

    let answer = f.kill("k", "second").await;
    assert_eq!(
        (answer.state, answer.data),
        (JobState::Ok, json!({"killed": "second", "was": "queued"}))
    );
    let r = f.result("second").await;
    assert_eq!(
        (r.state, r.exit_code, &r.data, r.time),
        (
            JobState::Killed,
            None,
            &json!("killed by kill command k before it started"),
            0
        )
    );
    assert_eq!(r.streams, ["", ""]);

    // Its slot comes free; the killed job still does not run.
    assert_eq!(f.kill("k2", "first").await.state, JobState::Ok);
    assert_eq!(f.result("first").await.state, JobState::Killed);
    f.all_finished().await;
    assert!(!marker.exists(), "the killed queued job ran");
}

#[tokio::test]
async fn kill_of_an_unknown_job_is_an_error() {
    let f = kit_with("sup-kill-unknown", None).await;
    let r = f.kill("k", "nope").await;
    assert_eq!(
        (r.state, r.data, r.args),
        (
            JobState::Error,
            json!("no running or queued job `nope` on this agent"),
            json!({"id": "nope"})
        )
    );
    f.all_finished().await;
}

#[tokio::test]
async fn killall_kills_every_running_and_queued_job() {
    let f = kit_with("sup-killall", None).await;
    let marker = f.dir.join("started");
    let queued =
        json!({"cmd": "sh", "args": ["-c", format!("touch {}", marker.display())], "queue": "q"});
    f.submit(
        "a",
        json!({"cmd": "sleep", "args": ["300"], "queue": "q"}),
        None,
    )
    .await;
    f.submit("b", sh("sleep 300 & sleep 300"), None).await;
    f.submit("c", queued, None).await;
    let groups = [f.running("a").await, f.running("b").await];

    let command = f.internal("ka", "killall", json!({})).await;
    f.supervisor.killall(command);
    let answer = f.result("ka").await;
    assert_eq!(
        (answer.state, answer.data),
        (
            JobState::Ok,
            json!({"killed": ["a", "b", "c"], "remembered": []})
        )
    );
    for id in ["a", "b", "c"] {
        let r = f.result(id).await;
        assert_eq!(
            (
                r.state,
                r.data
                    .as_str()
                    .unwrap()
                    .starts_with("killed by killall command ka")
            ),
            (JobState::Killed, true),
            "{id}: {r:?}"
        );
    }
    for pgid in groups {
        assert!(
            eventually(|| group(pgid).is_empty()).await,
            "{:?}",
            group(pgid)
        );
    }
    assert!(!marker.exists(), "the queued job ran");
    f.all_finished().await;

    // Nothing left: a second killall kills nothing.
    let command = f.internal("ka2", "killall", json!({})).await;
    f.supervisor.killall(command);
    assert_eq!(
        f.result("ka2").await.data,
        json!({"killed": [], "remembered": []})
    );
}
