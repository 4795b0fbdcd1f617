//! Engine requests → TL calls.

use std::collections::HashMap;

use sync_core::{Request, RequestId, RequestKind};
use sync_grammers::tl::{self, Serializable};
use sync_grammers::{ConvertError, TlRequest, request};

fn req(kind: RequestKind) -> Request {
    Request {
        id: RequestId(1),
        kind,
    }
}

#[test]
fn get_state_and_get_difference() {
    let hashes = HashMap::<i64, i64>::new();
    assert_eq!(
        request(&req(RequestKind::GetState), &hashes),
        Ok(TlRequest::GetState(tl::functions::updates::GetState {}))
    );
    let Ok(TlRequest::GetDifference(call)) = request(
        &req(RequestKind::GetDifference {
            pts: 10,
            qts: 2,
            date: 0,
            pts_total_limit: Some(5000),
        }),
        &hashes,
    ) else {
        panic!("expected getDifference")
    };
    assert_eq!(
        (
            call.pts,
            call.qts,
            call.pts_total_limit,
            call.pts_limit,
            call.qts_limit
        ),
        (10, 2, Some(5000), None, None)
    );
    // Telegram refuses date 0.
    assert_eq!(call.date, 1);
    assert!(!call.to_bytes().is_empty());
}

#[test]
fn get_channel_difference_uses_the_stored_hash() {
    let hashes = HashMap::from([(7_i64, 77_i64)]);
    let kind = RequestKind::GetChannelDifference {
        channel_id: 7,
        pts: 40,
        limit: 100,
    };
    let Ok(TlRequest::GetChannelDifference {
        channel_id,
        request: call,
    }) = request(&req(kind), &hashes)
    else {
        panic!("expected getChannelDifference")
    };
    assert_eq!(channel_id, 7);
    assert_eq!(
        call.channel,
        tl::types::InputChannel {
            channel_id: 7,
            access_hash: 77
        }
        .into()
    );
    assert_eq!((call.pts, call.limit, call.force), (40, 100, false));
    assert_eq!(call.filter, tl::enums::ChannelMessagesFilter::Empty);

    // A closure works as the store too; without a hash the request cannot be built.
    let none = |_: i64| None;
    assert_eq!(
        request(&req(kind), &none),
        Err(ConvertError::MissingAccessHash(7))
    );
}
