//! What a stored command turns into (DESIGN §5, §6.2): [`dispatch`] answers internal commands
//! (`ping`, `restart`, `get_msgs`, `kill`, …) or hands process commands to the supervisor, and
//! [`info`] reads the host facts the `get_*_info` commands answer with.

pub(crate) mod dispatch;
pub(crate) mod info;
