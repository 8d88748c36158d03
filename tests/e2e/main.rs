//! End-to-end tests: real redis-server, jsacc and jsagent processes (see `tests/util`).
//! One test binary, so the processes' binaries are built once.

mod acl;
mod agent_tls;
mod bad_input;
mod command_path;
mod config_jobs;
mod cron;
mod dev;
mod durability;
mod enroll;
mod faults;
mod history;
mod hostile;
mod kill;
mod logs;
mod max_wait;
mod operator_api;
mod oversized;
mod redis_bounds;
mod redis_tls;
mod rollout;
mod stats;
mod supervised;
mod topology;
mod topology_tls;
mod wine;
