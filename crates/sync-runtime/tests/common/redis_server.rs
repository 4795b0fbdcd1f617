//! A private redis-server for a test (on a unix socket in a temp dir), killed on drop.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// A redis-server child process with AOF on (`appendfsync always`), so a kill loses nothing
/// it acknowledged.
pub struct RedisServer {
    binary: PathBuf,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one: from `REDIS_SERVER`, else `redis-server` on `PATH`. `None` means skip
    /// (not found, outside CI); under CI a missing server fails the test.
    #[allow(clippy::print_stderr)] // The skip note is for the person running the tests.
    pub fn start() -> Option<Self> {
        let binary = std::env::var_os("REDIS_SERVER")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join("redis-server"))
                        .find(|p| p.is_file())
                })
            });
        let Some(binary) = binary else {
            let message = "redis-server not found (set REDIS_SERVER or put it on PATH)";
            assert!(!super::is_ci(), "{message}: CI must run the Redis tests");
            eprintln!("note: {message}; skipping this Redis test");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("rt")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut server = Self {
            binary,
            dir,
            child: None,
        };
        server.launch();
        Some(server)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// A `redis+unix://` URL for it.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn launch(&mut self) {
        let socket = self.socket();
        let dir = self
            .dir
            .path()
            .to_str()
            .expect("utf-8 temp path")
            .to_owned();
        let child = Command::new(&self.binary)
            .args([
                "--port",
                "0",
                "--unixsocket",
                socket.to_str().expect("utf-8 temp path"),
            ])
            .args([
                "--unixsocketperm",
                "700",
                "--dir",
                &dir,
                "--save",
                "",
                "--daemonize",
                "no",
            ])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--logfile",
                "redis.log",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        // Bounded wait for an external process to serve (not a timing assertion).
        for _ in 0..1000 {
            if let Ok(mut stream) = UnixStream::connect(&socket) {
                let mut reply = [0u8; 8];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read(&mut reply).is_ok_and(|n| n > 0)
                    && !reply.starts_with(b"-LOADING")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not answer PING");
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same directory and socket (its AOF is replayed).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
