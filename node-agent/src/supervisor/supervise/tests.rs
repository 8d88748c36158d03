//! Tests of [`super`]: the restart and schedule rules as pure functions, then jobs that run
//! more than once, with real processes (unix).

use super::*;

fn plan(long_running: bool, period: u64, max_restart: u32) -> Plan {
    Plan {
        long_running,
        period: (period > 0).then(|| Duration::from_secs(period)),
        cron: false,
        max_restart,
    }
}

const CAP: Duration = Duration::from_secs(300);

#[test]
fn backoff_doubles_from_one_second_up_to_the_cap() {
    let waits: Vec<u64> = (1..=11).map(|n| backoff(n, CAP).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(backoff(1000, CAP), CAP);
}

#[test]
fn quick_failures_restart_with_growing_waits_then_give_up() {
    let p = plan(false, 0, 3);
    let mut failures = 0;
    let quick = Duration::from_millis(5);
    let nexts: Vec<Next> = (0..4)
        .map(|_| p.next(Ended::Failed, quick, &mut failures, CAP))
        .collect();
    let secs = Duration::from_secs;
    assert_eq!(
        nexts,
        [
            Next::Again(secs(1)),
            Next::Again(secs(2)),
            Next::Again(secs(4)),
            Next::GiveUp
        ]
    );
}

#[test]
fn a_long_run_resets_the_count_and_is_restarted_without_counting() {
    let p = plan(true, 0, 1);
    let mut failures = 0;
    let quick = Duration::from_secs(1);
    assert_eq!(
        p.next(Ended::Failed, quick, &mut failures, CAP),
        Next::Again(FIRST_BACKOFF)
    );
    assert_eq!(failures, 1);
    assert_eq!(
        p.next(Ended::Failed, QUICK_FAILURE, &mut failures, CAP),
        Next::Again(FIRST_BACKOFF)
    );
    assert_eq!(failures, 0);
    assert_eq!(
        p.next(Ended::Failed, quick, &mut failures, CAP),
        Next::Again(FIRST_BACKOFF)
    );
    assert_eq!(
        p.next(Ended::Failed, quick, &mut failures, CAP),
        Next::GiveUp
    );
}

#[test]
fn a_daemon_without_restarts_gives_up_on_its_first_quick_failure() {
    let p = plan(true, 0, 0);
    assert_eq!(
        p.next(Ended::Failed, Duration::ZERO, &mut 0, CAP),
        Next::GiveUp
    );
    assert_eq!(
        p.next(Ended::Succeeded, Duration::ZERO, &mut 0, CAP),
        Next::Finish
    );
}

#[test]
fn recurring_runs_keep_to_their_period_and_never_overlap() {
    let p = plan(false, 10, 0);
    let mut failures = 0;
    assert_eq!(
        p.next(Ended::Succeeded, Duration::from_secs(3), &mut failures, CAP),
        Next::Again(Duration::from_secs(7))
    );
    assert_eq!(
        p.next(Ended::Failed, Duration::from_secs(25), &mut failures, CAP),
        Next::Again(Duration::ZERO)
    );
    assert_eq!(failures, 0, "a recurring job's failures are not restarts");
}

#[test]
fn what_repeats_and_what_is_remembered() {
    assert!(!plan(false, 0, 0).repeats());
    assert!(plan(false, 0, 2).repeats() && !plan(false, 0, 2).remembered());
    assert!(plan(true, 0, 0).remembered());
    assert!(plan(false, 5, 0).remembered());
}

#[test]
fn a_resumed_recurring_job_keeps_to_its_period() {
    let p = plan(false, 60, 0);
    let now = schemas::now_ms();
    let wait = p.first_wait(Some(now - 20_000));
    assert!(
        wait <= Duration::from_secs(40) && wait > Duration::from_secs(38),
        "{wait:?}"
    );
    assert_eq!(p.first_wait(Some(now - 120_000)), Duration::ZERO);
    assert_eq!(p.first_wait(None), Duration::ZERO);
    assert_eq!(plan(true, 0, 0).first_wait(Some(now)), Duration::ZERO);
}

/// Jobs that run more than once, with real processes.
#[cfg(unix)]
mod repeated {

    use std::time::Duration;

    use schemas::{JobResult, JobState};
    use serde_json::json;

    use crate::testkit::{kit_with, Kit};

    /// Wall-clock bound of every wait (the restart test runs on paused time).
    const LIMIT: Duration = Duration::from_secs(60);

    impl Kit {
        /// Waits (at most [`LIMIT`]) for the next rows in the outbox.
        async fn outbox_grew(&self, what: &str) {
            tokio::time::timeout(LIMIT, self.store.outbox_added())
                .await
                .unwrap_or_else(|_| panic!("{what}: nothing new in the outbox"));
        }

        /// The job's final result, once stored.
        async fn final_result(&self, id: &str) -> JobResult {
            loop {
                let found = self
                    .results()
                    .await
                    .into_iter()
                    .find(|r| r.id == id && r.is_final);
                if let Some(r) = found {
                    return r;
                }
                self.outbox_grew(&format!("{id} never ended")).await;
            }
        }

        /// The results of the job's runs so far (not the final one).
        async fn run_results(&self, id: &str) -> Vec<JobResult> {
            let results = self.results().await.into_iter();
            results.filter(|r| r.id == id && !r.is_final).collect()
        }

        /// Waits until the job has posted `n` run results.
        async fn runs(&self, id: &str, n: usize) -> Vec<JobResult> {
            loop {
                let runs = self.run_results(id).await;
                if runs.len() >= n {
                    return runs;
                }
                self.outbox_grew(&format!("{id}: {} runs", runs.len()))
                    .await;
            }
        }

        /// Each start of the job's process, on the tokio clock (paused in the tests that ask).
        fn starts(&self, id: &str) -> Vec<tokio::time::Instant> {
            let spawned = self.supervisor.inner.spawned.lock().unwrap();
            spawned
                .iter()
                .filter(|(job, _)| job == id)
                .map(|(_, at)| *at)
                .collect()
        }

        /// The job's recorded run count and pid.
        async fn run_count(&self, id: &str) -> (u64, Option<u32>) {
            let jobs = self.store.unfinished().await.unwrap();
            jobs.iter()
                .find(|j| j.id == id)
                .map(|j| (j.runs, j.pid))
                .unwrap_or((0, None))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quickly_failing_process_is_restarted_with_growing_gaps_then_given_up() {
        let f = kit_with("sup-restarts", None).await;
        let args = json!({"cmd": "sh", "args": ["-c", "exit 1"], "max_restart": 3,
        "domain": "ops", "name": "crashy"});
        f.submit("c", args, None).await;
        // Waits without a timer of its own, so the paused clock only moves to the supervisor's.
        let r = loop {
            if let Some(r) = f.results().await.into_iter().find(|r| r.id == "c") {
                break r;
            }
            f.store.outbox_added().await;
        };
        let starts = f.starts("c");
        assert_eq!(starts.len(), 4, "started {} times", starts.len());
        assert_eq!((r.state, r.run, r.exit_code), (JobState::Error, 4, Some(1)));
        assert!(
            r.critical.contains("failed 4 times in a row"),
            "{}",
            r.critical
        );
        assert_eq!(r.data, json!(r.critical));
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        eprintln!("gaps between starts (paused clock): {gaps:?}");
        for (gap, least) in gaps.iter().zip([1, 2, 4]) {
            assert!(*gap >= Duration::from_secs(least), "gaps {gaps:?}");
        }
        assert!(
            gaps[0] < gaps[1] && gaps[1] < gaps[2],
            "gaps do not grow: {gaps:?}"
        );
        assert!(gaps[2] < Duration::from_secs(5), "gaps {gaps:?}");
    }

    #[tokio::test]
    async fn a_process_that_succeeds_after_a_failure_ends_ok() {
        let f = kit_with("sup-restart-ok", None).await;
        let marker = f.dir.join("failed-once");
        let script = format!(
            "if [ -e {m} ]; then exit 0; else touch {m}; exit 3; fi",
            m = marker.display()
        );
        f.submit(
            "o",
            json!({"cmd": "sh", "args": ["-c", script], "max_restart": 2}),
            None,
        )
        .await;
        let r = f.final_result("o").await;
        assert_eq!((r.state, r.run, r.exit_code), (JobState::Ok, 2, Some(0)));
    }

    #[tokio::test]
    async fn a_recurring_job_runs_again_and_again_and_never_overlaps_itself() {
        let f = kit_with("sup-recurring", None).await;
        let (lock, log) = (f.dir.join("lock"), f.dir.join("log"));
        // Runs take 1.5 s, the period is 1 s: a run starting while another runs finds the lock.
        let script = format!(
            "[ -e {l} ] && echo overlap >> {g}; touch {l}; echo run >> {g}; sleep 1.5; rm {l}",
            l = lock.display(),
            g = log.display()
        );
        let args = json!({"cmd": "sh", "args": ["-c", script], "recurring_period": 1});
        f.submit("r", args, None).await;
        let runs = f.runs("r", 3).await;
        let numbers: Vec<u64> = runs.iter().map(|r| r.run).collect();
        assert_eq!(numbers[..3], [1, 2, 3]);
        assert!(runs.iter().all(|r| r.state == JobState::Ok));
        assert_eq!(
            f.store.job_state("r").await.unwrap().as_deref(),
            Some("RUNNING")
        );

        let kill = f.internal("k", "kill", json!({"id": "r"})).await;
        f.supervisor.kill(kill, "r");
        let last = f.final_result("r").await;
        assert_eq!(last.state, JobState::Killed);
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("overlap"), "runs overlapped:\n{log}");
        assert!(log.lines().count() >= 3, "{log}");
        assert_eq!(
            f.store.job_state("r").await.unwrap().as_deref(),
            Some("KILLED")
        );
    }

    /// A `killall` while a recurring job waits for its next run leaves that run where it was due:
    /// one period after the previous start, not one period after the `killall`.
    #[tokio::test(start_paused = true)]
    async fn killall_between_runs_keeps_a_recurring_jobs_schedule() {
        let f = kit_with("sup-killall-idle", None).await;
        f.submit("r", json!({"cmd": "true", "recurring_period": 100}), None)
            .await;
        // The paused clock jumps to the next timer whenever the runtime idles, as it would while an
        // awaited store read waits on the store's thread: the reads here block the runtime instead,
        // and the waits between them are 1 s sleeps, so the clock moves in steps of 1 s at most.
        let runs = || futures::executor::block_on(f.run_results("r")).len();
        while runs() < 1 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Halfway to run 2, then killall.
        tokio::time::sleep(Duration::from_secs(50)).await;
        let killall = f.internal("ka", "killall", json!({})).await;
        f.supervisor.killall(killall);
        // Listed as killed too if run 1's result was still being stored (the clock jumps to 50 s
        // at once); either way the job is remembered and kept.
        assert_eq!(f.result("ka").await.data["remembered"], json!(["r"]));
        while runs() < 2 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let starts = f.starts("r");
        let gap = starts[1] - starts[0];
        assert!(
            gap >= Duration::from_secs(100) && gap < Duration::from_secs(150),
            "run 2 started {gap:?} after run 1; due 100 s after it"
        );
    }

    #[tokio::test]
    async fn killall_ends_a_daemons_run_but_it_comes_back_and_kill_forgets_it() {
        let f = kit_with("sup-killall-daemon", None).await;
        f.submit(
            "d",
            json!({"cmd": "sleep", "args": ["100"], "max_time": -1}),
            None,
        )
        .await;
        let first = f.running("d").await;

        let killall = f.internal("ka", "killall", json!({})).await;
        f.supervisor.killall(killall);
        let answer = f.result("ka").await;
        assert_eq!(answer.data, json!({"killed": ["d"], "remembered": ["d"]}));
        let run = f.runs("d", 1).await;
        assert_eq!((run[0].state, run[0].run), (JobState::Killed, 1));

        // Back, as a new process.
        let deadline = std::time::Instant::now() + LIMIT;
        let second = loop {
            if let (2, Some(pid)) = f.run_count("d").await {
                if pid != first {
                    break pid;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not come back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            !std::path::Path::new(&format!("/proc/{first}")).exists()
                || std::fs::read_to_string(format!("/proc/{first}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "the first run's process survived"
        );

        let kill = f.internal("k", "kill", json!({"id": "d"})).await;
        f.supervisor.kill(kill, "d");
        let last = f.final_result("d").await;
        assert_eq!((last.state, last.run), (JobState::Killed, 2));
        assert!(std::fs::read_to_string(format!("/proc/{second}/stat"))
            .map_or(true, |s| s.contains(") Z ")));
    }

    #[tokio::test]
    async fn a_stopping_agent_leaves_remembered_jobs_running_in_the_store() {
        let f = kit_with("sup-stop-remembered", None).await;
        f.submit(
            "d",
            json!({"cmd": "sleep", "args": ["100"], "max_time": -1}),
            None,
        )
        .await;
        f.submit("o", json!({"cmd": "sleep", "args": ["100"]}), None)
            .await;
        f.running("d").await;
        f.running("o").await;
        f.supervisor.shutdown(Duration::from_secs(10)).await;
        assert_eq!(
            f.store.job_state("d").await.unwrap().as_deref(),
            Some("RUNNING")
        );
        assert_eq!(
            f.store.job_state("o").await.unwrap().as_deref(),
            Some("ERROR")
        );
        assert!(f.results().await.iter().all(|r| r.id != "d"));
    }

    /// `gap` in whole steps of `step` (rounded) and how far it is from that many.
    fn steps(gap: Duration, step: Duration) -> (u32, Duration) {
        let n = ((gap + step / 2).as_nanos() / step.as_nanos()) as u32;
        let whole = step * n;
        (n, gap.abs_diff(whole))
    }

    /// A cron job runs at its times: consecutive starts are whole steps of the schedule apart
    /// (10 s; the first start is on a step too, see `cron::tests`), and any step missed in
    /// between is a time that passed during the run before, counted in its `skipped`.
    #[tokio::test(start_paused = true)]
    async fn a_cron_job_runs_at_its_times() {
        let f = kit_with("sup-cron-times", None).await;
        f.submit("c", json!({"cmd": "true", "cron": "*/10 * * * * *"}), None)
            .await;
        // As in `killall_between_runs…`: blocking reads, and sleeps that move the clock. Short
        // ones: while the store's (real-time) thread answers, the paused clock jumps to the
        // next timer, this sleep's, so its length is how late a start may look.
        let runs = || futures::executor::block_on(f.run_results("c"));
        while runs().len() < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (runs, starts) = (runs(), f.starts("c"));
        let numbers: Vec<u64> = runs.iter().map(|r| r.run).take(3).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert!(runs.iter().all(|r| r.state == JobState::Ok && !r.is_final));
        let step = Duration::from_secs(10);
        for (i, gap) in starts.windows(2).map(|w| w[1] - w[0]).enumerate().take(2) {
            let (n, off) = steps(gap, step);
            // A process starts a little after its time: the store's thread is real time.
            assert!(
                n >= 1 && off < Duration::from_secs(1),
                "run {} started {gap:?} after run {}: not on the 10 s schedule",
                i + 2,
                i + 1
            );
            assert_eq!(
                runs[i].skipped,
                u64::from(n - 1),
                "{:?} vs {gap:?}",
                runs[i]
            );
        }
        let kill = f.internal("k", "kill", json!({"id": "c"})).await;
        f.supervisor.kill(kill, "c");
        let last = || {
            let results = futures::executor::block_on(f.results());
            results.into_iter().find(|r| r.id == "c" && r.is_final)
        };
        let last = loop {
            match last() {
                Some(last) => break last,
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        assert_eq!(last.state, JobState::Killed);
    }

    /// A run still going when the next cron time comes makes that time be skipped (runs never
    /// overlap) and counted in the run's result.
    #[tokio::test]
    async fn a_cron_run_still_going_at_the_next_time_skips_it_and_counts_it() {
        let f = kit_with("sup-cron-overlap", None).await;
        let (lock, log) = (f.dir.join("lock"), f.dir.join("log"));
        // Every second; each run takes 1.5 s, so a later second always passes while it runs.
        let script = format!(
            "[ -e {l} ] && echo overlap >> {g}; touch {l}; echo run >> {g}; sleep 1.5; rm {l}",
            l = lock.display(),
            g = log.display()
        );
        let args = json!({"cmd": "sh", "args": ["-c", script], "cron": "* * * * * *"});
        f.submit("c", args, None).await;
        let runs = f.runs("c", 2).await;
        assert_eq!(
            runs.iter().map(|r| r.run).take(2).collect::<Vec<_>>(),
            [1, 2]
        );
        for r in &runs {
            assert_eq!(r.state, JobState::Ok);
            assert!(
                r.skipped >= 1,
                "run {} lasted 1.5 s and skipped nothing",
                r.run
            );
        }
        let kill = f.internal("k", "kill", json!({"id": "c"})).await;
        f.supervisor.kill(kill, "c");
        assert_eq!(f.final_result("c").await.state, JobState::Killed);
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("overlap"), "runs overlapped:\n{log}");
    }

    /// `max_time` bounds each run of a cron job: a run over it ends `TIMEOUT`, and the job goes
    /// on at its next time.
    #[tokio::test]
    async fn max_time_bounds_each_cron_run() {
        let f = kit_with("sup-cron-max-time", None).await;
        let args = json!({"cmd": "sleep", "args": ["30"], "cron": "* * * * * *", "max_time": 1});
        f.submit("c", args, None).await;
        let runs = f.runs("c", 2).await;
        for r in &runs[..2] {
            assert_eq!((r.state, r.is_final), (JobState::Timeout, false), "{r:?}");
        }
        let kill = f.internal("k", "kill", json!({"id": "c"})).await;
        f.supervisor.kill(kill, "c");
        assert_eq!(f.final_result("c").await.state, JobState::Killed);
    }

    /// A cron job is remembered: the agent stopping during run 1 leaves it `RUNNING`; the next
    /// start posts run 1 as cut (`ERROR` "agent restarted") and runs it on, from run 2.
    #[tokio::test]
    async fn a_cron_job_survives_an_agent_restart_and_counts_on() {
        use crate::supervisor::recovery::{recover, AGENT_RESTARTED};
        use crate::supervisor::Supervisor;

        let f = kit_with("sup-cron-restart", None).await;
        let args = json!({"cmd": "sleep", "args": ["30"], "cron": "* * * * * *"});
        f.submit("c", args, None).await;
        f.running("c").await;
        f.supervisor.shutdown(Duration::from_secs(10)).await;
        assert_eq!(
            f.store.job_state("c").await.unwrap().as_deref(),
            Some("RUNNING")
        );
        assert!(
            f.results().await.is_empty(),
            "a remembered job posted at the stop"
        );

        // The next start of the agent: a new supervisor over the same store.
        let logs = crate::logs::Logs::start(&f.config, f.store.clone(), None)
            .await
            .unwrap();
        let supervisor = Supervisor::new(&f.config, f.store.clone(), logs);
        let recovered = recover(&f.store, &f.dispatcher, &supervisor).await.unwrap();
        assert_eq!(recovered.resumed, 1);
        let cut = f.runs("c", 1).await;
        assert_eq!((cut[0].run, cut[0].state), (1, JobState::Error));
        assert_eq!(cut[0].data, json!(AGENT_RESTARTED));
        // Back on its schedule: run 2 starts within the next second or so.
        let deadline = std::time::Instant::now() + LIMIT;
        while f.run_count("c").await.0 < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the cron job did not come back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kill = f.internal("k", "kill", json!({"id": "c"})).await;
        supervisor.kill(kill, "c");
        let last = f.final_result("c").await;
        assert_eq!((last.state, last.run), (JobState::Killed, 2));
        supervisor.shutdown(Duration::from_secs(10)).await;
    }
}
