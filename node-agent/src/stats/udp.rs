//! The local statsd UDP listener (DESIGN §7, config `statsd_listen`, e.g. `127.0.0.1:8125`):
//! every datagram is a block of statsd lines fed to the [`Stats`] aggregator without a prefix,
//! so programs that are not jobs of this agent (or jobs that prefer a statsd client library)
//! report under the names they choose.
//!
//! The socket's receive buffer is raised to [`RECV_BUFFER`] (the kernel may cap it, on Linux at
//! `net.core.rmem_max`): a burst that outruns the reader waits there instead of being dropped.
//! Invalid lines are counted in `jsagent.statsd.invalid`; nothing is logged per datagram.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Receive buffer asked of the kernel.
pub(crate) const RECV_BUFFER: usize = 8 << 20;
/// Largest datagram read (the UDP maximum).
const MAX_DATAGRAM: usize = 65_536;

pub struct StatsdListener {
    socket: UdpSocket,
    stats: Stats,
}

impl StatsdListener {
    /// Binds `addr`. Must run inside a tokio runtime.
    pub async fn bind(addr: SocketAddr, stats: Stats) -> std::io::Result<StatsdListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
            tracing::warn!(error = %e, "cannot raise the statsd receive buffer");
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        tracing::info!(addr = %socket.local_addr()?, "listening for statsd over UDP");
        Ok(StatsdListener { socket, stats })
    }

    /// The bound address (its port, when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                r = self.socket.recv_from(&mut buf) => r,
                _ = shutdown.cancelled() => break,
            };
            match received {
                Ok((n, _)) => self.feed(&buf[..n]),
                // ICMP errors and the like surface here on some systems; the socket stays usable.
                Err(e) => tracing::debug!(error = %e, "statsd receive failed"),
            }
        }
    }

    fn feed(&self, datagram: &[u8]) {
        match std::str::from_utf8(datagram) {
            Ok(text) => self.stats.statsd("", text),
            Err(_) => self.stats.statsd("", &String::from_utf8_lossy(datagram)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Sends one datagram and returns the flush it ends up in (one datagram is fed under one
    /// lock, so it is never split over flushes).
    async fn round(stats: &Stats, addr: SocketAddr, datagram: &[u8]) -> Vec<schemas::Metric> {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sender.send_to(datagram, addr).await.unwrap();
        let received = async {
            loop {
                tokio::task::yield_now().await;
                let flushed = stats.flush(1.0);
                if !flushed.is_empty() {
                    return flushed;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), received)
            .await
            .expect("the datagram never reached the aggregates")
    }

    #[tokio::test]
    async fn datagrams_are_aggregated_without_a_prefix() {
        let stats = Stats::new();
        let listener = StatsdListener::bind("127.0.0.1:0".parse().unwrap(), stats.clone())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.run(stop.clone()));

        let flushed = round(
            &stats,
            addr,
            b"udp.hits:2|c\nudp.hits:3|c\nudp.temp:7|g\ngarbage",
        )
        .await;
        let get = |k: &str| {
            flushed
                .iter()
                .find(|m| m.key == k)
                .map(|m| m.values.clone())
        };
        assert_eq!(get("udp.hits").unwrap()["sum"], json!(5.0));
        assert_eq!(get("udp.temp").unwrap()["value"], json!(7.0));
        assert_eq!(get("jsagent.statsd.invalid").unwrap()["sum"], json!(1.0));

        // Bytes that are not UTF-8 are replaced, not a reason to drop the datagram.
        let flushed = round(&stats, addr, b"\xff:1|c\nok:1|c").await;
        let keys: Vec<&str> = flushed.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["ok", "\u{fffd}"]);
        stop.cancel();
        task.await.unwrap();
    }
}
