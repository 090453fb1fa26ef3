//! Liveness and readiness of this worker process, and the HTTP endpoint that serves them with
//! the Prometheus metrics.
//!
//! The stages report what they see into one process-wide [`Health`] (atomics, no locks):
//! librdkafka's statistics say whether a broker is up, the rebalance callback how many
//! partitions are assigned, the serving snapshot whether models are loaded, the enrich stage
//! whether the feature store answers. The endpoint answers
//!
//! - `GET /healthz`: 200 while the process serves requests (its runtime is alive);
//! - `GET /readyz`: 200 when models are loaded, a broker is reachable and the worker is not
//!   shutting down; 503 otherwise. Partitions assigned or still waiting for an assignment are
//!   both ready (a group member with no partition is healthy); a feature store that does not
//!   answer is ready too, because the degraded policy decides without it. The JSON body says
//!   every component's state either way;
//! - `GET /metrics`: the Prometheus text format.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the worker reports about itself.
#[derive(Debug)]
pub struct Health {
    /// A broker answered (librdkafka statistics: some broker `UP`), or `false` after librdkafka
    /// said all brokers are down.
    broker_up: AtomicBool,
    /// Whether any statistics or broker error has been seen yet.
    broker_known: AtomicBool,
    /// A broker has answered at least once since the start.
    broker_ever_up: AtomicBool,
    /// Partitions currently assigned to this member (−1: not subscribed yet).
    assigned: AtomicI64,
    models_loaded: AtomicBool,
    /// The last feature-store call failed (scoring degraded).
    store_degraded: AtomicBool,
    shutting_down: AtomicBool,
}

static HEALTH: Health = Health {
    broker_up: AtomicBool::new(false),
    broker_known: AtomicBool::new(false),
    broker_ever_up: AtomicBool::new(false),
    assigned: AtomicI64::new(-1),
    models_loaded: AtomicBool::new(false),
    store_degraded: AtomicBool::new(false),
    shutting_down: AtomicBool::new(false),
};

/// The process-wide health.
pub fn health() -> &'static Health {
    &HEALTH
}

impl Health {
    pub fn set_broker_up(&self, up: bool) {
        let known = self.broker_known.swap(true, Ordering::Relaxed);
        if up {
            self.broker_ever_up.store(true, Ordering::Relaxed);
        }
        let was = self.broker_up.swap(up, Ordering::Relaxed);
        if !known || was != up {
            if up {
                tracing::info!("broker reachable");
            } else {
                tracing::error!(
                    "no broker reachable: the worker is not ready (/readyz 503) until one answers"
                );
            }
        }
    }
    /// Whether a broker has answered since the process started.
    pub fn broker_ever_up(&self) -> bool {
        self.broker_ever_up.load(Ordering::Relaxed)
    }
    /// Partitions assigned (+) or revoked (−) by a rebalance.
    pub fn add_assigned(&self, delta: i64) {
        let _ = self
            .assigned
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                Some((a.max(0) + delta).max(0))
            });
    }
    pub fn set_models_loaded(&self, loaded: bool) {
        self.models_loaded.store(loaded, Ordering::Relaxed);
    }
    pub fn set_store_degraded(&self, degraded: bool) {
        let was = self.store_degraded.swap(degraded, Ordering::Relaxed);
        if was != degraded {
            if degraded {
                tracing::warn!("feature store unavailable: scoring degraded until it answers");
            } else {
                tracing::info!("feature store answers again: scoring no longer degraded");
            }
        }
    }
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Ready, and the JSON body describing every component.
    pub fn readiness(&self) -> (bool, String) {
        let broker = match (
            self.broker_known.load(Ordering::Relaxed),
            self.broker_up.load(Ordering::Relaxed),
        ) {
            (false, _) => "connecting",
            (true, true) => "up",
            (true, false) => "down",
        };
        let models = self.models_loaded.load(Ordering::Relaxed);
        let shutting_down = self.shutting_down.load(Ordering::Relaxed);
        let assigned = self.assigned.load(Ordering::Relaxed);
        let ready = models && broker == "up" && !shutting_down;
        let body = format!(
            "{{\"ready\":{ready},\"broker\":\"{broker}\",\"models_loaded\":{models},\
             \"assigned_partitions\":{},\"group\":\"{}\",\"feature_store\":\"{}\",\"shutting_down\":{shutting_down}}}\n",
            assigned.max(0),
            if assigned > 0 {
                "assigned"
            } else {
                "waiting_for_assignment"
            },
            if self.store_degraded.load(Ordering::Relaxed) {
                "degraded"
            } else {
                "ok"
            },
        );
        (ready, body)
    }
}

/// Reads librdkafka statistics: is some broker up?
pub fn observe_brokers(stats: &rdkafka::Statistics) {
    let known: Vec<&rdkafka::statistics::Broker> =
        stats.brokers.values().filter(|b| b.nodeid >= 0).collect();
    if known.is_empty() {
        // Only the bootstrap entries: up if one of them is connected.
        let up = stats.brokers.values().any(|b| b.state == "UP");
        health().set_broker_up(up);
    } else {
        health().set_broker_up(known.iter().any(|b| b.state == "UP"));
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` (rendered by `render_metrics`) on `listener`
/// until the process ends. HTTP/1.1, one request per connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render_metrics: impl Fn() -> String + Send + Sync + 'static,
) {
    let render = std::sync::Arc::new(render_metrics);
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (a GET has no body we need).
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let r = socket.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut parts = head.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("");
            let (status, content_type, body) = match (method, path) {
                ("GET" | "HEAD", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                ("GET" | "HEAD", "/readyz") => {
                    let (ready, body) = health().readiness();
                    (
                        if ready {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        },
                        "application/json",
                        body,
                    )
                }
                ("GET" | "HEAD", "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(),
                ),
                ("GET" | "HEAD", _) => (
                    "404 Not Found",
                    "text/plain",
                    "not found: /healthz, /readyz, /metrics\n".to_string(),
                ),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_string(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            if method != "HEAD" {
                let _ = socket.write_all(body.as_bytes()).await;
            }
            let _ = socket.shutdown().await;
        });
    }
}

/// Binds `addr` and serves the endpoints in the background.
pub async fn spawn(
    addr: SocketAddr,
    render_metrics: impl Fn() -> String + Send + Sync + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, render_metrics));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_follow_the_reported_state() {
        let addr = spawn("127.0.0.1:0".parse().unwrap(), || "m 1\n".to_string())
            .await
            .unwrap();
        let h = health();
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".to_string()));
        assert_eq!(get(addr, "/metrics").await, (200, "m 1\n".to_string()));
        assert_eq!(get(addr, "/nope").await.0, 404);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503, "nothing loaded yet: {body}");
        assert!(body.contains("\"broker\":\"connecting\""), "{body}");
        h.set_models_loaded(true);
        h.set_broker_up(true);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("\"group\":\"waiting_for_assignment\""),
            "{body}"
        );
        h.add_assigned(4);
        h.set_store_degraded(true);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 200, "a degraded store still scores: {body}");
        assert!(
            body.contains("\"assigned_partitions\":4")
                && body.contains("\"feature_store\":\"degraded\""),
            "{body}"
        );
        h.set_broker_up(false);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        h.set_broker_up(true);
        h.set_shutting_down();
        assert_eq!(get(addr, "/readyz").await.0, 503);
    }
}
