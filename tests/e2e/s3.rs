//! Real S3-compatible servers on loopback for the multi-node tests:
//! Garage (a distributed object store; it ignores conditional writes) and
//! moto's server (honours `If-None-Match` / `If-Match`). `scripts/test.sh`
//! installs both and sets `TRACELAKE_TEST_GARAGE` and `TRACELAKE_TEST_MOTO`.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct S3Server {
    child: Child,
    /// The server's files, removed with it.
    _dir: tempfile::TempDir,
    pub(crate) endpoint: String,
    region: &'static str,
    access_key_id: String,
    secret_file: PathBuf,
    pub(crate) bucket: &'static str,
}

const BUCKET: &str = "tracelake-test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("local address")
        .port()
}

fn tool(variable: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(variable).unwrap_or_else(|| {
        panic!("{variable} is not set: run the suite with scripts/test.sh, which installs it")
    }))
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_ok(command: &mut Command) -> String {
    let output: Output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl S3Server {
    /// A single-node Garage cluster with one bucket and one key.
    pub(crate) fn garage() -> Self {
        let binary = tool("TRACELAKE_TEST_GARAGE");
        let dir = tempfile::tempdir().expect("garage dir");
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        // Loopback only; the RPC secret just has to be 32 bytes of hex.
        let secret = "7f3c9a1e5b2d48f6a0c4e8b1d3f5a7c9e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1";
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .expect("garage config");
        let garage = |args: &[&str]| {
            let mut command = Command::new(&binary);
            command.arg("-c").arg(&config).args(args);
            command
        };
        let mut child = garage(&["server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn garage");
        wait_for_port(rpc_port, &mut child, "garage");
        wait_for_port(s3_port, &mut child, "garage");
        let node = run_ok(&mut garage(&["node", "id", "-q"]));
        let node = node.trim().split('@').next().expect("node id").to_string();
        run_ok(&mut garage(&[
            "layout", "assign", "-z", "dc1", "-c", "1G", &node,
        ]));
        run_ok(&mut garage(&["layout", "apply", "--version", "1"]));
        run_ok(&mut garage(&["bucket", "create", BUCKET]));
        let key = run_ok(&mut garage(&["key", "create", "tracelake-test"]));
        let field = |name: &str| {
            key.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in garage's key output: {key}"))
        };
        let (access_key_id, secret_key) = (field("Key ID:"), field("Secret key:"));
        run_ok(&mut garage(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "tracelake-test",
        ]));
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, secret_key).expect("secret file");
        Self {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            region: "garage",
            access_key_id,
            secret_file,
            bucket: BUCKET,
        }
    }

    /// moto's S3 server with one bucket (any key is accepted).
    pub(crate) fn moto() -> Self {
        let binary = tool("TRACELAKE_TEST_MOTO");
        let dir = tempfile::tempdir().expect("moto dir");
        let port = free_port();
        let mut child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        wait_for_port(port, &mut child, "moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        // CreateBucket (moto checks no signature).
        let mut connection = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        std::io::Write::write_all(
            &mut connection,
            format!("PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("create bucket");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut connection, &mut answer).expect("create bucket answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "test-secret").expect("secret file");
        Self {
            child,
            _dir: dir,
            endpoint,
            region: "us-east-1",
            access_key_id: "test-key".into(),
            secret_file,
            bucket: BUCKET,
        }
    }

    /// The `storage` and `[s3]` part of a tracelake config for `prefix`.
    pub(crate) fn config(&self, prefix: &str) -> String {
        format!(
            "storage = \"s3://{bucket}/{prefix}\"\n[s3]\nendpoint = \"{endpoint}\"\nregion = \"{region}\"\n\
             access_key_id = \"{key}\"\nsecret_access_key_file = \"{secret}\"\n",
            bucket = self.bucket,
            endpoint = self.endpoint,
            region = self.region,
            key = self.access_key_id,
            secret = self.secret_file.display(),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
