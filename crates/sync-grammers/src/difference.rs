//! `updates.State`, `updates.Difference` and `updates.ChannelDifference` as engine inputs.

use grammers_tl_types as tl;
use sync_core::{Affected, ChannelDifference, ChannelDifferenceKind, ChannelId, Difference, State};

use crate::entities::TlEntities;
use crate::error::ConvertError;
use crate::update::{TlUpdate, message_channel};

/// `updates.state`, the answer to `getState`, for [`Engine::handle_state`](sync_core::Engine).
pub fn state(state: tl::enums::updates::State) -> State {
    let tl::enums::updates::State::State(s) = state;
    State {
        pts: s.pts,
        qts: s.qts,
        date: s.date,
        seq: s.seq,
    }
}

/// The answer to `getDifference`, for [`Engine::handle_difference`](sync_core::Engine).
///
/// `new_messages` become `updateNewMessage` (or `updateNewChannelMessage` for a message whose
/// peer is a channel), `new_encrypted_messages` become `updateNewEncryptedMessage`, all with
/// pts / qts 0: the difference's state already covers them, so they are delivered as they are.
/// They come first, then `other_updates`, in server order; `users` and `chats` are the
/// entities. A slice's `intermediate_state` is its state.
pub fn difference(difference: tl::enums::updates::Difference) -> Difference<TlUpdate, TlEntities> {
    use tl::enums::updates::Difference as D;
    match difference {
        D::Empty(d) => Difference::Empty {
            date: d.date,
            seq: d.seq,
        },
        D::Difference(d) => full_difference(
            d.new_messages,
            d.new_encrypted_messages,
            d.other_updates,
            TlEntities::new(d.users, d.chats),
            d.state,
            false,
        ),
        D::Slice(d) => full_difference(
            d.new_messages,
            d.new_encrypted_messages,
            d.other_updates,
            TlEntities::new(d.users, d.chats),
            d.intermediate_state,
            true,
        ),
        D::TooLong(d) => Difference::TooLong { pts: d.pts },
    }
}

fn full_difference(
    new_messages: Vec<tl::enums::Message>,
    new_encrypted_messages: Vec<tl::enums::EncryptedMessage>,
    mut other_updates: Vec<tl::enums::Update>,
    entities: TlEntities,
    new_state: tl::enums::updates::State,
    slice: bool,
) -> Difference<TlUpdate, TlEntities> {
    let mut updates =
        Vec::with_capacity(new_messages.len() + new_encrypted_messages.len() + other_updates.len());
    updates.extend(new_messages.into_iter().map(wrap_message));
    updates.extend(new_encrypted_messages.into_iter().map(|message| {
        TlUpdate::from(tl::enums::Update::from(
            tl::types::UpdateNewEncryptedMessage { message, qts: 0 },
        ))
    }));
    updates.extend(other_updates.iter_mut().map(TlUpdate::take));
    Difference::Difference {
        updates,
        entities,
        state: state(new_state),
        slice,
    }
}

/// A message of a difference as the update that would have carried it, without a position.
fn wrap_message(message: tl::enums::Message) -> TlUpdate {
    let update: tl::enums::Update = if message_channel(&message).is_some() {
        tl::types::UpdateNewChannelMessage {
            message,
            pts: 0,
            pts_count: 0,
        }
        .into()
    } else {
        tl::types::UpdateNewMessage {
            message,
            pts: 0,
            pts_count: 0,
        }
        .into()
    };
    TlUpdate::from(update)
}

/// The answer to `getChannelDifference` for `channel_id` (the channel of the request), for
/// [`Engine::handle_channel_difference`](sync_core::Engine).
///
/// `new_messages` become `updateNewChannelMessage` with pts 0 (the reply's pts covers them),
/// followed by `other_updates`. `channelDifferenceTooLong` resets the channel to its dialog's
/// pts: the engine reports [`Notice::ChannelTooLong`](sync_core::Output), then delivers the
/// channel's latest `messages` that the reply carries, each as an `updateNewChannelMessage`
/// with pts 0 (outside the sequence: the handler can tell them by it). Its `final` flag is
/// implied.
pub fn channel_difference(
    channel_id: ChannelId,
    difference: tl::enums::updates::ChannelDifference,
) -> Result<ChannelDifference<TlUpdate, TlEntities>, ConvertError> {
    use tl::enums::updates::ChannelDifference as D;
    let kind = match difference {
        D::Empty(d) => ChannelDifferenceKind::Empty {
            pts: d.pts,
            is_final: d.r#final,
            timeout: d.timeout,
        },
        D::Difference(mut d) => {
            let mut updates = Vec::with_capacity(d.new_messages.len() + d.other_updates.len());
            updates.extend(d.new_messages.into_iter().map(unsequenced_channel_message));
            updates.extend(d.other_updates.iter_mut().map(TlUpdate::take));
            ChannelDifferenceKind::Difference {
                updates,
                entities: TlEntities::new(d.users, d.chats),
                pts: d.pts,
                is_final: d.r#final,
                timeout: d.timeout,
            }
        }
        D::TooLong(d) => {
            let tl::enums::Dialog::Dialog(dialog) = d.dialog else {
                return Err(ConvertError::UnexpectedDialog(channel_id));
            };
            match dialog.peer {
                tl::enums::Peer::Channel(c) if c.channel_id == channel_id => {}
                _ => return Err(ConvertError::UnexpectedDialog(channel_id)),
            }
            let pts = dialog
                .pts
                .ok_or(ConvertError::DialogWithoutPts(channel_id))?;
            ChannelDifferenceKind::TooLong {
                pts,
                updates: d
                    .messages
                    .into_iter()
                    .map(unsequenced_channel_message)
                    .collect(),
                entities: TlEntities::new(d.users, d.chats),
                timeout: d.timeout,
            }
        }
    };
    Ok(ChannelDifference { channel_id, kind })
}

/// A channel message a difference carries, as an `updateNewChannelMessage` outside the
/// sequence (pts 0: the reply's pts covers it).
fn unsequenced_channel_message(message: tl::enums::Message) -> TlUpdate {
    TlUpdate::from(tl::enums::Update::from(
        tl::types::UpdateNewChannelMessage {
            message,
            pts: 0,
            pts_count: 0,
        },
    ))
}

/// `messages.affectedMessages` (from `messages.deleteMessages`, `readMessageContents`, …) for
/// [`Engine::handle_affected`](sync_core::Engine): the common box, or `channel_id`'s for
/// `channels.deleteMessages`.
pub fn affected_messages(
    affected: &tl::enums::messages::AffectedMessages,
    channel_id: Option<ChannelId>,
) -> Affected {
    let tl::enums::messages::AffectedMessages::Messages(a) = affected;
    affected_pts(a.pts, a.pts_count, channel_id)
}

/// `messages.affectedHistory` (from `messages.deleteHistory`, `readMentions`, …) for
/// [`Engine::handle_affected`](sync_core::Engine), like [`affected_messages`].
pub fn affected_history(
    affected: &tl::enums::messages::AffectedHistory,
    channel_id: Option<ChannelId>,
) -> Affected {
    let tl::enums::messages::AffectedHistory::History(a) = affected;
    affected_pts(a.pts, a.pts_count, channel_id)
}

fn affected_pts(pts: i32, pts_count: i32, channel_id: Option<ChannelId>) -> Affected {
    match channel_id {
        Some(channel_id) => Affected::Channel {
            channel_id,
            pts,
            pts_count,
        },
        None => Affected::Common { pts, pts_count },
    }
}
