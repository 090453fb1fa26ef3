//! Test support: real `redis-server` and Kafka-protocol broker (tansu) processes on free
//! loopback ports, killed when dropped. Used by tests only, never by production code paths.
//!
//! The broker binary is found through `RISKSTREAM_TANSU_BIN`, else `.tools/bin/tansu` at the
//! repository root (where `scripts/install-test-deps` puts it).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; the race is negligible on a test box).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A free port P whose cluster-bus port P + 10000 is free too (Redis Cluster needs both).
fn free_cluster_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Below the kernel's ephemeral range; a per-process counter with a time-seeded start keeps
    // parallel tests and processes apart.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = (std::process::id() as u64 ^ nanos as u64) % 5000;
    let _ = NEXT.compare_exchange(0, 20_000 + seed as u16, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        if p > 31_000 {
            NEXT.store(20_000, Ordering::SeqCst);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited early with {status}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// A running `redis-server` on a free loopback port, with persistence off unless its extra
/// arguments turn it on (e.g. `--appendonly yes`).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments, kept for restarts.
    extra: Vec<String>,
}

/// A 3-node Redis Cluster (3 masters, no replicas) of `redis-server` processes on loopback,
/// created with `redis-cli --cluster create`. Killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    free_cluster_port(),
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli not found: run scripts/install-test-deps");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = cluster.nodes.iter().all(|n| {
                Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "redis cluster did not reach cluster_state:ok within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The store URL: `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// Number of keys on each node (to check that data is spread over the cluster).
    pub fn keys_per_node(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| {
                let out = Command::new("redis-cli")
                    .args(["-p", &n.port.to_string(), "dbsize"])
                    .output()
                    .expect("redis-cli");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts on a given port (used to restart a server on the same address).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts on a given port with extra `redis-server` arguments (e.g. cluster mode).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--dir",
                &self.dir.path().to_string_lossy(),
                "--logfile",
                &log.to_string_lossy(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/install-test-deps");
        wait_for_port(self.port, &mut child, "redis-server", &log);
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL), simulating an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory: empty, unless persistence was turned on
    /// (then it reloads its append-only file).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running tansu broker on a free loopback port: in-memory storage (lost when it stops), or
/// on an S3-compatible [`ObjectStore`] (kept across restarts).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// The S3 endpoint of a persistent broker.
    s3: Option<String>,
    /// The port clients are told to use (metadata), when not `port`: a proxy in front.
    advertised: Option<u16>,
}

/// Where the tansu binary is.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RISKSTREAM_TANSU_BIN") {
        return PathBuf::from(p);
    }
    repo_root().join(".tools/bin/tansu")
}

impl Broker {
    /// A broker with `memory://` storage: everything is lost when it stops.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A broker whose topics, records and committed offsets live in `store` (tansu's `s3://`
    /// engine), so [`Broker::restart`] keeps them.
    pub fn start_on(store: &ObjectStore) -> Self {
        Self::start_with(Some(store.endpoint()))
    }

    fn start_with(s3: Option<String>) -> Self {
        Self::launch(free_port(), s3, None)
    }

    fn launch(port: u16, s3: Option<String>, advertised: Option<u16>) -> Self {
        let mut broker = Broker {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            s3,
            advertised,
        };
        broker.spawn();
        broker
    }

    /// A `memory://` broker behind a TLS-terminating proxy ([`tls_proxy`]): it advertises the
    /// proxy's port, so clients reach it only with `security.protocol=SSL` and `tls`'s
    /// certificate as their CA. [`Broker::bootstrap`] is the proxy's address.
    pub fn start_behind_tls(tls: &TlsFiles) -> Self {
        Self::start_behind(|port| tls_proxy(port, tls))
    }

    /// A `memory://` broker behind a proxy: `proxy` gets the broker's port and returns the
    /// proxy's, which the broker advertises (every client connection then goes through it).
    /// [`Broker::bootstrap`] is the proxy's address.
    pub fn start_behind(proxy: impl FnOnce(u16) -> u16) -> Self {
        let port = free_port();
        let advertised = proxy(port);
        Self::launch(port, None, Some(advertised))
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("tansu.log");
        let bin = tansu_bin();
        assert!(
            bin.exists(),
            "tansu broker not found at {} (run scripts/install-test-deps)",
            bin.display()
        );
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let mut cmd = Command::new(&bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ]);
        match &self.s3 {
            None => {
                cmd.args(["--storage-engine", "memory://tansu/"]);
            }
            Some(endpoint) => {
                cmd.args(["--storage-engine", &format!("s3://{S3_BUCKET}/")])
                    .env("AWS_ENDPOINT", endpoint)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_DEFAULT_REGION", "eu-west-2");
            }
        }
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("cannot start tansu");
        wait_for_port(self.port, &mut child, "tansu", &log);
        self.child = Some(child);
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised.unwrap_or(self.port))
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker with SIGTERM (waiting up to 10 s for it to exit, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port after [`Broker::kill`] or [`Broker::stop`] (with
    /// `memory://` storage it comes back empty).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Creates a topic (tansu does not auto-create) with the broker's own CLI.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "creating topic {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bucket a persistent broker keeps its data in.
const S3_BUCKET: &str = "tansu";

/// Where the S3 stand-in is: `RISKSTREAM_MOTO_BIN`, else `.tools/moto/bin/moto_server` (put there
/// by `scripts/install-test-deps`).
pub fn moto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RISKSTREAM_MOTO_BIN") {
        return PathBuf::from(p);
    }
    repo_root().join(".tools/moto/bin/moto_server")
}

/// An S3-compatible object store on loopback (moto's server, from PyPI) with one bucket, for a
/// broker that must survive its own restart: this tansu build persists only to `s3://` (its
/// `postgres://` engine is not compiled in). Killed when dropped.
pub struct ObjectStore {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ObjectStore {
    pub fn start() -> Self {
        let bin = moto_bin();
        assert!(
            bin.exists(),
            "moto_server not found at {} (run scripts/install-test-deps)",
            bin.display()
        );
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("moto.log");
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start moto_server");
        wait_for_port(port, &mut child, "moto_server", &log);
        let store = ObjectStore {
            child: Some(child),
            port,
            _dir: dir,
        };
        store.create_bucket();
        store
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn create_bucket(&self) {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "PUT /{S3_BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("create bucket");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        assert!(
            reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
            "creating bucket: {reply}"
        );
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `riskstream_*` metric names a text mentions.
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("riskstream_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// A self-signed certificate for `127.0.0.1` / `localhost` and its key (PEM files made by the
/// `openssl` command line in a temporary directory), which clients trust as their CA.
pub struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .output()
            .expect("openssl not found");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TlsFiles { dir }
    }

    /// The certificate (also the CA clients trust).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Its private key (PKCS#8).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// A TLS-terminating proxy on a free loopback port: accepts TLS with `tls`'s certificate and
/// forwards the plain bytes to `127.0.0.1:target` (how a broker without TLS of its own is put
/// behind TLS). Returns the port; runs until the process ends.
pub fn tls_proxy(target: u16, tls: &TlsFiles) -> u16 {
    let cert = std::fs::read(tls.cert()).expect("cert");
    let key = std::fs::read(tls.key()).expect("key");
    let identity = native_tls::Identity::from_pkcs8(&cert, &key).expect("identity");
    let acceptor = tokio_native_tls::TlsAcceptor::from(
        native_tls::TlsAcceptor::new(identity).expect("acceptor"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
    });
    port
}
