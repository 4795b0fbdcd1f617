//! A lossy run that ends with `updatePtsChanged` and an `updateChannelTooLong` per channel:
//! what those last pushes announce must be fetched at once, not at the idle rule's difference
//! 15 minutes later. A small driver answers the engine's requests straight from the server,
//! and the clock never reaches the idle timeout.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sync_core::{ChannelId, Engine, EngineConfig, Output, RequestKind, Sequence, Updates};
use sync_testkit::{Limits, Oracle, Rng, Server, TestEntities, TestUpdate, Workload};

/// Drives `engine` against `server` until it has nothing left to do, answering every request
/// at once and acknowledging every batch; timers only fire while they are due within `limit`.
fn settle(
    engine: &mut Engine<TestUpdate, TestEntities>,
    server: &mut Server,
    oracle: &mut Oracle,
    hashes: &HashMap<ChannelId, i64>,
    now: &mut Instant,
    limit: Instant,
) -> Result<(), String> {
    for _ in 0..100_000 {
        let mut acted = false;
        while let Some(output) = engine.poll_output() {
            acted = true;
            match output {
                Output::Deliver(batch) => {
                    for update in &batch.updates {
                        oracle.deliver(server, update)?;
                    }
                    engine.ack(batch.id).map_err(|e| e.to_string())?;
                }
                Output::Request(request) => {
                    let id = request.id;
                    let outcome = match request.kind {
                        RequestKind::GetState => engine.handle_state(*now, id, server.state()),
                        RequestKind::GetDifference {
                            pts,
                            qts,
                            pts_total_limit,
                            ..
                        } => {
                            let difference = server.get_difference(pts, qts, pts_total_limit);
                            engine.handle_difference(*now, id, difference)
                        }
                        RequestKind::GetChannelDifference {
                            channel_id,
                            pts,
                            limit,
                        } => {
                            let hash = hashes[&channel_id];
                            let difference = server
                                .get_channel_difference(channel_id, hash, pts, limit)
                                .map_err(|e| format!("{e:?}"))?;
                            engine.handle_channel_difference(*now, id, difference)
                        }
                    };
                    outcome.map_err(|e| format!("reply refused: {e}"))?;
                }
                _ => {}
            }
        }
        if !acted {
            match engine.poll_timeout() {
                Some(at) if at <= limit => {
                    *now = (*now).max(at);
                    engine.handle_timeout(*now);
                }
                _ => return Ok(()),
            }
        }
    }
    Err("no end".into())
}

#[test]
fn pts_changed_and_channel_too_long_at_the_end_lose_nothing() {
    let workload = Workload {
        channels: 4,
        ..Workload::default()
    };
    let mut failures = Vec::new();
    for pattern in 0..200u64 {
        let mut server = Server::new(pattern, workload.clone(), Limits::default());
        let state = server.state();
        let channels: Vec<(ChannelId, i32)> = server.channel_states().collect();
        let hashes: HashMap<ChannelId, i64> = server.access_hashes().collect();
        let start = Instant::now();
        let mut now = start;
        let mut engine: Engine<TestUpdate, TestEntities> = Engine::from_state(
            EngineConfig::default(),
            now,
            state,
            channels.iter().copied(),
        )
        .unwrap();
        let mut oracle = Oracle::new(state, channels.iter().copied());
        // Catch up at start, on time.
        let limit = start + Duration::from_secs(1);
        settle(
            &mut engine,
            &mut server,
            &mut oracle,
            &hashes,
            &mut now,
            limit,
        )
        .unwrap();

        // A lossy stretch, a push every 100 ms: one in five is lost. Gaps that later pushes
        // reveal are fetched as they go.
        let mut rng = Rng::new(pattern ^ 0xD0D0);
        for _ in 0..200 {
            now += Duration::from_millis(100);
            let push = server.produce();
            if rng.chance(0.2) {
                server.push_lost(&push);
            } else {
                engine.handle_updates(now, push).unwrap();
            }
            let due = now;
            settle(
                &mut engine,
                &mut server,
                &mut oracle,
                &hashes,
                &mut now,
                due,
            )
            .unwrap();
        }
        // The server's last word: the common box changed, and each channel has news.
        let date = server.state().date;
        let last = |sequence| Updates::Short {
            update: TestUpdate { id: 0, sequence },
            date,
        };
        engine
            .handle_updates(now, last(Sequence::PtsChanged))
            .unwrap();
        for &(channel_id, _) in &channels {
            let pts = None;
            engine
                .handle_updates(now, last(Sequence::ChannelTooLong { channel_id, pts }))
                .unwrap();
        }
        // Well before the idle rule (15 minutes), everything must be there.
        let limit = now + Duration::from_secs(60);
        let verdict = settle(
            &mut engine,
            &mut server,
            &mut oracle,
            &hashes,
            &mut now,
            limit,
        )
        .and_then(|()| oracle.finish(&server, engine.state(), |id| engine.channel_pts(id)));
        if let Err(message) = verdict {
            failures.push(format!("pattern {pattern}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200: {:#?}",
        failures.len(),
        failures
    );
}
