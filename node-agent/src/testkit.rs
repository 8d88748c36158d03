//! Test set-up shared by the agent's unit tests: a fresh data dir, a config for it, its store
//! and a dispatcher over a real supervisor.

use std::path::PathBuf;

use crate::config::{Config, FileConfig, Flags};
use crate::dispatch::Dispatcher;
use crate::logger::Logs;
use crate::store::Store;
use crate::supervisor::Supervisor;

/// An agent 1:2 with its data in a new temporary dir named after `name`.
pub struct Kit {
    pub dir: PathBuf,
    pub config: Config,
    pub store: Store,
    pub dispatcher: Dispatcher,
    pub supervisor: Supervisor,
}

pub async fn kit(name: &str) -> Kit {
    let dir = std::env::temp_dir().join(format!("jsagent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let flags = Flags {
        controller: Some("http://127.0.0.1:1".into()),
        gid: Some(1),
        nid: Some(2),
        data_dir: Some(dir.clone()),
        ..Default::default()
    };
    let config = Config::resolve(flags, FileConfig::default(), Some("t".into()), "/".into())
        .expect("test config");
    let store = Store::open(&dir.join("agent.db")).await.expect("store");
    let logs = Logs::start(&config, store.clone(), None)
        .await
        .expect("logs");
    let supervisor = Supervisor::new(&config, store.clone(), logs.clone());
    let dispatcher = Dispatcher::new(store.clone(), supervisor.clone(), logs, 1, 2);
    Kit {
        dir,
        config,
        store,
        dispatcher,
        supervisor,
    }
}
