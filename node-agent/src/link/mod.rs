//! The link to the controller (DESIGN §5, §8): the HTTP [`client`] of its agent API over the
//! trust of [`tls`]; the [`poller`] that says hello, long-polls for commands, stores them and
//! hands them to the dispatcher; the [`uploader`] that posts the durable outbox; and the jittered
//! [`backoff`] every retry of both follows.

pub(crate) mod backoff;
pub(crate) mod client;
pub(crate) mod poller;
pub(crate) mod tls;
pub(crate) mod uploader;
