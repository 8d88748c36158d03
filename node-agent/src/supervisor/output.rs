//! Reading a process's stdout and stderr: each chunk feeds the stream's [`Tail`] (the result's
//! `streams`) and its [`LineParser`], whose messages go to the run's [`JobLogger`] and whose
//! lines as printed go to the run's live output ([`RunOutput`]), which never makes a reader
//! wait. Once the readers are done, [`Readers::drain`] ends the live output of the run, so its
//! lines are in the outbox before its result.
//!
//! Backpressure: a reader waits for the log store to take its messages before it reads again,
//! so a process writing faster than the store blocks on its full pipe — it is slowed, never
//! killed, and no line is dropped.
//!
//! After the process ended ([`Readers::drain`]) the readers go on while output keeps coming
//! (the backlog of a fast writer is read to its end) and stop after [`IDLE`] without any, or
//! after [`MAX_DRAIN`] in all: something that left the process tree may hold a pipe open.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::live::RunOutput;
use crate::logs::logger::{Captured, JobLogger};
use crate::logs::logline::{LineParser, Parsed, Stream};
use crate::supervisor::tail::Tail;

/// After the process ended, a reader stops once its pipe was silent this long.
pub(crate) const IDLE: Duration = Duration::from_secs(2);
/// After the process ended, readers stop after this long whatever comes.
pub(crate) const MAX_DRAIN: Duration = Duration::from_secs(60);

const CHUNK: usize = 64 * 1024;

/// What a run printed: the tails of its streams and what its messages leave in the result.
#[derive(Debug, Default)]
pub struct Output {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) captured: Captured,
}

/// The readers of one run.
pub struct Readers {
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    logger: Option<JobLogger>,
    /// Cancelled when the process ended: readers then stop on an idle pipe.
    ended: CancellationToken,
    /// Cancelled after [`MAX_DRAIN`]: readers stop at once.
    stop: CancellationToken,
}

impl Readers {
    pub fn start<O, E>(stdout: Option<O>, stderr: Option<E>, logger: Option<JobLogger>) -> Readers
    where
        O: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let ended = CancellationToken::new();
        let stop = CancellationToken::new();
        let reader = |stream| Reader {
            stream,
            logger: logger.clone(),
            ended: ended.clone(),
            stop: stop.clone(),
        };
        let stdout = stdout.map(|r| tokio::spawn(reader(Stream::Stdout).run(r)));
        let stderr = stderr.map(|r| tokio::spawn(reader(Stream::Stderr).run(r)));
        Readers {
            stdout,
            stderr,
            logger,
            ended,
            stop,
        }
    }

    /// Once the process ended: waits for the readers (see the module rules) and takes the output.
    pub async fn drain(self) -> Output {
        self.ended.cancel();
        let join = |h: Option<JoinHandle<String>>| async move {
            match h {
                Some(h) => h.await.unwrap_or_default(),
                None => String::new(),
            }
        };
        let both = async { tokio::join!(join(self.stdout), join(self.stderr)) };
        tokio::pin!(both);
        let (stdout, stderr) = match tokio::time::timeout(MAX_DRAIN, both.as_mut()).await {
            Ok(tails) => tails,
            Err(_) => {
                tracing::warn!("output still coming after the process ended; it is cut off");
                self.stop.cancel();
                both.await
            }
        };
        if let Some(live) = self.logger.as_ref().and_then(JobLogger::live) {
            live.end().await;
        }
        Output {
            stdout,
            stderr,
            captured: self.logger.map(|l| l.captured()).unwrap_or_default(),
        }
    }
}

struct Reader {
    stream: Stream,
    logger: Option<JobLogger>,
    ended: CancellationToken,
    stop: CancellationToken,
}

impl Reader {
    /// Reads to the end of the stream (or until stopped); returns its tail.
    async fn run<R: AsyncRead + Unpin>(self, mut reader: R) -> String {
        let mut tail = Tail::default();
        let live = self.logger.as_ref().and_then(JobLogger::live);
        let mut parser = match live {
            Some(_) => LineParser::with_lines(self.stream),
            None => LineParser::new(self.stream),
        };
        let mut buf = vec![0u8; CHUNK];
        while let Some(n) = self.read(&mut reader, &mut buf).await {
            tail.feed(&buf[..n]);
            if self.logger.is_some() {
                let parsed: Vec<Parsed> = parser.feed(&buf[..n]).collect();
                self.forward(live, &mut parser);
                self.log(parsed).await;
            }
        }
        if self.logger.is_some() {
            let parsed: Vec<Parsed> = parser.finish().collect();
            self.forward(live, &mut parser);
            self.log(parsed).await;
        }
        tail.into_text()
    }

    /// Hands the lines just parsed to the run's live output; stops keeping lines once it
    /// wants no more (its cap, or the controller stopped the job), then only counts them.
    fn forward(&self, live: Option<&RunOutput>, parser: &mut LineParser) {
        let Some(live) = live else { return };
        let lines = parser.take_lines();
        if !lines.is_empty() {
            live.offer(self.stream.fd(), lines);
        }
        let skipped = parser.take_skipped();
        if skipped > 0 {
            live.skipped(skipped);
        }
        if !live.wants_lines() {
            parser.keep_lines(false);
        }
    }

    /// The next chunk's length; `None` at the end, on an error, or when told to stop.
    async fn read<R: AsyncRead + Unpin>(&self, reader: &mut R, buf: &mut [u8]) -> Option<usize> {
        if !self.ended.is_cancelled() {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return None,
                read = reader.read(buf) => return read.ok().filter(|&n| n > 0),
                // Reading is cancel-safe: nothing read is lost by leaving this branch.
                _ = self.ended.cancelled() => {}
            }
        }
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            read = tokio::time::timeout(IDLE, reader.read(buf)) => match read {
                Ok(Ok(n)) if n > 0 => Some(n),
                _ => None,
            },
        }
    }

    async fn log(&self, parsed: Vec<Parsed>) {
        let Some(logger) = &self.logger else { return };
        if parsed.is_empty() {
            return;
        }
        if let Err(e) = logger.log(parsed).await {
            tracing::error!(error = %e, "cannot log a job's output");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::logger::Logs;
    use crate::logs::logstore::{Forwarded, LogStore, Settings};
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    const LINES: usize = 200_000;

    /// A writer far faster than a stalled store is held in its pipe, then catches up: every
    /// line arrives, in order.
    #[tokio::test]
    async fn a_fast_writer_is_slowed_through_its_pipe_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("jsagent-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A forwarder that takes nothing yet: the store stalls on it, its queue fills up.
        let (tx, mut rx) = mpsc::channel(1);
        let settings = Settings {
            dir: dir.clone(),
            max_size: 1 << 40,
            keep: 1,
        };
        let store = LogStore::open(settings, Some(tx)).await.unwrap();
        let logs = Logs::from_store(store);
        let logger = logs.job_logger("j", &Default::default()).unwrap();
        let (mut pipe, output) = tokio::io::duplex(4096);
        let readers = Readers::start(Some(output), None::<tokio::io::DuplexStream>, Some(logger));
        let mut writer = tokio::spawn(async move {
            for i in 0..LINES {
                pipe.write_all(format!("{i}\n").as_bytes()).await.unwrap();
            }
        });
        // What the queues can hold is far less than LINES: the writer must be waiting.
        let held = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        assert!(held.is_err(), "the writer was not slowed");

        let mut got: Vec<String> = Vec::new();
        let collect = async {
            while let Some(op) = rx.recv().await {
                match op {
                    Forwarded::Messages(ms) => got.extend(ms.into_iter().map(|m| m.data)),
                    Forwarded::Flush(reply) => {
                        let _ = reply.send(());
                        break;
                    }
                }
            }
        };
        let finish = async {
            writer.await.unwrap();
            readers.drain().await;
            logs.flush().await;
        };
        tokio::join!(collect, finish);
        assert_eq!(got.len(), LINES);
        assert!(
            got.iter().enumerate().all(|(i, d)| *d == i.to_string()),
            "out of order"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
