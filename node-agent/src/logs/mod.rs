//! The log pipeline (DESIGN §6, §6.1): [`logline`] parses each stdout/stderr line into messages,
//! [`loglevels`] are the level filters, the [`logger`] applies a job's filters to its messages
//! (the agent-wide handle is [`Logs`]), the [`logstore`] keeps them in rotating SQLite files for
//! `get_msgs`, and the [`forwarder`] batches the `loglevels_ac` ones into the outbox.

pub(crate) mod forwarder;
pub(crate) mod logger;
pub mod loglevels;
pub mod logline;
pub(crate) mod logstore;

pub use logger::Logs;
