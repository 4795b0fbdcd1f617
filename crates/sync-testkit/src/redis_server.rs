//! A private `redis-server` for tests: started on a unix socket in its own temp dir, killed on
//! drop; and a private Redis Cluster ([`RedisCluster`]) of such servers on loopback TCP ports.
//!
//! The binary comes from `REDIS_SERVER`, else `redis-server` on `PATH` (and `redis-cli`, which
//! creates a cluster, from `REDIS_CLI`, else next to it, else on `PATH`). When one is missing a
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

/// Where redis-cli is: `REDIS_CLI` when set (a value that names no file counts as missing),
/// else `redis-cli` next to the redis-server found by [`locate`], else `redis-cli` on `PATH`.
pub fn locate_cli() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_CLI").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    locate()
        .and_then(|server| server.parent().map(|dir| dir.join("redis-cli")))
        .filter(|p| p.is_file())
        .or_else(|| which("redis-cli"))
}

/// One reply of the Redis protocol (RESP2), as the cluster helpers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Simple(String),
    /// `-ERR …`: the server refused the command.
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$…`: `None` for the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`: `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text: simple and bulk strings (lossy UTF-8), errors, integers; empty for
    /// nil and arrays.
    pub fn text(&self) -> String {
        match self {
            Self::Simple(text) | Self::Error(text) => text.clone(),
            Self::Int(number) => number.to_string(),
            Self::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Self::Bulk(None) | Self::Array(_) => String::new(),
        }
    }
}

/// Sends one command over a new TCP connection and reads its whole reply. `Err` when the node
/// cannot be reached or the connection breaks: the cluster helpers poll nodes that may be down.
fn tcp_command(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes())?;
    read_reply(&mut std::io::BufReader::new(stream))
}

fn read_reply(reader: &mut impl std::io::BufRead) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("empty reply line"))?;
    let number = || rest.parse::<i64>().map_err(|_| bad("bad length"));
    Ok(match tag {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut bytes = vec![0; len + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(len);
                Reply::Bulk(Some(bytes))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Reply::Array(None),
            Ok(len) => Reply::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<std::io::Result<_>>()?,
            )),
        },
        _ => return Err(bad("unknown reply type")),
    })
}

/// The value of `field` in an `INFO`-style text (`field:value` lines).
pub fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    })
}

/// A loopback port that is free, and whose cluster bus port (`port + 10000`) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|addr| addr.port()) else {
            continue;
        };
        if port <= 55535 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair for a cluster node");
}

/// How many polls (10 ms apart) the cluster helpers wait before they give up: a bound on
/// liveness, generous on a loaded machine, not a timing assertion.
const CLUSTER_POLLS: u32 = 6000;

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    flags: Vec<String>,
    master_id: String,
    slots: Vec<String>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            Some(NodeLine {
                id: fields[0].to_owned(),
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master_id: fields[3].to_owned(),
                slots: fields[8..].iter().map(|s| (*s).to_owned()).collect(),
            })
        })
        .collect()
}

/// A node's role in the cluster, as it reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves slots (or could: a master that lost its slots in a fail-over is still one
    /// until it learns better).
    Master,
    /// Replicates a master.
    Replica,
}

struct ClusterNode {
    port: u16,
    dir: TempDir,
    id: String,
    child: Option<Child>,
    /// The slot ranges it served when last killed (`CLUSTER NODES` notation).
    slots_at_kill: Vec<String>,
}

/// A private Redis Cluster on loopback TCP ports: N masters, optionally one replica each,
/// every node in its own temp dir with AOF on. Nodes can be killed (SIGKILL) and restarted;
/// every process is killed on drop.
///
/// Missing `redis-server` or `redis-cli` skips the test (or fails it under CI), like
/// [`RedisServer`].
pub struct RedisCluster {
    server: PathBuf,
    node_timeout: Duration,
    nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Three masters, no replicas: enough for layout and contract tests.
    pub fn start() -> Option<Self> {
        Self::start_with(3, false, Duration::from_millis(1000))
    }

    /// `masters` masters, each with one replica when `replicas`, with the given
    /// `cluster-node-timeout` (how long a node may be unreachable before it is failed over).
    /// Returns once every node reports `cluster_state:ok`. `None` means skip (no
    /// redis-server or redis-cli here).
    pub fn start_with(masters: usize, replicas: bool, node_timeout: Duration) -> Option<Self> {
        let server = find_binary()?;
        let Some(cli) = locate_cli() else {
            let message = "redis-cli not found (set REDIS_CLI or put it on PATH)";
            assert!(!is_ci(), "{message}: CI must run the Redis tests");
            #[allow(clippy::print_stderr)] // The skip note is for the person running the tests.
            {
                eprintln!("note: {message}; skipping this Redis Cluster test");
            }
            return None;
        };
        assert!(masters >= 3, "Redis Cluster needs at least 3 masters");
        let count = if replicas { masters * 2 } else { masters };
        let mut cluster = Self {
            server,
            node_timeout,
            nodes: Vec::with_capacity(count),
        };
        for _ in 0..count {
            cluster.add_node();
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", if replicas { "1" } else { "0" }])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", cli.display()));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
        // A replica that never finished its first sync has no data to take over with: it
        // would not win an election, so a fail-over test could not start before this.
        for index in 0..cluster.len() {
            if cluster.role(index) == Some(Role::Replica) {
                cluster.wait_replica(index);
            }
        }
        Some(cluster)
    }

    /// Starts one more (not yet joined) node on a fresh port pair, retrying with other ports
    /// when another process took the chosen one in between.
    fn add_node(&mut self) {
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("redis-cluster")
                .tempdir_in("/tmp")
                .expect("temp dir");
            let mut node = ClusterNode {
                port: free_cluster_port(),
                dir,
                id: String::new(),
                child: None,
                slots_at_kill: Vec::new(),
            };
            if self.launch(&mut node).is_ok() {
                let id = tcp_command(node.port, &["CLUSTER", "MYID"]).map(|reply| reply.text());
                node.id = id.unwrap_or_else(|e| panic!("CLUSTER MYID: {e}"));
                self.nodes.push(node);
                return;
            }
            kill_child(&mut node.child);
        }
        panic!("could not start a cluster node (ports kept being taken)");
    }

    /// Starts `node`'s process and waits until it answers PING; `Err` (with its log) when it
    /// exited first.
    fn launch(&self, node: &mut ClusterNode) -> std::result::Result<(), String> {
        launch_node(&self.server, self.node_timeout, node)
    }

    /// How many nodes there are (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least three nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `index`'s TCP port on 127.0.0.1.
    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].port
    }

    /// Node `index`'s `redis://` URL.
    pub fn url(&self, index: usize) -> String {
        format!("redis://127.0.0.1:{}", self.port(index))
    }

    /// Every node's URL: the seed list for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|index| self.url(index)).collect()
    }

    /// Node `index`'s working directory (its AOF, `nodes.conf` and `redis.log`).
    pub fn dir(&self, index: usize) -> &Path {
        self.nodes[index].dir.path()
    }

    /// True while node `index`'s process runs.
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// Runs one command on node `index` over a new connection. `Err` when the node cannot be
    /// reached.
    pub fn command(&self, index: usize, args: &[&str]) -> std::io::Result<Reply> {
        tcp_command(self.port(index), args)
    }

    /// Node `index`'s role as it reports it (`None` when it does not answer).
    pub fn role(&self, index: usize) -> Option<Role> {
        let nodes = self.cluster_nodes(index)?;
        let me = nodes
            .iter()
            .find(|line| line.flags.iter().any(|f| f == "myself"))?;
        if me.flags.iter().any(|f| f == "master") {
            Some(Role::Master)
        } else {
            Some(Role::Replica)
        }
    }

    /// The running nodes that are masters serving slots, as node `from` sees the cluster.
    pub fn masters(&self) -> Vec<usize> {
        let Some(from) = (0..self.len()).find(|&index| self.is_running(index)) else {
            return Vec::new();
        };
        let Some(lines) = self.cluster_nodes(from) else {
            return Vec::new();
        };
        (0..self.len())
            .filter(|&index| {
                self.is_running(index)
                    && lines.iter().any(|line| {
                        line.id == self.nodes[index].id
                            && line.flags.iter().any(|f| f == "master")
                            && !line.slots.is_empty()
                    })
            })
            .collect()
    }

    /// The node that replicates master `index`, as the cluster sees it now.
    pub fn replica_of(&self, index: usize) -> Option<usize> {
        let from = (0..self.len()).find(|&i| self.is_running(i))?;
        let lines = self.cluster_nodes(from)?;
        let line = lines
            .iter()
            .find(|line| line.master_id == self.nodes[index].id)?;
        self.nodes.iter().position(|node| node.id == line.id)
    }

    /// The running node serving `slot` as master, as the cluster sees it now.
    pub fn master_of_slot(&self, slot: u16) -> Option<usize> {
        let from = (0..self.len()).find(|&i| self.is_running(i))?;
        let lines = self.cluster_nodes(from)?;
        let serves = |range: &str| {
            // `5461` or `0-5460`; `[…]` entries are slots being migrated, not served.
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
        };
        let line = lines.iter().find(|line| {
            line.flags.iter().any(|f| f == "master") && line.slots.iter().any(|r| serves(r))
        })?;
        self.nodes
            .iter()
            .position(|node| node.id == line.id)
            .filter(|&index| self.is_running(index))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of a running node).
    pub fn slot_of(&self, key: &str) -> u16 {
        let from = (0..self.len())
            .find(|&i| self.is_running(i))
            .expect("a running node");
        match self.command(from, &["CLUSTER", "KEYSLOT", key]) {
            Ok(Reply::Int(slot)) => u16::try_from(slot).expect("a slot number"),
            other => panic!("CLUSTER KEYSLOT {key}: {other:?}"),
        }
    }

    fn cluster_nodes(&self, index: usize) -> Option<Vec<NodeLine>> {
        if !self.is_running(index) {
            return None;
        }
        match self.command(index, &["CLUSTER", "NODES"]) {
            Ok(Reply::Bulk(Some(bytes))) => Some(parse_nodes(&String::from_utf8_lossy(&bytes))),
            _ => None,
        }
    }

    /// True when node `index` runs and reports `cluster_state:ok`.
    fn state_ok(&self, index: usize) -> bool {
        self.is_running(index)
            && self
                .command(index, &["CLUSTER", "INFO"])
                .is_ok_and(|reply| {
                    info_field(&reply.text(), "cluster_state").as_deref() == Some("ok")
                })
    }

    /// Waits until every running node reports `cluster_state:ok` and sees every running
    /// node as connected (no `fail` or `fail?` flag on it).
    pub fn wait_ok(&self) {
        let running: Vec<usize> = (0..self.len()).filter(|&i| self.is_running(i)).collect();
        self.wait("every node to report cluster_state:ok", || {
            running.iter().all(|&index| {
                self.state_ok(index)
                    && self.cluster_nodes(index).is_some_and(|lines| {
                        running.iter().all(|&other| {
                            lines.iter().any(|line| {
                                line.id == self.nodes[other].id
                                    && !line.flags.iter().any(|f| f.starts_with("fail"))
                            })
                        })
                    })
            })
        });
    }

    /// Polls `done` until it holds; panics (with the nodes' view) after a generous bound.
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..CLUSTER_POLLS {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let views: Vec<String> = (0..self.len())
            .map(|index| match self.command(index, &["CLUSTER", "NODES"]) {
                Ok(reply) => format!("node {index}:\n{}", reply.text()),
                Err(e) => format!("node {index}: {e}"),
            })
            .collect();
        panic!("gave up waiting for {what}:\n{}", views.join("\n"));
    }

    /// Kills node `index` at once (SIGKILL): no shutdown, no final write.
    pub fn kill(&mut self, index: usize) {
        // What it served, for `wait_for_failover` to recognise its successor.
        if let Some(lines) = self.cluster_nodes(index)
            && let Some(me) = lines
                .iter()
                .find(|line| line.flags.iter().any(|f| f == "myself"))
        {
            self.nodes[index].slots_at_kill = me.slots.clone();
        }
        kill_child(&mut self.nodes[index].child);
    }

    /// Starts node `index` again on its port, from its own directory (AOF and `nodes.conf`),
    /// and waits until it answers. It rejoins the cluster on its own; [`wait_ok`](Self::wait_ok)
    /// waits for that.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        if let Err(e) = launch_node(&self.server, self.node_timeout, &mut self.nodes[index]) {
            panic!("restarting node {index}: {e}");
        }
    }

    /// After master `killed` was killed: waits until another node serves the slots it had
    /// (its replica won the election) and every running node reports `cluster_state:ok`;
    /// returns that node's index.
    pub fn wait_for_failover(&self, killed: usize) -> usize {
        let killed_id = self.nodes[killed].id.clone();
        let slots = self.nodes[killed].slots_at_kill.clone();
        assert!(
            !slots.is_empty(),
            "node {killed} served no slots when it was killed"
        );
        let mut promoted = None;
        self.wait("a replica to take over the killed master's slots", || {
            promoted = (0..self.len())
                .filter(|&i| i != killed && self.is_running(i))
                .find_map(|from| {
                    let lines = self.cluster_nodes(from)?;
                    let winner = lines.iter().find(|line| {
                        line.id != killed_id
                            && line.flags.iter().any(|f| f == "master")
                            && line.slots == slots
                    })?;
                    self.nodes.iter().position(|node| node.id == winner.id)
                });
            promoted.is_some()
        });
        self.wait("the cluster to be ok after the fail-over", || {
            (0..self.len())
                .filter(|&i| self.is_running(i))
                .all(|i| self.state_ok(i))
        });
        promoted.unwrap_or(killed)
    }

    /// Forces replica `replica` to take over its master's slots (`CLUSTER FAILOVER FORCE`)
    /// and waits until it is a master and the cluster is `ok`.
    pub fn failover(&self, replica: usize) {
        let reply = self
            .command(replica, &["CLUSTER", "FAILOVER", "FORCE"])
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on node {replica}: {e}"));
        assert!(
            !matches!(reply, Reply::Error(_)),
            "CLUSTER FAILOVER on node {replica}: {reply:?}"
        );
        self.wait("the replica to become a master", || {
            self.role(replica) == Some(Role::Master)
        });
        self.wait_ok();
    }

    /// Waits until node `index` is a replica whose link to its master is up (a restarted old
    /// master rejoins that way once it learns its slots were taken over).
    pub fn wait_replica(&self, index: usize) {
        self.wait("the node to rejoin as a replica", || {
            self.role(index) == Some(Role::Replica)
                && self
                    .command(index, &["INFO", "replication"])
                    .is_ok_and(|reply| {
                        info_field(&reply.text(), "master_link_status").as_deref() == Some("up")
                    })
        });
    }
}

/// Starts `node`'s process and waits until it answers PING; `Err` (with its log) when it
/// exited first.
fn launch_node(
    server: &Path,
    node_timeout: Duration,
    node: &mut ClusterNode,
) -> std::result::Result<(), String> {
    let dir = node
        .dir
        .path()
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    let timeout = node_timeout.as_millis().to_string();
    let port = node.port.to_string();
    let args = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &timeout,
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        "redis.log",
    ];
    let child = Command::new(server)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
    node.child = Some(child);
    for _ in 0..CLUSTER_POLLS {
        if let Some(child) = node.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log =
                std::fs::read_to_string(node.dir.path().join("redis.log")).unwrap_or_default();
            node.child = None;
            return Err(format!("redis-server exited with {status}:\n{log}"));
        }
        if let Ok(reply) = tcp_command(node.port, &["PING"])
            && !reply.text().starts_with("LOADING")
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("redis-server did not answer PING".into())
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill_child(&mut node.child);
        }
    }
}
