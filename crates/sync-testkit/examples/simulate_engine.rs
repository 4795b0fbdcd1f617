//! Runs the engine against the simulated server with a visible fault mix and prints what
//! happened.
//!
//! `cargo run --release -p sync-testkit --example simulate_engine -- [EVENTS] [CHANNELS] [SEED]`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use sync_testkit::{Faults, Scenario, Workload};

fn arg<T: std::str::FromStr>(index: usize, default: T) -> T {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let events: u64 = arg(1, 200_000);
    let channels: usize = arg(2, 1_000);
    let seed: u64 = arg(3, 2026);
    let faults = Faults::moderate();
    println!("simulating {events} events over {channels} channels, seed {seed}");
    println!(
        "faults: drop {:.0}%, duplicate {:.0}%, reorder {:.0}%, too-long {:.1}%, channel too-long {:.0}%, \
         request failures {:.0}%, corrupted replies {:.0}%, 2 crashes",
        faults.drop * 100.0,
        faults.duplicate * 100.0,
        faults.reorder * 100.0,
        faults.too_long * 100.0,
        faults.channel_too_long * 100.0,
        faults.request_failure * 100.0,
        faults.corrupt_reply * 100.0
    );
    let scenario = Scenario::new(seed)
        .events(events)
        .workload(Workload {
            channels,
            ..Workload::default()
        })
        .faults(faults)
        .crashes(2)
        .ack_delay(Duration::from_millis(30));
    let started = Instant::now();
    let outcome = scenario.run();
    let elapsed = started.elapsed();
    match outcome {
        Ok(report) => {
            let s = report.stats;
            println!(
                "\nall checks passed: every update exactly once, in order; final state equals the server's"
            );
            println!("  events made by the server    {:>10}", report.events);
            println!("  pushes sent                  {:>10}", report.pushes);
            println!("  updates delivered            {:>10}", report.delivered);
            println!("  lost                         {:>10}", 0);
            println!(
                "  repeated after a crash       {:>10}  (the unacknowledged window)",
                report.repeats
            );
            println!(
                "  duplicates dropped           {:>10}",
                s.duplicates_dropped
            );
            println!("  gaps seen                    {:>10}", s.gaps_detected);
            println!(
                "    filled by waiting          {:>10}",
                s.gaps_filled_by_wait
            );
            println!(
                "    resolved by a difference   {:>10}",
                s.gaps_resolved_by_difference
            );
            println!("  buffer overflows             {:>10}", s.buffer_overflows);
            println!("  too-long seen                {:>10}", s.too_long);
            println!(
                "  getDifference requests       {:>10}",
                s.difference_requests
            );
            println!(
                "  getChannelDifference         {:>10}",
                s.channel_difference_requests
            );
            println!("  failed requests retried      {:>10}", s.requests_failed);
            println!(
                "  corrupted replies refused    {:>10}",
                report.corrupt_refused
            );
            println!("  crashes survived             {:>10}", report.crashes);
            println!(
                "  virtual time                 {:>10.1} s",
                report.virtual_time.as_secs_f64()
            );
            println!(
                "  wall time                    {:>10.2} s  ({:.0} updates/s including the simulator)",
                elapsed.as_secs_f64(),
                report.delivered as f64 / elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(violation) => {
            eprintln!("{violation}");
            ExitCode::FAILURE
        }
    }
}
