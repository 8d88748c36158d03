//! The logger (DESIGN §6): what happens to each parsed message of a job.
//!
//! [`Logs`] is the agent-wide handle (cheap to clone): the log store, the forwarder, the agent's
//! default filters and the optional statsd sink. [`Logs::job_logger`] makes the [`JobLogger`] of
//! one run from its `args`; a bad `loglevels*` expression is the job's `ERROR` reason.
//!
//! Per message of a job: a level outside `loglevels` is ignored; level 10 goes to the statsd
//! sink (invalid lines become a level-7 warning of the job); the message is stored when
//! `loglevels_db` selects it and forwarded to the controller when `loglevels_ac` does. The run's
//! result keeps the last message of levels 20–23 or 30 (`data`, `level`) and the last level 9
//! (`critical`).
//!
//! The logger also carries the run's live output hook ([`crate::live::RunOutput`]) when live
//! output is on for the agent (`output`) and the job (`args.output`); the readers feed it the
//! lines as printed, apart from the messages here.
//!
//! [`JobLogger::log`] waits while the store is behind, so a process that writes faster than the
//! store can take is slowed through its pipe; nothing is dropped.

use std::sync::{Arc, Mutex};

use schemas::args::MsgFilter;
use schemas::ExecuteArgs;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::live::{LiveOutput, RunOutput, StoppedJobs};
use crate::logs::forwarder::Forwarder;
use crate::logs::loglevels::{FilterError, LevelFilter};
use crate::logs::logline::Parsed;
use crate::logs::logstore::{Entry, LogStore, LogStoreError, Query, Settings, Source};
use crate::store::Store;

/// Receives a job's level-10 blocks: (`"<domain>.<name>."`, block text) → invalid lines.
pub type StatsSink = Arc<dyn Fn(&str, &str) -> usize + Send + Sync>;

/// Level of the supervisor's alerts and of critical messages.
pub(crate) const CRITICAL: u8 = 9;
const STATSD: u8 = 10;
const WARNING: u8 = 7;
/// Messages queued to the forwarder before the store waits for it.
const FORWARD_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("config `{key}`: {source}")]
    Filter {
        key: &'static str,
        source: FilterError,
    },
    #[error(transparent)]
    Store(#[from] LogStoreError),
}

/// The agent's logging: clones share the store and the forwarder.
#[derive(Clone)]
pub struct Logs {
    inner: Arc<Inner>,
}

struct Inner {
    store: LogStore,
    db: LevelFilter,
    ac: LevelFilter,
    stats: Option<StatsSink>,
    /// `None` when the config turns live output off.
    live: Option<LiveOutput>,
}

/// What a run's messages leave in its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Captured {
    /// The last result message (levels 20–23, 30), `""` when none.
    pub(crate) data: String,
    /// Its level, 0 when none.
    pub(crate) level: u8,
    /// The last level-9 message, `""` when none.
    pub(crate) critical: String,
}

impl Logs {
    /// Opens the log store in `<data_dir>/logs` and starts the forwarder into `outbox`.
    pub async fn start(
        config: &Config,
        outbox: Store,
        stats: Option<StatsSink>,
    ) -> Result<Logs, LogsError> {
        let filter = |key, expr: &str| {
            LevelFilter::parse(expr).map_err(|source| LogsError::Filter { key, source })
        };
        let db = filter("loglevels_db", &config.loglevels_db)?;
        let ac = filter("loglevels_ac", &config.loglevels_ac)?;
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        let settings = Settings {
            dir: config.data_dir.join("logs"),
            max_size: config.log_db_max_size,
            keep: config.log_db_keep,
        };
        let store = LogStore::open(settings, Some(tx)).await?;
        let outbox_for_live = outbox.clone();
        let forwarder =
            Forwarder::new(outbox, rx, config.log_batch_size, config.log_flush_interval);
        // Ends when the last handle of the log store is dropped, after a last push.
        tokio::spawn(forwarder.run());
        let live = config
            .output
            .then(|| LiveOutput::start(outbox_for_live, config.output_max_lines));
        Ok(Logs {
            inner: Arc::new(Inner {
                store,
                db,
                ac,
                stats,
                live,
            }),
        })
    }

    /// Logs over a given store (tests that hold the forwarding channel themselves).
    #[cfg(test)]
    pub(crate) fn from_store(store: LogStore) -> Logs {
        Logs {
            inner: Arc::new(Inner {
                store,
                db: LevelFilter::ALL,
                ac: LevelFilter::ALL,
                stats: None,
                live: None,
            }),
        }
    }

    /// The jobs whose live output the controller takes no more, for the uploader to fill (a
    /// set nobody reads when live output is off).
    pub(crate) fn stopped_output(&self) -> StoppedJobs {
        self.inner
            .live
            .as_ref()
            .map(|live| live.stopped().clone())
            .unwrap_or_default()
    }

    /// The logger of one run of a job; `Err` names the bad `loglevels*` argument.
    pub fn job_logger(&self, jobid: &str, args: &ExecuteArgs) -> Result<JobLogger, String> {
        let filter = |name: &str, expr: &Option<String>, default: LevelFilter| match expr {
            None => Ok(default),
            Some(expr) => LevelFilter::parse(expr).map_err(|e| format!("bad `{name}`: {e}")),
        };
        Ok(JobLogger {
            logs: self.clone(),
            source: Arc::new(Source {
                jobid: jobid.to_owned(),
                domain: args.domain.clone(),
                name: args.name.clone(),
            }),
            statsd_prefix: format!("{}.{}.", args.domain, args.name).into(),
            levels: filter("loglevels", &args.loglevels, LevelFilter::ALL)?,
            db: filter("loglevels_db", &args.loglevels_db, self.inner.db)?,
            ac: filter("loglevels_ac", &args.loglevels_ac, self.inner.ac)?,
            captured: Arc::new(Mutex::new(Captured::default())),
            live: match (&self.inner.live, args.output) {
                (Some(live), None | Some(true)) => Some(live.run(jobid)),
                _ => None,
            },
        })
    }

    /// A level-9 message of a job, stored and forwarded whatever the filters say (it reaches
    /// the controller's `alerts` stream): for the supervisor's own alerts.
    pub(crate) async fn alert(&self, jobid: &str, domain: &str, name: &str, text: &str) {
        let entry = Entry {
            source: Arc::new(Source {
                jobid: jobid.to_owned(),
                domain: domain.to_owned(),
                name: name.to_owned(),
            }),
            epoch: schemas::now_ms(),
            level: CRITICAL,
            data: text.to_owned(),
            store: true,
            forward: true,
        };
        if let Err(e) = self.inner.store.append(vec![entry]).await {
            tracing::error!(error = %e, jobid, text, "cannot log an alert");
        }
    }

    /// `get_msgs`: the matching messages as a JSON array (newest 1000, oldest first).
    pub(crate) async fn get_msgs(&self, filter: MsgFilter) -> Result<Value, String> {
        let messages = self
            .inner
            .store
            .get_msgs(query(filter)?)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::to_value(messages).map_err(|e| e.to_string())
    }

    /// `del_msgs`: deletes the matching messages; answers how many.
    pub(crate) async fn del_msgs(&self, filter: MsgFilter) -> Result<Value, String> {
        let deleted = self
            .inner
            .store
            .del_msgs(query(filter)?)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Value::from(deleted))
    }

    /// Resolves once every message logged before is stored and its forwarded part is in the
    /// outbox, and so is the live output handed over before (before the agent's final upload,
    /// and in tests).
    pub async fn flush(&self) {
        if let Err(e) = self.inner.store.flush().await {
            tracing::warn!(error = %e, "cannot flush the log store");
        }
        if let Some(live) = &self.inner.live {
            live.flush().await;
        }
    }
}

fn query(filter: MsgFilter) -> Result<Query, String> {
    let levels = match &filter.levels {
        None => LevelFilter::ALL,
        Some(expr) => LevelFilter::parse(expr).map_err(|e| format!("bad `levels`: {e}"))?,
    };
    Ok(Query {
        jobid: filter.jobid,
        timefrom: filter.timefrom,
        timeto: filter.timeto,
        levels,
    })
}

/// The logger of one run: shared by the readers of its stdout and stderr.
#[derive(Clone)]
pub struct JobLogger {
    logs: Logs,
    source: Arc<Source>,
    /// `"<domain>.<name>."`: the prefix of the job's statsd names.
    statsd_prefix: Arc<str>,
    levels: LevelFilter,
    db: LevelFilter,
    ac: LevelFilter,
    /// A std mutex: held only to copy a message in or out, never across an await.
    captured: Arc<Mutex<Captured>>,
    /// The run's live output, when on.
    live: Option<RunOutput>,
}

impl JobLogger {
    /// Handles parsed messages of the job; waits while the store is behind.
    pub(crate) async fn log(&self, parsed: Vec<Parsed>) -> Result<(), LogStoreError> {
        let epoch = schemas::now_ms();
        let mut entries = Vec::with_capacity(parsed.len());
        for p in parsed {
            if !self.levels.contains(p.level) {
                continue;
            }
            self.capture(&p);
            if p.level == STATSD {
                self.statsd(&p.text, epoch, &mut entries);
            }
            self.push(&mut entries, epoch, p.level, p.text);
        }
        self.logs.inner.store.append(entries).await
    }

    /// The run's live output hook, when live output is on for it.
    pub(crate) fn live(&self) -> Option<&RunOutput> {
        self.live.as_ref()
    }

    /// What the run's messages leave in its result so far.
    pub(crate) fn captured(&self) -> Captured {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.captured
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn capture(&self, p: &Parsed) {
        match p.level {
            20..=23 | 30 => {
                let mut captured = self.lock();
                captured.data.clone_from(&p.text);
                captured.level = p.level;
            }
            CRITICAL => self.lock().critical.clone_from(&p.text),
            _ => {}
        }
    }

    fn statsd(&self, text: &str, epoch: u64, entries: &mut Vec<Entry>) {
        let Some(sink) = &self.logs.inner.stats else {
            return;
        };
        let invalid = sink(&self.statsd_prefix, text);
        if invalid > 0 && self.levels.contains(WARNING) {
            let warning = format!("{invalid} invalid statsd line(s) ignored");
            self.push(entries, epoch, WARNING, warning);
        }
    }

    fn push(&self, entries: &mut Vec<Entry>, epoch: u64, level: u8, data: String) {
        let (store, forward) = (self.db.contains(level), self.ac.contains(level));
        if store || forward {
            entries.push(Entry {
                source: self.source.clone(),
                epoch,
                level,
                data,
                store,
                forward,
            });
        }
    }
}

#[cfg(test)]
mod tests;
