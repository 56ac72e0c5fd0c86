//! `TestServer`: the real `tracelake` binary on port 0 with its own data dir.
//!
//! Set `TEST_LOG=1` to see the server's logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary, with the caller's `TRACELAKE_*` settings removed so only
/// what a test passes configures it.
pub(crate) fn tracelake_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tracelake"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TRACELAKE_") {
            command.env_remove(key);
        }
    }
    command
}

pub(crate) struct TestServer {
    child: Option<Child>,
    /// Every `listening <name> <addr>` line read at start.
    pub(crate) listeners: std::collections::HashMap<String, SocketAddr>,
    pub(crate) otlp_grpc: SocketAddr,
    pub(crate) otlp_http: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) xray_udp: SocketAddr,
    pub(crate) xray_api: SocketAddr,
    /// Other stdout lines printed before the listening lines.
    pub(crate) early_lines: Vec<String>,
    /// Stdout after the listening lines, as it comes.
    later_lines: std::sync::Mutex<mpsc::Receiver<String>>,
}

pub(crate) struct TestServerBuilder {
    subcommand: String,
    /// How many `listening` lines to wait for (the demo prints more).
    listeners: usize,
    data_dir: PathBuf,
    flush_max_age: String,
    args: Vec<String>,
    /// Run as this user and group (the tests run as root).
    user: Option<u32>,
    /// The `--config` file, removed with the builder.
    config: Option<tempfile::TempPath>,
}

impl TestServerBuilder {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            subcommand: "serve".into(),
            listeners: 5,
            data_dir: data_dir.to_path_buf(),
            // Blocks are written on shutdown unless a test asks for more.
            flush_max_age: "1h".into(),
            args: Vec::new(),
            user: None,
            config: None,
        }
    }

    pub(crate) fn flush_max_age(mut self, age: &str) -> Self {
        self.flush_max_age = age.to_string();
        self
    }

    /// Runs another subcommand with the same listeners (`demo`), waiting
    /// for `listeners` listening lines.
    pub(crate) fn subcommand(mut self, subcommand: &str, listeners: usize) -> Self {
        self.subcommand = subcommand.to_string();
        self.listeners = listeners;
        self
    }

    /// Runs the server as `id` (user and group), without root's groups.
    pub(crate) fn user(mut self, id: u32) -> Self {
        self.user = Some(id);
        self
    }

    /// Runs with `toml` as the config file (readable by any user).
    pub(crate) fn config(mut self, toml: &str) -> Self {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut file = tempfile::NamedTempFile::new().expect("config file");
        file.write_all(toml.as_bytes()).expect("write config");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))
            .expect("config file mode");
        self.config = Some(file.into_temp_path());
        self
    }

    pub(crate) fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// The command [`Self::spawn`] runs.
    fn command(&self) -> Command {
        let mut command = tracelake_command();
        command
            .arg(&self.subcommand)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-xray-udp", "127.0.0.1:0"])
            .args(["--listen-xray-api", "127.0.0.1:0"])
            .args(["--listen-otlp-grpc", "127.0.0.1:0"])
            .args(["--listen-otlp-http", "127.0.0.1:0"])
            .args(["--listen-http", "127.0.0.1:0"])
            .args(["--flush-max-age", &self.flush_max_age])
            .args(&self.args)
            .stdin(Stdio::null());
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        if let Some(id) = self.user {
            use std::os::unix::process::CommandExt;
            command.uid(id).gid(id);
        }
        command
    }

    /// Runs a server that is expected to stop at start-up: its output.
    pub(crate) fn run_to_exit(&self) -> std::process::Output {
        self.command().output().expect("run tracelake")
    }

    pub(crate) fn spawn(&self) -> TestServer {
        let mut command = self.command();
        command
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().expect("spawn tracelake");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the listening lines: a closed pipe would
            // fail the server's later prints.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = sender.send(line);
            }
        });
        let mut addresses = std::collections::HashMap::new();
        let mut early_lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while addresses.len() < self.listeners {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = match receiver.recv_timeout(remaining) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!("tracelake did not print its listening lines (run with TEST_LOG=1)");
                }
            };
            let mut parts = line.split_whitespace();
            if !line.starts_with("listening ") {
                early_lines.push(line.clone());
            }
            if parts.next() == Some("listening") {
                let name = parts.next().expect("listener name").to_string();
                let address: SocketAddr = parts
                    .next()
                    .expect("address")
                    .parse()
                    .expect("socket address");
                addresses.insert(name, address);
            }
        }
        // A role serves some listeners only; the others read as 0.0.0.0:0.
        let address = |name: &str| {
            addresses
                .get(name)
                .copied()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
        };
        TestServer {
            child: Some(child),
            listeners: addresses.clone(),
            otlp_grpc: address("otlp-grpc"),
            otlp_http: address("otlp-http"),
            http: address("http"),
            xray_udp: address("xray-udp"),
            xray_api: address("xray-api"),
            early_lines,
            later_lines: std::sync::Mutex::new(receiver),
        }
    }
}

impl TestServer {
    /// The stdout lines printed after the listening lines, until none has
    /// come for `quiet`.
    pub(crate) fn later_lines(&self, quiet: Duration) -> Vec<String> {
        let receiver = self.later_lines.lock().expect("stdout lines");
        let mut lines = Vec::new();
        while let Ok(line) = receiver.recv_timeout(quiet) {
            lines.push(line);
        }
        lines
    }

    pub(crate) fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub(crate) fn otlp_http_url(&self) -> String {
        format!("http://{}", self.otlp_http)
    }

    pub(crate) fn xray_api_url(&self) -> String {
        format!("http://{}", self.xray_api)
    }

    pub(crate) fn otlp_grpc_url(&self) -> String {
        format!("http://{}", self.otlp_grpc)
    }

    /// Peak resident memory of the server process so far (`VmHWM`).
    pub(crate) fn peak_rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("server running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    /// The value of an unlabelled metric on `/metrics`.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    /// SIGKILL: no flush, no goodbye.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the server flushes its head to blocks.
    pub(crate) fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tracelake did not stop within 60s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// POST `query` to the SQL API at `base`; the JSON answer.
pub(crate) async fn sql(base: &str, query: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}/v1/sql"))
        .body(query.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
