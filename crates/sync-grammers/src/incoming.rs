//! Pushed `Updates` values turned into the engine's envelope.

use std::cell::RefCell;
use std::time::Instant;

use grammers_tl_types as tl;
use sync_core::{Affected, ChannelId, Engine, Sequence, Update, Updates};

use crate::decode;
use crate::entities::TlEntities;
use crate::error::ConvertError;
use crate::peers::{AllKnown, MentionedPeer, PeerCache, Resolver};
use crate::update::TlUpdate;

/// The engine type this adapter feeds.
pub type TlEngine = Engine<TlUpdate, TlEntities>;

/// The engine's envelope for TL values.
pub type TlUpdates = Updates<TlUpdate, TlEntities>;

/// What one pushed `Updates` value becomes. [`Incoming::apply`] does the right thing with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Feed it with [`Engine::handle_updates`].
    Updates(TlUpdates),
    /// `updateShortSentMessage` (without the request that caused it, see
    /// [`Converter::sent_message`]): the pts of the application's own send, fed with
    /// [`Engine::handle_affected`]. It advances the sequence without a delivery: the
    /// application has the message from its own call.
    Affected(Affected),
    /// Some updates mention peers that can be resolved neither from the container nor from the
    /// [`PeerCache`]. They are withheld; the rest (if anything is left) is fed as usual, and the
    /// sequences of the withheld updates are fetched as differences, which come with full
    /// entities. The engine keeps everything after a withheld update behind the gap it leaves,
    /// and the difference is authoritative, so nothing is lost or delivered twice.
    NeedsDifference {
        /// What is left to feed with [`Engine::handle_updates`].
        rest: Option<TlUpdates>,
        /// What to fetch.
        refetch: Refetch,
    },
}

/// The sequences whose differences must be fetched because an update of theirs was withheld.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refetch {
    /// Call [`Engine::request_difference`]: a common pts or qts update was withheld.
    pub common: bool,
    /// Call [`Engine::request_channel_difference`] for each.
    pub channels: Vec<ChannelRefetch>,
}

/// A channel whose update was withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelRefetch {
    /// Which channel.
    pub channel_id: ChannelId,
    /// The channel's pts before the withheld update: where to start tracking it from, if the
    /// engine did not track it yet.
    pub pts_before: i32,
}

impl Refetch {
    /// True when nothing is to be fetched.
    pub fn is_empty(&self) -> bool {
        !self.common && self.channels.is_empty()
    }

    fn add(&mut self, sequence: Sequence) {
        match sequence {
            Sequence::Common { .. } | Sequence::Qts { .. } => self.common = true,
            Sequence::Channel {
                channel_id,
                pts,
                pts_count,
            } => {
                if !self.channels.iter().any(|c| c.channel_id == channel_id) {
                    self.channels.push(ChannelRefetch {
                        channel_id,
                        pts_before: pts.saturating_sub(pts_count).max(0),
                    });
                }
            }
            // None of these can be withheld: only numbered updates are (see `Converter::withhold`).
            Sequence::Unordered | Sequence::ChannelTooLong { .. } | Sequence::PtsChanged => {}
        }
    }

    /// Asks `engine` for the differences: the common one, and each channel's (tracking the
    /// channel first, from before the withheld update, when the engine did not know it).
    pub fn apply(&self, engine: &mut TlEngine, now: Instant) -> Result<(), sync_core::Error> {
        if self.common {
            engine.request_difference(now);
        }
        for channel in &self.channels {
            if engine.channel_pts(channel.channel_id).is_none() {
                engine.track_channel(channel.channel_id, channel.pts_before)?;
            }
            engine.request_channel_difference(channel.channel_id)?;
        }
        Ok(())
    }
}

impl Incoming {
    /// Feeds it to `engine`: [`Engine::handle_updates`], [`Engine::handle_affected`], or the
    /// rest followed by the differences' requests. Poll the engine's outputs afterwards as
    /// usual.
    pub fn apply(self, engine: &mut TlEngine, now: Instant) -> Result<(), sync_core::Error> {
        match self {
            Incoming::Updates(updates) => engine.handle_updates(now, updates),
            Incoming::Affected(affected) => engine.handle_affected(now, affected),
            Incoming::NeedsDifference { rest, refetch } => {
                if let Some(rest) = rest {
                    engine.handle_updates(now, rest)?;
                }
                refetch.apply(engine, now)
            }
        }
    }
}

/// Converts pushed `Updates` values, asking the application's [`PeerCache`] about peers the
/// short forms mention.
#[derive(Debug, Clone, Default)]
pub struct Converter<C = AllKnown> {
    cache: C,
    self_id: Option<i64>,
}

impl<C: PeerCache> Converter<C> {
    /// A converter asking `cache` whether peers are known.
    pub fn new(cache: C) -> Self {
        Self {
            cache,
            self_id: None,
        }
    }

    /// The logged-in user's id: the sender (`from_id`) of outgoing `updateShortMessage`s.
    /// Without it, their expanded message has no `from_id` (the peer alone says who the chat
    /// is with).
    ///
    /// The own user also counts as known wherever a peer is checked, without asking the
    /// [`PeerCache`]: messages in Saved Messages (the chat with oneself), one's own messages,
    /// forwards of them. Without it, the own user is known only if the cache or the container
    /// says so.
    pub fn with_self_id(mut self, self_id: i64) -> Self {
        self.self_id = Some(self_id);
        self
    }

    /// The logged-in user's id, if [`Converter::with_self_id`] named it.
    pub fn self_id(&self) -> Option<i64> {
        self.self_id
    }

    /// The peer cache.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// The peer cache, to update it.
    pub fn cache_mut(&mut self) -> &mut C {
        &mut self.cache
    }

    /// Converts one pushed `Updates` value:
    ///
    /// | TL | becomes |
    /// | --- | --- |
    /// | `updatesTooLong` | [`Updates::TooLong`] |
    /// | `updateShortMessage` | [`Updates::Short`] with an `updateNewMessage` in the private chat (`peerUser`) |
    /// | `updateShortChatMessage` | [`Updates::Short`] with an `updateNewMessage` in the basic group (`peerChat`, sender `peerUser`) |
    /// | `updateShort` | [`Updates::Short`] with its update |
    /// | `updates` | [`Updates::Combined`] with `seq_start == seq` |
    /// | `updatesCombined` | [`Updates::Combined`] |
    /// | `updateShortSentMessage` | [`Incoming::Affected`] (see [`Converter::sent_message`] for a full message) |
    ///
    /// A message update naming a peer that is unknown to the container's entities and to the
    /// [`PeerCache`], and is not the own user ([`Converter::with_self_id`]), is withheld
    /// ([`Incoming::NeedsDifference`]); the crate docs list the peer fields checked. Only
    /// numbered updates are withheld: an unnumbered one could not be fetched again, so it is
    /// delivered as it is.
    pub fn updates(&self, mut updates: tl::enums::Updates) -> Incoming {
        use tl::enums::Updates as T;
        match updates {
            T::TooLong => Incoming::Updates(Updates::TooLong),
            // Checked as the message they expand to.
            T::UpdateShortMessage(m) => {
                let date = m.date;
                self.short_update(TlUpdate(short_message(m, self.self_id)), date)
            }
            T::UpdateShortChatMessage(m) => {
                let date = m.date;
                self.short_update(TlUpdate(short_chat_message(m)), date)
            }
            // Borrowed, not moved: the TL update is about 5 KB inline, and moving it out by
            // value would copy it to the stack first. It is moved into its box once, from
            // where it lies, and only the box's pointer moves from then on.
            T::UpdateShort(ref mut short) => {
                self.short_update(TlUpdate::take(&mut short.update), short.date)
            }
            T::Combined(c) => self.combined(
                c.updates,
                TlEntities::new(c.users, c.chats),
                c.date,
                c.seq_start,
                c.seq,
            ),
            T::Updates(u) => self.combined(
                u.updates,
                TlEntities::new(u.users, u.chats),
                u.date,
                u.seq,
                u.seq,
            ),
            T::UpdateShortSentMessage(s) => Incoming::Affected(Affected::Common {
                pts: s.pts,
                pts_count: s.pts_count,
            }),
        }
    }

    /// Decodes a pushed `Updates` value from its TL bytes, then converts it like
    /// [`Converter::updates`]. Bytes that do not decode are [`ConvertError::Undecodable`]:
    /// something was pushed that cannot be read, so fetch the difference.
    pub fn updates_from_bytes(&self, bytes: &[u8]) -> Result<Incoming, ConvertError> {
        Ok(self.updates(decode(bytes)?))
    }

    /// `updateShortSentMessage` together with what the application sent: the chat (`peer`,
    /// as a `Peer`; resolve `inputPeerSelf` to the own user) and the text. It becomes an
    /// `updateNewMessage` with the message as the server stored it (id, date, media and
    /// entities from the update), delivered in order like any other. Outgoing sends to
    /// channels never come in this form: their reply is a full `Updates`.
    pub fn sent_message(
        &self,
        sent: tl::types::UpdateShortSentMessage,
        peer: tl::enums::Peer,
        text: String,
    ) -> Incoming {
        let message = tl::types::Message {
            out: sent.out,
            from_id: self.self_id.map(user_peer),
            media: sent.media,
            entities: sent.entities,
            ttl_period: sent.ttl_period,
            ..blank_message(sent.id, peer, sent.date, text)
        };
        let update = tl::types::UpdateNewMessage {
            message: message.into(),
            pts: sent.pts,
            pts_count: sent.pts_count,
        };
        Incoming::Updates(Updates::Short {
            update: TlUpdate::from(tl::enums::Update::from(update)),
            date: sent.date,
        })
    }

    fn resolver<'a>(&'a self, entities: Option<&'a TlEntities>) -> Resolver<'a, C> {
        Resolver {
            cache: &self.cache,
            users: entities.map_or(&[], |e| &e.users),
            chats: entities.map_or(&[], |e| &e.chats),
            self_id: self.self_id,
        }
    }

    /// The peers [`Converter::updates`] would ask the [`PeerCache`] about in `updates` and
    /// that it does not know: those of the message updates it could withhold, less the
    /// container's full users and channels and the own user. Each is listed once, in the
    /// order first met.
    ///
    /// For a cache that can answer fully only asynchronously (a database, grammers'
    /// `Session`): look these up before converting, remember the known ones in the cache,
    /// then convert. Nothing is listed when every peer is known, which is the common case.
    ///
    /// ```
    /// use grammers_tl_types as tl;
    /// use sync_grammers::{Converter, MentionedPeer};
    ///
    /// let converter = Converter::new(|peer| peer == MentionedPeer::User(7));
    /// let from = |user_id| tl::types::UpdateShortMessage {
    ///     out: false, mentioned: false, media_unread: false, silent: false,
    ///     id: 1, user_id, message: "hi".into(), pts: 2, pts_count: 1, date: 3,
    ///     fwd_from: None, via_bot_id: None, reply_to: None, entities: None, ttl_period: None,
    /// };
    /// assert!(converter.unknown_peers(&from(7).into()).is_empty());
    /// assert_eq!(converter.unknown_peers(&from(8).into()), [MentionedPeer::User(8)]);
    /// ```
    pub fn unknown_peers(&self, updates: &tl::enums::Updates) -> Vec<MentionedPeer> {
        use tl::enums::Updates as T;
        let missing = RefCell::new(Vec::new());
        // Answers "known" to every peer, so that the check visits them all, and notes those
        // the cache does not know.
        let recorder = |peer: MentionedPeer| {
            if !self.cache.is_known(peer) {
                let mut missing = missing.borrow_mut();
                if !missing.contains(&peer) {
                    missing.push(peer);
                }
            }
            true
        };
        let scan =
            |users: &[tl::enums::User], chats: &[tl::enums::Chat], update: &tl::enums::Update| {
                if withholdable(crate::sequence_of(update)) {
                    let resolver = Resolver {
                        cache: &recorder,
                        users,
                        chats,
                        self_id: self.self_id,
                    };
                    resolver.update_known(update);
                }
            };
        match updates {
            T::UpdateShortMessage(m) => scan(&[], &[], &short_message(m.clone(), self.self_id)),
            T::UpdateShortChatMessage(m) => scan(&[], &[], &short_chat_message(m.clone())),
            T::UpdateShort(short) => scan(&[], &[], &short.update),
            T::Combined(c) => c.updates.iter().for_each(|u| scan(&c.users, &c.chats, u)),
            T::Updates(u) => u
                .updates
                .iter()
                .for_each(|update| scan(&u.users, &u.chats, update)),
            T::TooLong | T::UpdateShortSentMessage(_) => {}
        }
        missing.into_inner()
    }

    fn short_update(&self, update: TlUpdate, date: i32) -> Incoming {
        let known = self.resolver(None).update_known(&update);
        let sequence = update.sequence();
        if known || !withholdable(sequence) {
            return Incoming::Updates(Updates::Short { update, date });
        }
        let mut refetch = Refetch::default();
        refetch.add(sequence);
        Incoming::NeedsDifference {
            rest: None,
            refetch,
        }
    }

    fn combined(
        &self,
        updates: Vec<tl::enums::Update>,
        entities: TlEntities,
        date: i32,
        seq_start: i32,
        seq: i32,
    ) -> Incoming {
        let resolver = self.resolver(Some(&entities));
        // The common case has every peer known: check first, so that the vector is converted
        // in place without a second allocation.
        let first_unknown = updates
            .iter()
            .position(|u| !resolver.update_known(u) && withholdable(crate::sequence_of(u)));
        let Some(first_unknown) = first_unknown else {
            return Incoming::Updates(Updates::Combined {
                updates: TlUpdate::take_all(updates),
                entities,
                date,
                seq_start,
                seq,
            });
        };
        let mut refetch = Refetch::default();
        let mut kept = Vec::with_capacity(updates.len());
        for (i, update) in updates.into_iter().enumerate() {
            let sequence = crate::sequence_of(&update);
            let withheld =
                i >= first_unknown && withholdable(sequence) && !resolver.update_known(&update);
            if withheld {
                refetch.add(sequence);
            } else {
                kept.push(TlUpdate::from(update));
            }
        }
        // The container is still fed (its seq, entities and other updates apply): only the
        // withheld updates' sequences wait for their differences.
        let rest = Updates::Combined {
            updates: kept,
            entities,
            date,
            seq_start,
            seq,
        };
        Incoming::NeedsDifference {
            rest: Some(rest),
            refetch,
        }
    }
}

/// Only numbered updates can be fetched again by a difference.
fn withholdable(sequence: Sequence) -> bool {
    matches!(
        sequence,
        Sequence::Common { .. } | Sequence::Qts { .. } | Sequence::Channel { .. }
    )
}

fn user_peer(user_id: i64) -> tl::enums::Peer {
    tl::types::PeerUser { user_id }.into()
}

/// `updateShortMessage` as the `updateNewMessage` it abbreviates: a private chat with
/// `user_id`, sent by them (incoming) or by us (outgoing).
pub(crate) fn short_message(
    m: tl::types::UpdateShortMessage,
    self_id: Option<i64>,
) -> Box<tl::enums::Update> {
    let from_id = if m.out {
        self_id.map(user_peer)
    } else {
        Some(user_peer(m.user_id))
    };
    // Built inside the box in one expression, so the 5 KB value is not copied on the way.
    Box::new(tl::enums::Update::NewMessage(tl::types::UpdateNewMessage {
        message: tl::enums::Message::Message(tl::types::Message {
            out: m.out,
            mentioned: m.mentioned,
            media_unread: m.media_unread,
            silent: m.silent,
            from_id,
            fwd_from: m.fwd_from,
            via_bot_id: m.via_bot_id,
            reply_to: m.reply_to,
            entities: m.entities,
            ttl_period: m.ttl_period,
            ..blank_message(m.id, user_peer(m.user_id), m.date, m.message)
        }),
        pts: m.pts,
        pts_count: m.pts_count,
    }))
}

/// `updateShortChatMessage` as the `updateNewMessage` it abbreviates: a basic group
/// (`peerChat`) message from the user `from_id`.
pub(crate) fn short_chat_message(m: tl::types::UpdateShortChatMessage) -> Box<tl::enums::Update> {
    let chat = tl::types::PeerChat { chat_id: m.chat_id }.into();
    Box::new(tl::enums::Update::NewMessage(tl::types::UpdateNewMessage {
        message: tl::enums::Message::Message(tl::types::Message {
            out: m.out,
            mentioned: m.mentioned,
            media_unread: m.media_unread,
            silent: m.silent,
            from_id: Some(user_peer(m.from_id)),
            fwd_from: m.fwd_from,
            via_bot_id: m.via_bot_id,
            reply_to: m.reply_to,
            entities: m.entities,
            ttl_period: m.ttl_period,
            ..blank_message(m.id, chat, m.date, m.message)
        }),
        pts: m.pts,
        pts_count: m.pts_count,
    }))
}

/// A `message` with only the given fields set and every other one empty: what the short forms
/// (`updateShortMessage`, `updateShortChatMessage`) carry. Also handy to build messages in tests.
#[inline(always)]
pub fn blank_message(
    id: i32,
    peer_id: tl::enums::Peer,
    date: i32,
    text: String,
) -> tl::types::Message {
    tl::types::Message {
        out: false,
        mentioned: false,
        media_unread: false,
        silent: false,
        post: false,
        from_scheduled: false,
        legacy: false,
        edit_hide: false,
        pinned: false,
        noforwards: false,
        invert_media: false,
        offline: false,
        video_processing_pending: false,
        paid_suggested_post_stars: false,
        paid_suggested_post_ton: false,
        id,
        from_id: None,
        from_boosts_applied: None,
        from_rank: None,
        peer_id,
        saved_peer_id: None,
        fwd_from: None,
        via_bot_id: None,
        via_business_bot_id: None,
        guestchat_via_from: None,
        reply_to: None,
        date,
        message: text,
        media: None,
        reply_markup: None,
        entities: None,
        views: None,
        forwards: None,
        replies: None,
        edit_date: None,
        post_author: None,
        grouped_id: None,
        reactions: None,
        restriction_reason: None,
        ttl_period: None,
        quick_reply_shortcut_id: None,
        effect: None,
        factcheck: None,
        report_delivery_until_date: None,
        paid_message_stars: None,
        suggested_post: None,
        schedule_repeat_period: None,
        summary_from_language: None,
        rich_message: None,
    }
}
