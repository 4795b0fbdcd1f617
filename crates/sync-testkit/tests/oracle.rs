//! The oracle catches what a broken client would do.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;

use sync_core::{Sequence, Updates};
use sync_testkit::{Limits, Oracle, Server, TestUpdate, Workload};

/// A server that made `events` events, and every durable one in server order.
fn server(events: u64) -> (Server, Vec<TestUpdate>) {
    let workload = Workload {
        channels: 2,
        ephemeral: 0,
        seq_updates: 0,
        zero_count: 0,
        ..Workload::default()
    };
    let mut server = Server::new(3, workload, Limits::default());
    let mut durable = Vec::new();
    while server.events() < events {
        match server.produce() {
            Updates::Short { update, .. } => durable.push(update),
            Updates::Combined { updates, .. } => durable.extend(updates),
            Updates::TooLong => {}
        }
    }
    durable.retain(|u| !matches!(u.sequence, Sequence::Unordered));
    (server, durable)
}

fn oracle(server: &Server) -> Oracle {
    let start = sync_core::State {
        pts: 1,
        qts: 1,
        date: 0,
        seq: 1,
    };
    Oracle::new(start, server.channel_states().map(|(id, _)| (id, 1)))
}

fn finish(oracle: &mut Oracle, server: &Server) -> Result<(), String> {
    let channels: HashMap<i64, i32> = server.channel_states().collect();
    oracle.finish(server, Some(server.state()), |id| {
        channels.get(&id).copied()
    })
}

#[test]
fn a_faithful_client_passes() {
    let (server, durable) = server(200);
    let mut oracle = oracle(&server);
    for update in &durable {
        oracle.deliver(&server, update).unwrap();
    }
    finish(&mut oracle, &server).unwrap();
}

#[test]
fn a_lost_update_is_caught() {
    let (server, durable) = server(200);
    let mut oracle = oracle(&server);
    for update in durable.iter().skip(1) {
        oracle.deliver(&server, update).unwrap();
    }
    assert!(
        finish(&mut oracle, &server)
            .unwrap_err()
            .contains("never delivered")
    );
}

#[test]
fn a_repeat_or_reordering_is_caught_as_it_happens() {
    let (server, durable) = server(200);
    let mut oracle = oracle(&server);
    let common: Vec<_> = durable
        .iter()
        .filter(|u| matches!(u.sequence, Sequence::Common { .. }))
        .collect();
    oracle.deliver(&server, common[0]).unwrap();
    oracle.deliver(&server, common[1]).unwrap();
    assert!(oracle.deliver(&server, common[1]).is_err(), "repeat");
    let mut oracle = self::oracle(&server);
    oracle.deliver(&server, common[1]).unwrap();
    assert!(oracle.deliver(&server, common[0]).is_err(), "out of order");
}

#[test]
fn an_invented_update_is_caught() {
    let (server, _) = server(10);
    let mut oracle = oracle(&server);
    let invented = TestUpdate {
        id: 1_000_000,
        sequence: Sequence::Unordered,
    };
    assert!(oracle.deliver(&server, &invented).is_err());
}

#[test]
fn a_client_that_ends_behind_the_server_is_caught() {
    let (server, durable) = server(50);
    let mut oracle = oracle(&server);
    for update in &durable {
        oracle.deliver(&server, update).unwrap();
    }
    let behind = sync_core::State {
        pts: 1,
        ..server.state()
    };
    assert!(oracle.finish(&server, Some(behind), |_| None).is_err());
}

/// A server whose channel 1 answered `channelDifferenceTooLong` from pts 1, and the latest
/// messages that answer carried.
fn too_long_server() -> (Server, Vec<TestUpdate>) {
    let workload = Workload {
        channels: 1,
        ephemeral: 0,
        seq_updates: 0,
        zero_count: 0,
        ..Workload::default()
    };
    let limits = Limits {
        channel_too_long_after: 2,
        ..Limits::default()
    };
    let mut server = Server::new(5, workload, limits);
    while server.channel_pts(1) < Some(10) {
        server.produce();
    }
    let hash = server.access_hashes().next().unwrap().1;
    let difference = server.get_channel_difference(1, hash, 1, 100).unwrap();
    let sync_core::ChannelDifferenceKind::TooLong { updates, .. } = difference.kind else {
        panic!("{difference:?}");
    };
    (server, updates)
}

#[test]
fn latest_messages_of_a_too_long_answer_are_accepted_once() {
    let (server, latest) = too_long_server();
    assert_eq!(latest.len(), 3);
    assert!(latest.iter().all(|u| u.sequence == Sequence::Unordered));
    let mut oracle = oracle(&server);
    // The common box in order; the channel only by its latest messages (the rest skipped).
    let common: Vec<TestUpdate> = server
        .durable_events()
        .filter(|u| !matches!(u.sequence, Sequence::Channel { .. }))
        .collect();
    for update in &common {
        oracle.deliver(&server, update).unwrap();
    }
    for update in &latest {
        oracle.deliver(&server, update).unwrap();
    }
    assert_eq!(oracle.latest_messages(), 3);
    finish(&mut oracle, &server).unwrap();

    // Twice is a repeat.
    let mut oracle = self::oracle(&server);
    for update in common.iter().chain(&latest).chain(&latest[..1]) {
        oracle.deliver(&server, update).unwrap();
    }
    assert!(
        finish(&mut oracle, &server)
            .unwrap_err()
            .contains("delivered 2 times")
    );
}

#[test]
fn a_numbered_update_outside_its_sequence_is_caught() {
    let (server, latest) = too_long_server();
    let mut oracle = oracle(&server);
    let not_latest = server
        .durable_events()
        .find(|u| !latest.iter().any(|l| l.id == u.id))
        .unwrap();
    let unordered = TestUpdate {
        id: not_latest.id,
        sequence: Sequence::Unordered,
    };
    assert!(oracle.deliver(&server, &unordered).is_err());
}
