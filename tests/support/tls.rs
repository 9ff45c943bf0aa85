//! TLS for the broker tests: a certificate authority, broker and client certificates made with
//! the `openssl` command, and a real TLS terminator (stunnel, from Debian) in front of tansu's
//! plain listener. tansu 0.6.0 has `--cert`/`--key` flags but declares them mutually exclusive
//! (one clap group), so it cannot serve TLS itself; the broker advertises the terminator's
//! port, so every connection a client makes goes through TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command is needed for the TLS tests (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keys and certificates in one directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A CA (`ca.pem`), a broker certificate for 127.0.0.1 signed by it (`broker.pem`,
    /// `broker.key`), a client certificate signed by it (`client.pem`, `client.key`), and an
    /// unrelated CA (`other-ca.pem`) for the wrong-CA case.
    pub fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        for ca in ["ca", "other-ca"] {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=tracesift-test-{ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        std::fs::write(
            dir.join("san.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        for (name, cn) in [("broker", "127.0.0.1"), ("client", "tracesift-client")] {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    "san.cnf",
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// A file of this PKI.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn stunnel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACESIFT_STUNNEL") {
        return PathBuf::from(p);
    }
    for p in ["/usr/bin/stunnel4", "/usr/bin/stunnel"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("stunnel not found (Debian package stunnel4; ./deploy/local/test.sh installs it, or set TRACESIFT_STUNNEL)");
}

/// stunnel accepting TLS on a port of its own and forwarding to a plain one; stopped on drop.
pub struct Terminator {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Terminator {
    /// Terminates TLS on `port` with the PKI's broker certificate and forwards to
    /// `127.0.0.1:backend`; with `mutual`, clients must present a certificate signed by the CA.
    pub fn start(pki: &Pki, port: u16, backend: u16, mutual: bool) -> Terminator {
        let conf = pki.dir.join(format!("stunnel-{port}.conf"));
        let log = pki.dir.join(format!("stunnel-{port}.log"));
        let verify = match mutual {
            true => format!(
                "verifyChain = yes\nrequireCert = yes\nCAfile = {}\n",
                pki.path("ca.pem")
            ),
            false => String::new(),
        };
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\ncert = {}\nkey = {}\n{verify}",
                log.display(),
                pki.path("broker.pem"),
                pki.path("broker.key"),
            ),
        )
        .unwrap();
        let child = Command::new(stunnel_bin())
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start stunnel");
        let t = Terminator { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen on {port}: {}",
                std::fs::read_to_string(&t.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    /// A free port for a terminator.
    pub fn free() -> u16 {
        free_port()
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
