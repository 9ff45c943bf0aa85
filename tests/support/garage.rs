//! A single-node Garage (S3-compatible object store) for the tier tests, stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, garage_bin};

/// A running Garage with one bucket and a read-write key.
pub struct Garage {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Access key id.
    pub key_id: String,
    /// Secret key.
    pub secret: String,
    config: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Starts the server on `config`, its output appended to `dir/server.log`.
fn spawn_server(config: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    Command::new(garage_bin())
        .arg("-c")
        .arg(config)
        .arg("server")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("cannot start garage")
}

/// Runs a garage admin command; retried for up to 15 s, since a fresh node answers some
/// commands with transient errors while its layout settles.
fn admin(config: &Path, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new(garage_bin())
            .arg("-c")
            .arg(config)
            .args(args)
            .output()
            .expect("cannot run garage");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "garage {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no `{name}` in garage output:\n{text}"))
}

impl Garage {
    /// Starts Garage on free ports, lays out one node, creates `bucket` and a key for it.
    pub fn start(bucket: &str) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc, adm) = (free_port(), free_port(), free_port());
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{adm}"
"#,
                d = dir.path().display()
            ),
        )
        .unwrap();
        let child = spawn_server(&config, dir.path());
        // Wait for the node to answer.
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&config)
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .split('@')
                    .next()
                    .unwrap()
                    .to_string();
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        admin(
            &config,
            &["layout", "assign", "-z", "dc1", "-c", "1G", &node],
        );
        admin(&config, &["layout", "apply", "--version", "1"]);
        admin(&config, &["bucket", "create", bucket]);
        let key = admin(&config, &["key", "create", "tracesift-test"]);
        let key_id = field(&key, "Key ID:");
        let secret_key = field(&key, "Secret key:");
        admin(
            &config,
            &[
                "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", &key_id,
            ],
        );
        Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: bucket.to_string(),
            key_id,
            secret: secret_key,
            config,
            child,
            _dir: dir,
        }
    }

    /// The `options:` block of a tier in this Garage.
    /// Stops the server (SIGKILL): the S3 port refuses connections until [`Garage::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data, and waits until its S3 port answers.
    pub fn restart(&mut self) {
        self.child = spawn_server(&self.config, self._dir.path());
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "garage did not come back");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn tier_options_yaml(&self, indent: &str) -> String {
        format!(
            "{indent}options:\n{indent}  endpoint: {}\n{indent}  region: garage\n{indent}  access_key_id: {}\n{indent}  secret_access_key: {}\n{indent}  allow_http: \"true\"\n",
            self.endpoint, self.key_id, self.secret
        )
    }

    /// pyarrow's S3 filesystem constructor for this Garage (Python expression).
    pub fn pyarrow_fs(&self) -> String {
        format!(
            "pyarrow.fs.S3FileSystem(access_key='{}', secret_key='{}', endpoint_override='{}', region='garage', scheme='http')",
            self.key_id, self.secret, self.endpoint
        )
    }

    /// Garage's own view of the bucket (objects), for failure messages.
    pub fn bucket_info(&self) -> String {
        admin(&self.config, &["bucket", "info", &self.bucket])
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
