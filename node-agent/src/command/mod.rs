//! What a stored command turns into (DESIGN §5, §6.2): [`dispatch`] answers internal commands
//! (`ping`, `restart`, `get_msgs`, `kill`, …) or hands process commands to the supervisor,
//! [`info`] reads the host facts the `get_*_info` commands answer with, and [`files`] writes and
//! reads files for `put_file` and `get_file`.

pub(crate) mod dispatch;
pub(crate) mod files;
pub(crate) mod info;
