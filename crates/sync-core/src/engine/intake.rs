//! Pushes in: every numbered thing is checked and classified into a [`Place`], then routed to
//! its sequence. A refused push applies nothing but is recovered: the engine fetches the
//! difference of every sequence it names.

use std::collections::hash_map::Entry as MapEntry;
use std::mem;
use std::time::Instant;

use crate::error::Error;
use crate::output::Notice;
use crate::state::ChannelId;
use crate::update::{Affected, Entities, Sequence, Update, Updates};

use super::Engine;
use super::boxes::{Entry, Rebase, Slot, Source};

/// An update's place, checked and normalised: every numbered place is a range
/// `start..=end` (see [`crate::buffer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Unordered,
    Pts {
        start: i32,
        end: i32,
    },
    Qts {
        start: i32,
        end: i32,
    },
    Channel {
        channel_id: ChannelId,
        start: i32,
        end: i32,
    },
    ChannelTooLong {
        channel_id: ChannelId,
        pts: Option<i32>,
    },
    PtsChanged,
}

pub(super) fn invalid(field: &'static str, value: i32) -> Error {
    Error::InvalidNumber {
        field,
        value: value.into(),
    }
}

pub(super) fn check_channel(channel_id: ChannelId) -> Result<ChannelId, Error> {
    if channel_id > 0 {
        Ok(channel_id)
    } else {
        Err(Error::InvalidChannel(channel_id))
    }
}

pub(super) fn check_non_negative(field: &'static str, value: i32) -> Result<i32, Error> {
    if value >= 0 {
        Ok(value)
    } else {
        Err(invalid(field, value))
    }
}

/// The range a `pts` + `pts_count` occupies, or `None` for pts 0 (no position).
#[inline(always)]
pub(super) fn pts_range(pts: i32, pts_count: i32) -> Result<Option<(i32, i32)>, Error> {
    check_non_negative("pts", pts)?;
    check_non_negative("pts_count", pts_count)?;
    if pts == 0 {
        return Ok(None);
    }
    if pts_count > pts {
        return Err(invalid("pts_count", pts_count));
    }
    Ok(Some((pts - pts_count, pts)))
}

/// Checks an update's numbers. Zero pts / qts mean "no position": such updates are unordered
/// and never move or reset the state.
#[inline(always)]
pub(super) fn classify(sequence: Sequence) -> Result<Place, Error> {
    Ok(match sequence {
        Sequence::Unordered => Place::Unordered,
        Sequence::Common { pts, pts_count } => match pts_range(pts, pts_count)? {
            Some((start, end)) => Place::Pts { start, end },
            None => Place::Unordered,
        },
        Sequence::Qts { qts } => match check_non_negative("qts", qts)? {
            0 => Place::Unordered,
            qts => Place::Qts {
                start: qts - 1,
                end: qts,
            },
        },
        Sequence::Channel {
            channel_id,
            pts,
            pts_count,
        } => {
            let channel_id = check_channel(channel_id)?;
            match pts_range(pts, pts_count)? {
                Some((start, end)) => Place::Channel {
                    channel_id,
                    start,
                    end,
                },
                None => Place::Unordered,
            }
        }
        Sequence::ChannelTooLong { channel_id, pts } => {
            let channel_id = check_channel(channel_id)?;
            let pts = match pts {
                Some(pts) => Some(check_non_negative("pts", pts)?).filter(|&pts| pts > 0),
                None => None,
            };
            Place::ChannelTooLong { channel_id, pts }
        }
        Sequence::PtsChanged => Place::PtsChanged,
    })
}

impl<U: Update, E: Entities> Engine<U, E> {
    /// A pushed `Updates` value. Numbers are checked before anything is applied.
    ///
    /// A push with a malformed number is refused whole (an error; nothing of it is applied or
    /// delivered), but it is not forgotten: the engine fetches the difference of every
    /// sequence it names (the common box, and each channel it names), so its good updates
    /// come back that way. A channel the engine did not track yet is tracked, unverified,
    /// from where its good update starts; one whose own numbers are bad is reported with
    /// [`Notice::ChannelTooLong`] and `pts: None`.
    ///
    /// A well-formed push is not trusted to say where a channel the engine does not track
    /// starts either: its update waits while the channel's difference is fetched from where
    /// the update starts, and the server's answer decides (see the crate's guarantee 5).
    pub fn handle_updates(&mut self, now: Instant, updates: Updates<U, E>) -> Result<(), Error> {
        match updates {
            Updates::TooLong => {
                self.last_activity = now;
                self.stats.too_long += 1;
                self.start_common_fetch();
            }
            Updates::Short { update, date } => {
                let place = match classify(update.sequence()) {
                    Ok(place) => place,
                    Err(error) => {
                        return Err(self.refuse(now, std::slice::from_ref(&update), error));
                    }
                };
                self.last_activity = now;
                let waiting = self.route(now, place, update, None, Source::Push);
                if !waiting {
                    self.advance_date(date);
                }
            }
            Updates::Combined {
                updates,
                entities,
                date,
                seq_start,
                seq,
            } => {
                if let Err(error) = self.classify_container(&updates, seq_start, seq) {
                    return Err(self.refuse(now, &updates, error));
                }
                let places = mem::take(&mut self.scratch);
                self.last_activity = now;
                self.learn(entities);
                // Updates inside a container are checked against their own sequences first;
                // the container's seq then orders only its unordered updates.
                let mut unordered = (seq != 0).then(Vec::new);
                let mut waiting = false;
                for (update, &place) in updates.into_iter().zip(&places) {
                    waiting |= self.route(now, place, update, unordered.as_mut(), Source::Push);
                }
                self.scratch = places;
                match unordered {
                    None if !waiting => self.advance_date(date),
                    None => {}
                    Some(updates) => {
                        let entry = Entry::Container { updates, date };
                        self.offer_common(now, Slot::Seq, seq_start - 1, seq, entry);
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a container's numbers, leaving its updates' places in `scratch`.
    fn classify_container(&mut self, updates: &[U], seq_start: i32, seq: i32) -> Result<(), Error> {
        check_non_negative("seq", seq)?;
        if seq != 0 && !(1..=seq).contains(&seq_start) {
            return Err(invalid("seq_start", seq_start));
        }
        let places = &mut self.scratch;
        places.clear();
        for update in updates {
            places.push(classify(update.sequence())?);
        }
        Ok(())
    }

    /// A refused push: fetch the difference of every sequence its updates name; returns the
    /// error to report.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, now: Instant, named: &[U], error: Error) -> Error {
        self.stats.pushes_refused += 1;
        self.last_activity = now;
        let mut channels: Vec<(ChannelId, Option<i32>)> = named
            .iter()
            .filter_map(|update| match update.sequence() {
                Sequence::Channel {
                    channel_id,
                    pts,
                    pts_count,
                } => Some((channel_id, pts_range(pts, pts_count).ok().flatten())),
                Sequence::ChannelTooLong { channel_id, .. } => Some((channel_id, None)),
                _ => None,
            })
            .map(|(channel_id, range)| (channel_id, range.map(|(start, _)| start)))
            .filter(|&(channel_id, _)| channel_id > 0)
            .collect();
        // Per channel, the lowest good start first: a malformed update of a channel must not
        // hide where its good update starts.
        channels.sort_unstable_by_key(|&(channel_id, start)| (channel_id, start.is_none(), start));
        channels.dedup_by_key(|&mut (channel_id, _)| channel_id);
        self.start_common_fetch();
        for (channel_id, start) in channels {
            self.recover_channel(channel_id, start);
        }
        error
    }

    /// A refused update named this channel: fetch its difference from where it stands, or,
    /// if it was not tracked, from `start` (where the refused update starts, when its own
    /// numbers are good), unverified: a pushed start is only a claim. A channel nobody knows
    /// the position of is reported.
    pub(super) fn recover_channel(&mut self, channel_id: ChannelId, start: Option<i32>) {
        match (self.channels.entry(channel_id), start) {
            (MapEntry::Occupied(_), _) => {}
            (MapEntry::Vacant(_), Some(start)) => {
                // What the server has from where the update starts includes it.
                self.track_unverified(channel_id, start);
            }
            (MapEntry::Vacant(_), None) => {
                self.notify(Notice::ChannelTooLong {
                    channel_id,
                    pts: None,
                });
                return;
            }
        }
        self.start_channel_fetch(channel_id);
    }

    /// The pts an application's own call returned (`messages.affectedMessages`,
    /// `affectedHistory`, …): it advances the sequence like an update without a delivery, and
    /// may close a gap.
    ///
    /// Malformed numbers are refused (an error) and lead to a difference of the sequence
    /// named, as for a refused push.
    pub fn handle_affected(&mut self, now: Instant, affected: Affected) -> Result<(), Error> {
        let result = self.take_affected(now, affected);
        if result.is_err() {
            self.stats.pushes_refused += 1;
            match affected {
                Affected::Common { .. } => self.start_common_fetch(),
                Affected::Channel { channel_id, .. } if channel_id > 0 => {
                    self.recover_channel(channel_id, None);
                }
                Affected::Channel { .. } => {}
            }
        }
        result
    }

    pub(super) fn take_affected(&mut self, now: Instant, affected: Affected) -> Result<(), Error> {
        match affected {
            Affected::Common { pts, pts_count } => {
                if let Some((start, end)) = pts_range(pts, pts_count)? {
                    self.offer_common(now, Slot::Pts, start, end, Entry::Affected);
                }
            }
            Affected::Channel {
                channel_id,
                pts,
                pts_count,
            } => {
                let channel_id = check_channel(channel_id)?;
                if let Some((start, end)) = pts_range(pts, pts_count)? {
                    // The pts of the application's own call is the server's answer.
                    let source = Source::Server;
                    self.offer_channel(now, channel_id, start, end, Entry::Affected, source);
                }
            }
        }
        Ok(())
    }

    /// Sends one checked update to its sequence. Unordered updates are delivered, or kept for
    /// their container's `seq` when `container` is given. Returns true when the update waits
    /// (buffered behind a gap or an in-flight request).
    #[inline(always)]
    pub(super) fn route(
        &mut self,
        now: Instant,
        place: Place,
        update: U,
        container: Option<&mut Vec<U>>,
        source: Source,
    ) -> bool {
        match place {
            Place::Unordered => {
                match container {
                    Some(updates) => updates.push(update),
                    None => self.deliver(update),
                }
                false
            }
            Place::Pts { start, end } => {
                self.offer_common(now, Slot::Pts, start, end, Entry::Update(update))
            }
            Place::Qts { start, end } => {
                self.offer_common(now, Slot::Qts, start, end, Entry::Update(update))
            }
            Place::Channel {
                channel_id,
                start,
                end,
            } => self.offer_channel(now, channel_id, start, end, Entry::Update(update), source),
            Place::ChannelTooLong { channel_id, pts } => {
                self.channel_too_long(channel_id, pts, source);
                false
            }
            Place::PtsChanged => {
                self.rebase();
                false
            }
        }
    }

    /// Stamps an entry about to be buffered with its arrival.
    #[inline]
    pub(super) fn arrival(&mut self) -> u64 {
        let arrival = self.arrivals;
        self.arrivals += 1;
        arrival
    }

    /// `updatePtsChanged`: fetch what is pending under the old numbers, then re-base on
    /// `getState`. Before the first state there is nothing to re-base: the pending `getState`
    /// answers with the new numbers.
    pub(super) fn rebase(&mut self) {
        if !self.has_state {
            return;
        }
        self.stats.rebases += 1;
        if self.common.rebase != Rebase::State {
            self.common.rebase = Rebase::Pending;
            self.common.rebase_mark = self.arrivals;
        }
        self.start_common_fetch();
    }

    /// `updateChannelTooLong`: fetch the channel's difference. Never rewinds a known pts.
    ///
    /// For a channel not tracked yet, the server's pts is where it starts (reported, history
    /// before it is not fetched); a pushed one is only a claim: the channel is tracked
    /// unverified from it and its difference fetched, as Telegram says to ("start fetching
    /// from the specified pts").
    pub(super) fn channel_too_long(
        &mut self,
        channel_id: ChannelId,
        pts: Option<i32>,
        source: Source,
    ) {
        match (self.channels.get(&channel_id).copied(), pts) {
            (Some(local), Some(pts)) if pts <= local => {} // nothing newer than what we have
            (Some(_), _) => {
                self.stats.too_long += 1;
                self.start_channel_fetch(channel_id);
            }
            (None, Some(pts)) if source == Source::Push => {
                self.stats.too_long += 1;
                self.track_unverified(channel_id, pts);
                self.notify(Notice::ChannelTooLong {
                    channel_id,
                    pts: Some(pts),
                });
                self.start_channel_fetch(channel_id);
            }
            (None, Some(pts)) => {
                self.stats.too_long += 1;
                self.channels.insert(channel_id, pts);
                self.open_change.channel(channel_id, true);
                self.notify(Notice::ChannelTooLong {
                    channel_id,
                    pts: Some(pts),
                });
            }
            (None, None) => self.notify(Notice::ChannelTooLong {
                channel_id,
                pts: None,
            }),
        }
    }
}
