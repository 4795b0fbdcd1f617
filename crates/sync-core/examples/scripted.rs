//! The engine against a scripted stream of pushes: a duplicate, a gap that fills by itself, a
//! gap that needs a difference, a channel, and the commits that trail acknowledgements.
//!
//! Run it with `cargo run -p sync-core --example scripted`.
// The example is the driver: it owns the clock and hands `now` to the engine.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Instant;

use sync_core::{
    Difference, Engine, EngineConfig, Output, RequestKind, Sequence, State, Update, Updates,
};

/// The application's own update type: a message in the common box or in a channel.
#[derive(Debug, Clone)]
enum Message {
    Private {
        pts: i32,
        text: &'static str,
    },
    Channel {
        channel_id: i64,
        pts: i32,
        text: &'static str,
    },
}

impl Update for Message {
    fn sequence(&self) -> Sequence {
        match *self {
            Message::Private { pts, .. } => Sequence::Common { pts, pts_count: 1 },
            Message::Channel {
                channel_id, pts, ..
            } => Sequence::Channel {
                channel_id,
                pts,
                pts_count: 1,
            },
        }
    }
}

fn private(pts: i32, text: &'static str) -> Updates<Message> {
    Updates::Short {
        update: Message::Private { pts, text },
        date: 0,
    }
}

/// Does what the engine asks, printing it; answers requests from `server`.
fn drive(engine: &mut Engine<Message>, now: Instant, server: &mut Vec<Message>) {
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Deliver(batch) => {
                for update in &batch.updates {
                    match update {
                        Message::Private { pts, text } => println!("    deliver pts {pts}: {text}"),
                        Message::Channel {
                            channel_id,
                            pts,
                            text,
                        } => {
                            println!("    deliver channel {channel_id} pts {pts}: {text}");
                        }
                    }
                }
                engine.ack(batch.id).unwrap();
            }
            Output::Commit(commit) => {
                println!("    commit  {:?} {:?}", commit.state, commit.channels)
            }
            Output::Request(request) => {
                println!("    request {:?}", request.kind);
                if let RequestKind::GetDifference { pts, qts, date, .. } = request.kind {
                    let missed: Vec<Message> = std::mem::take(server);
                    let reached = missed.iter().fold(pts, |at, m| match m {
                        Message::Private { pts, .. } => at.max(*pts),
                        Message::Channel { .. } => at,
                    });
                    let state = State {
                        pts: reached,
                        qts,
                        date,
                        seq: 0,
                    };
                    let difference = Difference::Difference {
                        updates: missed,
                        entities: (),
                        state,
                        slice: false,
                    };
                    engine
                        .handle_difference(now, request.id, difference)
                        .unwrap();
                }
            }
            other => println!("    {other:?}"),
        }
    }
}

fn main() {
    let start = Instant::now();
    let stored = State {
        pts: 10,
        qts: 0,
        date: 0,
        seq: 0,
    };
    let mut engine: Engine<Message> =
        Engine::from_state(EngineConfig::default(), start, stored, [(77, 500)]).unwrap();
    // What the server will answer to the next getDifference.
    let mut server = Vec::new();

    println!("start from stored state (pts 10, channel 77 at 500): catch up");
    drive(&mut engine, start, &mut server);

    println!("push pts 11, then a duplicate of it");
    engine.handle_updates(start, private(11, "hello")).unwrap();
    engine.handle_updates(start, private(11, "hello")).unwrap();
    drive(&mut engine, start, &mut server);

    println!("push pts 13 (12 is missing): it waits");
    engine.handle_updates(start, private(13, "third")).unwrap();
    drive(&mut engine, start, &mut server);
    println!("push pts 12 within the wait: the gap fills by itself");
    engine.handle_updates(start, private(12, "second")).unwrap();
    drive(&mut engine, start, &mut server);

    println!("push pts 16 (14 and 15 are lost) and a channel post");
    engine.handle_updates(start, private(16, "sixth")).unwrap();
    let post = Message::Channel {
        channel_id: 77,
        pts: 501,
        text: "news",
    };
    engine
        .handle_updates(
            start,
            Updates::Short {
                update: post,
                date: 0,
            },
        )
        .unwrap();
    drive(&mut engine, start, &mut server);
    server = vec![
        Message::Private {
            pts: 14,
            text: "fourth",
        },
        Message::Private {
            pts: 15,
            text: "fifth",
        },
    ];
    let deadline = engine.poll_timeout().unwrap();
    println!(
        "{} ms later the gap is still open: fetch the difference",
        (deadline - start).as_millis()
    );
    engine.handle_timeout(deadline);
    drive(&mut engine, deadline, &mut server);

    let stats = engine.stats();
    println!(
        "\ndelivered {}, duplicates dropped {}, gaps {} (filled by waiting {}, by difference {})",
        stats.updates_delivered,
        stats.duplicates_dropped,
        stats.gaps_detected,
        stats.gaps_filled_by_wait,
        stats.gaps_resolved_by_difference
    );
    assert_eq!(engine.state().map(|s| s.pts), Some(16));
}
