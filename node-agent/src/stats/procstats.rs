//! Process stats (DESIGN §6): cpu %, rss, vms, swap and thread count of each running job's
//! whole process tree — the job's process and every descendant — sampled every
//! `stats_interval` (the job's arg, else the agent's config), summed over the jobs that share a
//! domain/name, and fed to the stats aggregator as gauges `<domain>.<name>.process.<field>`.
//! `get_process_stats` and `get_processes_stats` sample on demand.
//!
//! One `sysinfo::System` is kept between samples: a process's cpu % is its usage since the
//! previous sample (100 = one core busy), so the first sample of a process says 0. Refreshing
//! reads every process of the machine, so it runs on the blocking pool, once per due tick for
//! all jobs together.
//!
//! Swap and threads come from `/proc/<pid>/status` on Linux; elsewhere they are 0 (sysinfo
//! does not report them per process).
//!
//! A std mutex guards the table and the `System`: each is held only for a lookup or a refresh,
//! never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the sampler looks for jobs due a sample.
const TICK: Duration = Duration::from_secs(1);

/// Where summed samples go: `(prefix "<domain>.<name>.process.", [(field, value)])`.
pub(crate) type GaugeSink = Arc<dyn Fn(&str, &[(&str, f64)]) + Send + Sync>;

/// Usage of one process tree, or a sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// Percent of one core, summed over the tree's processes.
    pub(crate) cpu_percent: f64,
    /// Bytes.
    pub(crate) rss: u64,
    pub(crate) vms: u64,
    pub(crate) swap: u64,
    pub(crate) threads: u64,
    /// Processes in the tree.
    pub(crate) processes: u64,
}

impl Sample {
    fn add(&mut self, other: &Sample) {
        self.cpu_percent += other.cpu_percent;
        self.rss += other.rss;
        self.vms += other.vms;
        self.swap += other.swap;
        self.threads += other.threads;
        self.processes += other.processes;
    }

    /// The gauges fed to the aggregator.
    pub(crate) fn gauges(&self) -> [(&'static str, f64); 6] {
        [
            ("cpu_percent", self.cpu_percent),
            ("rss", self.rss as f64),
            ("vms", self.vms as f64),
            ("swap", self.swap as f64),
            ("threads", self.threads as f64),
            ("processes", self.processes as f64),
        ]
    }
}

/// A running job the sampler follows.
#[derive(Debug, Clone)]
struct Watched {
    domain: String,
    name: String,
    pid: u32,
    interval: Duration,
    due: Instant,
}

/// The sampler: a table of running jobs and the `System` that reads them. Clones share it.
#[derive(Clone)]
pub(crate) struct Sampler {
    inner: Arc<Inner>,
}

struct Inner {
    default_interval: Duration,
    watched: Mutex<HashMap<String, Watched>>,
    system: Mutex<System>,
}

/// Follows one job's process while it is held; dropping it stops following.
pub(crate) struct Watch {
    sampler: Sampler,
    id: String,
    pid: u32,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self.sampler.watched();
        if watched.get(&self.id).is_some_and(|w| w.pid == self.pid) {
            watched.remove(&self.id);
        }
    }
}

impl Sampler {
    pub(crate) fn new(default_interval: Duration) -> Sampler {
        Sampler {
            inner: Arc::new(Inner {
                default_interval,
                watched: Mutex::new(HashMap::new()),
                system: Mutex::new(System::new()),
            }),
        }
    }

    fn watched(&self) -> MutexGuard<'_, HashMap<String, Watched>> {
        lock(&self.inner.watched)
    }

    /// Follows job `id`'s process `pid` (its tree's root) until the [`Watch`] is dropped.
    pub(crate) fn watch(
        &self,
        id: &str,
        domain: &str,
        name: &str,
        interval: Option<u64>,
        pid: u32,
    ) -> Watch {
        let interval = interval
            .map(Duration::from_secs)
            .unwrap_or(self.inner.default_interval);
        let watched = Watched {
            domain: domain.to_owned(),
            name: name.to_owned(),
            pid,
            interval,
            due: Instant::now() + interval,
        };
        self.watched().insert(id.to_owned(), watched);
        Watch {
            sampler: self.clone(),
            id: id.to_owned(),
            pid,
        }
    }

    /// Samples due jobs every second until `stop`, feeding each due domain/name's sum to `sink`.
    pub(crate) async fn run(self, stop: CancellationToken, sink: Option<GaugeSink>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due = self.take_due(Instant::now());
            if due.is_empty() {
                continue;
            }
            let samples = self.sample_all().await;
            let groups = sum_groups(&samples, |g| due.contains(&(g.0.clone(), g.1.clone())));
            if let Some(sink) = &sink {
                for ((domain, name), (sum, _)) in &groups {
                    sink(&format!("{domain}.{name}.process."), &sum.gauges());
                }
            }
        }
    }

    /// The domain/name of every job due a sample at `now`, whose next sample is then set.
    fn take_due(&self, now: Instant) -> Vec<(String, String)> {
        let mut watched = self.watched();
        let mut due = Vec::new();
        for w in watched.values_mut().filter(|w| w.due <= now) {
            w.due = now + w.interval;
            due.push((w.domain.clone(), w.name.clone()));
        }
        due
    }

    /// Samples every followed job now: `(id, domain, name, pid, sample)`.
    async fn sample_all(&self) -> Vec<JobSample> {
        let mut jobs: Vec<(String, Watched)> = self
            .watched()
            .iter()
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect();
        jobs.sort_by(|a, b| a.0.cmp(&b.0));
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut system = lock(&this.inner.system);
            system.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                ProcessRefreshKind::nothing()
                    .with_cpu()
                    .with_memory()
                    .without_tasks(),
            );
            let children = children_of(&system);
            jobs.into_iter()
                .map(|(id, w)| JobSample {
                    sample: tree_sample(&system, &children, w.pid),
                    id,
                    domain: w.domain,
                    name: w.name,
                    pid: w.pid,
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// `get_process_stats`: a sample of job `id` now.
    pub(crate) async fn job_stats(&self, id: &str) -> Result<Value, String> {
        let samples = self.sample_all().await;
        let job = samples
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| format!("no running job `{id}` on this agent"))?;
        serde_json::to_value(job).map_err(|e| e.to_string())
    }

    /// `get_processes_stats`: the running jobs now, summed by domain/name, optionally only
    /// those of one domain and/or name.
    pub(crate) async fn group_stats(&self, domain: Option<&str>, name: Option<&str>) -> Value {
        let samples = self.sample_all().await;
        let wanted =
            |g: &(String, String)| domain.is_none_or(|d| d == g.0) && name.is_none_or(|n| n == g.1);
        let groups = sum_groups(&samples, wanted);
        let rows: Vec<Value> = groups
            .into_iter()
            .map(|((domain, name), (sum, ids))| {
                let mut row = serde_json::to_value(sum).unwrap_or_default();
                row["domain"] = Value::String(domain);
                row["name"] = Value::String(name);
                row["jobs"] = serde_json::json!(ids);
                row
            })
            .collect();
        Value::Array(rows)
    }
}

/// One job's sample, as `get_process_stats` answers it.
#[derive(Debug, Clone, Serialize)]
struct JobSample {
    id: String,
    domain: String,
    name: String,
    pid: u32,
    #[serde(flatten)]
    sample: Sample,
}

type Groups = std::collections::BTreeMap<(String, String), (Sample, Vec<String>)>;

/// Sums the samples by domain/name, keeping only the groups `keep` wants; each with its job ids.
fn sum_groups(samples: &[JobSample], keep: impl Fn(&(String, String)) -> bool) -> Groups {
    let mut groups = Groups::new();
    for s in samples {
        let key = (s.domain.clone(), s.name.clone());
        if !keep(&key) {
            continue;
        }
        let (sum, ids) = groups.entry(key).or_default();
        sum.add(&s.sample);
        ids.push(s.id.clone());
    }
    groups
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Each process's children.
fn children_of(system: &System) -> HashMap<Pid, Vec<Pid>> {
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for (pid, process) in system.processes() {
        if let Some(parent) = process.parent() {
            children.entry(parent).or_default().push(*pid);
        }
    }
    children
}

/// The sum over `root` and its descendants; zero when `root` is gone.
fn tree_sample(system: &System, children: &HashMap<Pid, Vec<Pid>>, root: u32) -> Sample {
    let mut sum = Sample::default();
    let mut stack = vec![Pid::from_u32(root)];
    while let Some(pid) = stack.pop() {
        let Some(process) = system.process(pid) else {
            continue;
        };
        let (threads, swap) = threads_and_swap(pid.as_u32());
        sum.add(&Sample {
            cpu_percent: f64::from(process.cpu_usage()),
            rss: process.memory(),
            vms: process.virtual_memory(),
            swap,
            threads,
            processes: 1,
        });
        stack.extend(children.get(&pid).into_iter().flatten().copied());
    }
    sum
}

/// Threads and swapped bytes of a process, from `/proc/<pid>/status`.
#[cfg(target_os = "linux")]
fn threads_and_swap(pid: u32) -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmSwap:") * 1024)
}

#[cfg(not(target_os = "linux"))]
fn threads_and_swap(_pid: u32) -> (u64, u64) {
    (0, 0)
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    /// A shell that starts two sleeping children, in its own tree.
    fn tree() -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap()
    }

    async fn until_processes(s: &Sampler, id: &str, n: u64) -> Value {
        for _ in 0..200 {
            let v = s.job_stats(id).await.unwrap();
            if v["processes"] == n {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{id} never had {n} processes");
    }

    #[tokio::test]
    async fn a_job_is_sampled_with_its_whole_tree() {
        let s = Sampler::new(Duration::from_secs(30));
        let mut child = tree();
        let watch = s.watch("j", "ops", "web", None, child.id());
        let v = until_processes(&s, "j", 3).await;
        assert_eq!(
            (v["id"].clone(), v["domain"].clone()),
            ("j".into(), "ops".into())
        );
        assert!(v["rss"].as_u64().unwrap() > 0, "{v}");
        assert!(
            v["vms"].as_u64().unwrap() >= v["rss"].as_u64().unwrap(),
            "{v}"
        );
        assert_eq!(v["threads"], 3, "one thread per process: {v}");
        drop(watch);
        assert!(s
            .job_stats("j")
            .await
            .unwrap_err()
            .contains("no running job"));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn jobs_sharing_domain_and_name_are_summed() {
        let s = Sampler::new(Duration::from_secs(30));
        let children: Vec<_> = (0..3).map(|_| tree()).collect();
        let _watches: Vec<Watch> = children
            .iter()
            .enumerate()
            .map(|(i, c)| s.watch(&format!("j{i}"), "ops", "web", None, c.id()))
            .collect();
        let other = tree();
        let _other = s.watch("x", "ops", "db", None, other.id());
        for i in 0..3 {
            until_processes(&s, &format!("j{i}"), 3).await;
        }
        let all = s.group_stats(Some("ops"), Some("web")).await;
        assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
        assert_eq!(all[0]["processes"], 9);
        assert_eq!(all[0]["jobs"], serde_json::json!(["j0", "j1", "j2"]));
        let both = s.group_stats(Some("ops"), None).await;
        assert_eq!(both.as_array().unwrap().len(), 2);
        for mut c in children.into_iter().chain([other]) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn due_samples_are_fed_summed_by_domain_and_name() {
        let s = Sampler::new(Duration::from_secs(5));
        let mut a = tree();
        let mut b = tree();
        let _wa = s.watch("a", "ops", "web", None, a.id());
        let _wb = s.watch("b", "ops", "web", Some(5), b.id());
        let fed: Arc<Mutex<Vec<(String, f64)>>> = Arc::default();
        let sink_fed = fed.clone();
        let sink: GaugeSink = Arc::new(move |prefix, values| {
            let processes = values.iter().find(|(k, _)| *k == "processes").unwrap().1;
            lock(&sink_fed).push((prefix.to_owned(), processes));
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(s.clone().run(stop.clone(), Some(sink)));
        tokio::time::sleep(Duration::from_secs(6)).await;
        while lock(&fed).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let fed = lock(&fed).clone();
        assert_eq!(fed[0].0, "ops.web.process.");
        assert!(fed[0].1 >= 2.0, "both jobs' trees are in one sum: {fed:?}");
        a.kill().unwrap();
        b.kill().unwrap();
        let _ = (a.wait(), b.wait());
    }
}
