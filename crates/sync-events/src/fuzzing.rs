//! A fuzz body for the fan-out, shared by the cargo-fuzz target and the corpus test.
//!
//! Not part of the stable API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Builder, Observer};

/// An event: key, producer, the producer's running number.
type Item = (u8, (u8, u32));

/// Everything one observer saw, in order.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<Item>,
    shutdowns: u32,
    after_shutdown: u32,
}

struct Recorder(Arc<Mutex<Seen>>);

impl Observer<Item> for Recorder {
    fn handle(&mut self, event: Item) {
        if let Ok(mut seen) = self.0.lock() {
            if seen.shutdowns > 0 {
                seen.after_shutdown += 1;
            }
            seen.events.push(event);
        }
    }

    fn shutdown(&mut self) {
        if let Ok(mut seen) = self.0.lock() {
            seen.shutdowns += 1;
        }
    }
}

/// Runs producers and a shutdown as the bytes say, on worker threads, and checks: every
/// accepted event is delivered exactly once, each producer's events of one key in the order
/// sent and to one observer, every observer shut down exactly once and nothing delivered after.
pub fn fan_out(data: &[u8]) -> Result<(), String> {
    let [shards, capacity, producers, shutdown_after, rest @ ..] = data else {
        return Ok(());
    };
    let shards = usize::from(shards % 4) + 1;
    let capacity = usize::from(capacity % 8) + 1;
    let producers = usize::from(producers % 4) + 1;
    // Each later pair of bytes is one batch: (key bits, length).
    let batches: Vec<(u8, usize)> = rest
        .chunks_exact(2)
        .map(|b| (b[0], usize::from(b[1] % 16) + 1))
        .take(256)
        .collect();
    let shutdown_after = usize::from(*shutdown_after) % (batches.len() + 2);

    let records: Vec<Arc<Mutex<Seen>>> = (0..shards).map(|_| Arc::default()).collect();
    let factory_records = records.clone();
    let (stream, workers) = Builder::new()
        .shards(shards)
        .capacity(capacity)
        .build(move |shard: usize| Recorder(Arc::clone(&factory_records[shard])))
        .map_err(|e| format!("build: {e}"))?;
    let threads = workers.spawn_threads().map_err(|e| format!("spawn: {e}"))?;

    // Producer p sends the batches i with i % producers == p; the shutdown comes from the
    // first producer after its `shutdown_after`-th batch.
    let accepted: Vec<Vec<Item>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let stream = stream.clone();
                let batches = &batches;
                scope.spawn(move || {
                    let mut accepted = Vec::new();
                    let mut number = 0u32;
                    for (i, &(keys, len)) in batches
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % producers == p)
                    {
                        if p == 0 && i >= shutdown_after {
                            stream.shutdown();
                        }
                        let batch: Vec<Item> = (0..len)
                            .map(|j| {
                                number += 1;
                                (keys.rotate_left(j as u32) % 7, (p as u8, number))
                            })
                            .collect();
                        match stream.send_batch(batch.clone()) {
                            Ok(_) => accepted.extend(batch),
                            // Refused after the shutdown: what was accepted before still counts.
                            Err(error) => {
                                accepted.extend(
                                    batch.into_iter().filter(|e| !error.unsent.contains(e)),
                                );
                            }
                        }
                    }
                    accepted
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    stream.shutdown_and_wait();
    threads.join();

    let mut delivered: HashMap<Item, usize> = HashMap::new();
    let mut shard_of_key: HashMap<u8, usize> = HashMap::new();
    for (shard, record) in records.iter().enumerate() {
        let seen = record
            .lock()
            .map_err(|_| "a recorder lock was poisoned".to_owned())?;
        if seen.shutdowns != 1 {
            return Err(format!(
                "shard {shard} observer shut down {} times",
                seen.shutdowns
            ));
        }
        if seen.after_shutdown > 0 {
            return Err(format!(
                "shard {shard} got {} events after its shutdown",
                seen.after_shutdown
            ));
        }
        let mut last: HashMap<(u8, u8), u32> = HashMap::new();
        for &(key, (producer, number)) in &seen.events {
            if *shard_of_key.entry(key).or_insert(shard) != shard {
                return Err(format!("key {key} reached two shards"));
            }
            let previous = last.insert((key, producer), number);
            if previous.is_some_and(|previous| previous >= number) {
                return Err(format!(
                    "key {key} of producer {producer}: {number} after {previous:?}"
                ));
            }
            *delivered.entry((key, (producer, number))).or_default() += 1;
        }
    }
    let accepted_count: usize = accepted.iter().map(Vec::len).sum();
    for event in accepted.iter().flatten() {
        match delivered.get(event) {
            Some(1) => {}
            Some(n) => return Err(format!("{event:?} delivered {n} times")),
            None => return Err(format!("accepted {event:?} was never delivered")),
        }
    }
    if delivered.len() != accepted_count {
        return Err(format!(
            "{} events delivered, {accepted_count} accepted",
            delivered.len()
        ));
    }
    Ok(())
}
