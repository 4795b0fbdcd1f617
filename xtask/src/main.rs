//! Developer commands for the workspace, run as `cargo xtask <command>`.
//!
//! - `test`: the project's one test command. Makes sure `redis-server` and `redis-cli` are on
//!   the machine (installing them with apt-get when missing and running as root), then runs
//!   every test of the workspace. Under `CI=true` a missing one fails the run.
//! - `ci`: `cargo fmt --check`, `cargo clippy -D warnings`, `cargo doc` with rustdoc's
//!   warnings as errors, then `test`.
//! - `bench [ARGS..]`: the criterion benchmarks (`cargo bench -p sync-benches`).
//! - `fuzz [TARGET] [--time SECONDS]`: runs a cargo-fuzz target of `fuzz/` (or every target in
//!   turn), installing cargo-fuzz when missing. When rustup has a nightly toolchain it runs
//!   `rustup run nightly cargo fuzz run TARGET` (with AddressSanitizer); otherwise
//!   `$CARGO fuzz run --sanitizer none TARGET` on the current toolchain. (`$CARGO` is the
//!   toolchain's own cargo, which does not take rustup's `+nightly`.)
//! - `charts [--collect]`: renders `docs/charts/data/*.csv` into the SVG bar charts
//!   `docs/charts/*.svg`; `--collect` first refreshes the CSVs from the benches' latest output
//!   (criterion's JSON, the end-to-end bench's `target/bench-results/end_to_end.csv`).
//!
//! Environment: `PROPTEST_CASES` raises the number of property-test cases (CI keeps the
//! default small); `XTASK_NO_INSTALL=1` never installs system packages.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use sync_testkit::redis_server::{is_ci, locate, locate_cli, which};

mod charts;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let outcome = match command {
        "test" => test(rest),
        "ci" => ci(rest),
        "bench" => bench(rest),
        "fuzz" => fuzz(rest),
        "charts" => charts::charts(rest),
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage: cargo xtask <command>\n\
     \n\
     commands:\n\
     \x20 test [ARGS..]   run every test of the workspace (starts from a redis-server check)\n\
     \x20 ci              fmt --check, clippy -D warnings, doc -D warnings, then test\n\
     \x20 bench [ARGS..]  run the criterion benchmarks\n\
     \x20 fuzz [TARGET] [--time SECONDS]\n\
     \x20                 run one cargo-fuzz target (or each in turn) for SECONDS (default 60)\n\
     \x20 charts [--collect]\n\
     \x20                 render docs/charts/data/*.csv into docs/charts/*.svg; --collect first\n\
     \x20                 refreshes the CSVs from the benches' latest output\n"
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs this program (`$CARGO`), or `cargo` from `PATH`.
fn cargo_program() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo() -> Command {
    let mut command = Command::new(cargo_program());
    command.current_dir(workspace_root());
    command
}

fn run(mut command: Command) -> Result {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .map_err(|error| format!("could not start {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

fn test(args: &[String]) -> Result {
    let redis = ensure_redis_server()?;
    let mut command = cargo();
    command
        .args(["test", "--workspace", "--all-features"])
        .args(args);
    if let Some(path) = redis {
        command.env("REDIS_SERVER", path);
    }
    run(command)
}

fn ci(args: &[String]) -> Result {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // Broken intra-doc links and other rustdoc warnings are errors, as on docs.rs.
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    test(args)
}

fn bench(args: &[String]) -> Result {
    let mut command = cargo();
    command.args(["bench", "-p", "sync-benches"]).args(args);
    if let Ok(Some(path)) = ensure_redis_server() {
        command.env("REDIS_SERVER", path);
    }
    run(command)
}

const FUZZ_TARGETS: [&str; 4] = ["core_inputs", "core_scenario", "storage_decode", "events"];

fn fuzz(args: &[String]) -> Result {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => {
                let value = args.next().ok_or("--time needs a number of seconds")?;
                seconds = value
                    .parse()
                    .map_err(|_| format!("--time {value}: not a number"))?;
            }
            target if FUZZ_TARGETS.contains(&target) => targets.push(target.to_owned()),
            other => {
                return Err(format!(
                    "unknown fuzz target `{other}` (targets: {})",
                    FUZZ_TARGETS.join(", ")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    let has_fuzz = Command::new(cargo_program())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_fuzz {
        let mut install = cargo();
        install.args(["install", "cargo-fuzz", "--locked"]);
        run(install)?;
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    for target in targets {
        let mut command = fuzz_command(&target, seconds, nightly);
        command.current_dir(workspace_root());
        run(command)?;
    }
    Ok(())
}

/// The command that fuzzes `target` for `seconds`.
///
/// With a nightly toolchain: `rustup run nightly cargo fuzz run TARGET` (AddressSanitizer).
/// `+nightly` is not an option here: `$CARGO` is the toolchain's own cargo binary, and only
/// rustup's proxy understands a `+toolchain` argument. On stable: `$CARGO fuzz run
/// --sanitizer none TARGET`.
fn fuzz_command(target: &str, seconds: u64, nightly: bool) -> Command {
    let mut command = if nightly {
        let mut command = Command::new("rustup");
        command.args(["run", "nightly", "cargo", "fuzz", "run", target]);
        command
    } else {
        let mut command = Command::new(cargo_program());
        command.args(["fuzz", "run", "--sanitizer", "none", target]);
        command
    };
    command.args(["--release", "--", &format!("-max_total_time={seconds}")]);
    command
}

/// Finds `redis-server` (and `redis-cli`, which the Redis Cluster tests use to create their
/// cluster), installing both with apt-get when one is missing and we may.
///
/// Returns `Ok(None)` when the server is missing outside CI (the Redis tests then say so and
/// skip); under `CI=true` a missing server or client is an error.
fn ensure_redis_server() -> Result<Option<PathBuf>> {
    if let Some(path) = find_redis_server().filter(|_| locate_cli().is_some()) {
        return Ok(Some(path));
    }
    let may_install =
        env::var("XTASK_NO_INSTALL").is_err() && is_root() && which("apt-get").is_some();
    if may_install {
        eprintln!("xtask: redis-server or redis-cli is missing; installing them with apt-get");
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", "redis-server", "redis-tools"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        if let Err(error) = run(update).and_then(|()| run(install)) {
            eprintln!("xtask: installing redis-server failed: {error}");
        }
    }
    match find_redis_server() {
        Some(_) if locate_cli().is_none() && is_ci() => {
            Err("redis-cli is required under CI=true and is missing".into())
        }
        Some(path) => Ok(Some(path)),
        None if is_ci() => Err("redis-server is required under CI=true and is missing".into()),
        None => {
            eprintln!("xtask: redis-server not found: the Redis tests will be skipped");
            Ok(None)
        }
    }
}

/// [`locate`], falling back to where Debian's package puts it (a fresh install may not be on
/// this process's `PATH`).
fn find_redis_server() -> Option<PathBuf> {
    locate().or_else(|| {
        let fallback = PathBuf::from("/usr/bin/redis-server");
        fallback.is_file().then_some(fallback)
    })
}

/// True when this process runs as root: it owns its own `/proc/self` (Linux, where apt-get
/// installs are attempted at all).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn fuzz_on_nightly_goes_through_rustup() {
        let command = fuzz_command("events", 30, true);
        assert_eq!(command.get_program(), "rustup");
        assert_eq!(
            args(&command),
            [
                "run",
                "nightly",
                "cargo",
                "fuzz",
                "run",
                "events",
                "--release",
                "--",
                "-max_total_time=30",
            ]
        );
    }

    #[test]
    fn fuzz_on_stable_runs_this_cargo_without_sanitizer() {
        let command = fuzz_command("core_inputs", 60, false);
        assert_eq!(command.get_program(), cargo_program().as_str());
        assert_eq!(
            args(&command),
            [
                "fuzz",
                "run",
                "--sanitizer",
                "none",
                "core_inputs",
                "--release",
                "--",
                "-max_total_time=60",
            ]
        );
    }
}
