//! A private `redis-server` for tests: started on a unix socket in its own temp dir, killed on
//! drop.
//!
//! The binary comes from `REDIS_SERVER`, else `redis-server` on `PATH`. When it is missing a
//! test skips (with a note on stderr), except under CI (`CI` set and not `false`/`0`), where it
//! fails: CI must run the Redis tests.
//!
//! These are test helpers: they panic, with a message, when the server cannot be started or
//! does not answer, which is what a test wants.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// A redis-server child process listening on a unix socket in its own temp dir.
pub struct RedisServer {
    binary: PathBuf,
    args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

/// True when running under CI (`CI` set, and not `false` or `0`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// The first file named `program` in a directory of `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Where redis-server is: `REDIS_SERVER` when set (a value that names no file counts as
/// missing), else `redis-server` on `PATH`. Says nothing when it is missing.
pub fn locate() -> Option<PathBuf> {
    match std::env::var_os("REDIS_SERVER").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => which("redis-server"),
    }
}

/// Finds redis-server ([`locate`]) for a test. When it is missing the test fails under CI
/// and is skipped (with a note) elsewhere.
#[allow(clippy::print_stderr)] // The skip note is for the person running the tests.
pub fn find_binary() -> Option<PathBuf> {
    let found = locate();
    if found.is_none() {
        let message = "redis-server not found (set REDIS_SERVER or put it on PATH)";
        assert!(!is_ci(), "{message}: CI must run the Redis tests");
        eprintln!("note: {message}; skipping this Redis test");
    }
    found
}

impl RedisServer {
    /// Starts a server without persistence. `None` means skip (no redis-server here).
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        let binary = find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("redis")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let socket = dir.path().join("redis.sock");
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--unixsocket",
            socket.to_str().expect("utf-8 temp path"),
            "--unixsocketperm",
            "700",
            "--dir",
            dir.path().to_str().expect("utf-8 temp path"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Self {
            binary,
            args,
            dir,
            child: None,
        };
        server.launch();
        Some(server)
    }

    /// The unix socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `redis+unix://` URL for the server.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn launch(&mut self) {
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server answers PING (it may be loading its AOF first).
    fn wait_ready(&mut self) {
        for _ in 0..1000 {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server exited with {status}:\n{log}");
            }
            if let Ok(mut stream) = UnixStream::connect(self.socket()) {
                // Any answer but -LOADING means it serves commands (with ACLs on, PING
                // without AUTH gets -NOAUTH, which is ready too).
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

    /// Kills the server at once (SIGKILL): no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again with the same arguments, directory and socket.
    pub fn restart(&mut self) {
        self.kill();
        // A killed server leaves its socket file behind; the new one replaces it.
        self.launch();
    }

    /// Runs one command over a plain connection (for the tests' own setup, like planting
    /// garbage), returning the raw reply.
    pub fn raw(&self, args: &[&str]) -> String {
        let mut stream = UnixStream::connect(self.socket()).expect("connect");
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(command.as_bytes()).expect("send");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        // Small replies only: read until the first line ends.
        loop {
            let n = stream.read(&mut buf).expect("read");
            reply.extend_from_slice(&buf[..n]);
            if n == 0 || reply.ends_with(b"\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
