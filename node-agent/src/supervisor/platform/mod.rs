//! What differs between Linux and Windows: keeping a job's whole process tree together so one
//! kill ends it (a process group on unix, a Job Object on Windows), exit signals, and the
//! signals that stop the agent. Each side is small; only the Windows side needs `unsafe`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;
