//! What the application supplies to receive updates: a [`Handler`], which also gets the
//! engine's [`Notice`]s (skipped history, lost channels) in order with each peer's updates.

use std::future::{Future, ready};
use std::sync::Arc;

use sync_core::Notice;

use crate::api::BoxError;
use crate::manager::BadState;

/// The application's update handler.
///
/// It is shared by every shard (wrap mutable state in a lock, or key it by peer: updates of
/// one [`PeerKey`](crate::PeerKey) reach the handler one at a time, in order). An update
/// counts as handled when `handle` returns, whatever it returns: an error is logged and counted
/// ([`RuntimeStats::handler_errors`](crate::RuntimeStats)), a panic is caught and counted
/// ([`RuntimeStats::handler_panics`](crate::RuntimeStats)), and neither stops the manager nor
/// the peer's later updates. Retry inside the handler if an update must not be skipped.
///
/// The handler may call the API and any [`ManagerHandle`](crate::ManagerHandle) method, and
/// await it (pushes of its own calls' results, `push_affected`, `track_channel`,
/// `caught_up`, waiting for intake room): the manager never waits for the dispatch, so it keeps
/// answering while handlers wait, and what a handler awaits resolves or fails with
/// [`ControlError::Stopped`](crate::ControlError::Stopped). Inside a handler,
/// [`caught_up`](crate::ManagerHandle::caught_up) does not wait for updates to be handled
/// (the caller's own is one of them); see its docs. A task the handler spawns is not inside the
/// handler: awaiting its `caught_up` from the handler waits for the handler itself.
///
/// A handler that blocks holds up its own shard's later updates (and, once the manager's
/// backlog reaches that shard, the hand-over of everything after them: pushes then wait in the
/// intake, and are dropped and recovered by a difference later only if it fills). At shutdown the handlers get
/// [`ManagerConfig::shutdown_grace`](crate::ManagerConfig::shutdown_grace) to finish, then
/// they are stopped.
///
/// ```
/// use std::sync::Arc;
/// use sync_runtime::{BoxError, Handler, Notice};
///
/// struct Bot;
///
/// impl Handler<String, ()> for Bot {
///     async fn handle(&self, update: String, _entities: Arc<[()]>) -> Result<(), BoxError> {
///         if update.is_empty() {
///             return Err("empty update".into());
///         }
///         Ok(())
///     }
///
///     async fn notice(&self, notice: Notice) {
///         if let Notice::ChannelTooLong { channel_id, .. } = notice {
///             let _ = channel_id; // reload that channel's history
///         }
///     }
/// }
/// ```
pub trait Handler<U, E>: Send + Sync + 'static {
    /// Handles one update. `entities` are the users and chats delivered with it (shared by the
    /// updates of one batch).
    fn handle(
        &self,
        update: U,
        entities: Arc<[E]>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Learns of skipped history or a lost channel, in order with the peer's updates. The
    /// default does nothing.
    fn notice(&self, notice: Notice) -> impl Future<Output = ()> + Send {
        let _ = notice;
        ready(())
    }

    /// The stored state could not be used and was thrown away, under
    /// [`BadStatePolicy::StartFresh`](crate::BadStatePolicy::StartFresh): called once, at
    /// start, before any update, with what was wrong. The manager starts from `getState`, so
    /// what happened while the client was away is not delivered and no channel is tracked:
    /// reload what the application shows and track its channels again. The default does
    /// nothing (the manager has logged a warning).
    fn state_discarded(&self, bad: BadState) -> impl Future<Output = ()> + Send {
        let _ = bad;
        ready(())
    }
}

impl<U, E, H: Handler<U, E>> Handler<U, E> for Arc<H> {
    fn handle(
        &self,
        update: U,
        entities: Arc<[E]>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        (**self).handle(update, entities)
    }

    fn notice(&self, notice: Notice) -> impl Future<Output = ()> + Send {
        (**self).notice(notice)
    }

    fn state_discarded(&self, bad: BadState) -> impl Future<Output = ()> + Send {
        (**self).state_discarded(bad)
    }
}
