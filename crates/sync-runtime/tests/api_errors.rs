//! How RPC errors are classified, for every name the manager knows, in both forms: the joined
//! name Telegram sends (`FLOOD_WAIT_31`) through `ApiError::rpc`, and the name and value
//! apart, as grammers' `RpcError` has them, through `ApiError::rpc_with_value`.

use std::time::Duration;

use sync_runtime::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Wait(u64),
    Channel,
    Unauthorized,
    Transient,
}

fn class(error: &ApiError) -> Class {
    match error {
        ApiError::FloodWait { after } => Class::Wait(after.as_secs()),
        ApiError::ChannelInaccessible { .. } => Class::Channel,
        ApiError::Unauthorized { .. } => Class::Unauthorized,
        ApiError::Transient { .. } => Class::Transient,
        other => panic!("unexpected class: {other:?}"),
    }
}

/// (code, name, value, class)
const TABLE: &[(i32, &str, Option<u32>, Class)] = &[
    (420, "FLOOD_WAIT", Some(31), Class::Wait(31)),
    (420, "FLOOD_WAIT", Some(0), Class::Wait(0)),
    (420, "FLOOD_PREMIUM_WAIT", Some(5), Class::Wait(5)),
    (420, "SLOWMODE_WAIT", Some(12), Class::Wait(12)),
    (420, "FLOOD_TEST_PHONE_WAIT", Some(60), Class::Wait(60)),
    (400, "TAKEOUT_INIT_DELAY", Some(3600), Class::Wait(3600)),
    // A 420 with a number the manager does not know by name still says how long to wait.
    (420, "SOME_NEW_WAIT", Some(9), Class::Wait(9)),
    // A wait without its number: nothing to honour, retried with backoff.
    (420, "FLOOD_WAIT", None, Class::Transient),
    (500, "PERSISTENT_TIMESTAMP_OUTDATED", None, Class::Transient),
    (400, "CHANNEL_PRIVATE", None, Class::Channel),
    (400, "CHANNEL_INVALID", None, Class::Channel),
    (400, "CHANNEL_PUBLIC_GROUP_NA", None, Class::Channel),
    (403, "CHAT_FORBIDDEN", None, Class::Channel),
    (400, "USER_BANNED_IN_CHANNEL", None, Class::Channel),
    (401, "AUTH_KEY_UNREGISTERED", None, Class::Unauthorized),
    (401, "AUTH_KEY_INVALID", None, Class::Unauthorized),
    (401, "SESSION_REVOKED", None, Class::Unauthorized),
    (401, "SESSION_EXPIRED", None, Class::Unauthorized),
    (401, "USER_DEACTIVATED", None, Class::Unauthorized),
    (401, "USER_DEACTIVATED_BAN", None, Class::Unauthorized),
    (406, "AUTH_KEY_DUPLICATED", None, Class::Unauthorized),
    // Unauthorized by name even under another code.
    (400, "AUTH_KEY_UNREGISTERED", None, Class::Unauthorized),
    (403, "USER_DEACTIVATED_BAN", None, Class::Unauthorized),
    (401, "SOMETHING_NEW", None, Class::Unauthorized),
    (500, "INTERNAL_SERVER_ERROR", None, Class::Transient),
    (503, "TIMEOUT", None, Class::Transient),
    (-503, "Timeout", None, Class::Transient),
    (500, "RPC_CALL_FAIL", None, Class::Transient),
    (400, "PEER_ID_INVALID", None, Class::Transient),
];

fn joined(name: &str, value: Option<u32>) -> String {
    match value {
        Some(value) => format!("{name}_{value}"),
        None => name.to_owned(),
    }
}

#[test]
fn both_forms_classify_alike() {
    for &(code, name, value, expected) in TABLE {
        let apart = ApiError::rpc_with_value(code, name, value);
        let together = ApiError::rpc(code, &joined(name, value));
        assert_eq!(class(&apart), expected, "{code} {name} {value:?} (apart)");
        assert_eq!(
            class(&together),
            expected,
            "{code} {name} {value:?} (joined)"
        );
        assert_eq!(
            apart.to_string(),
            together.to_string(),
            "{code} {name} {value:?}"
        );
    }
}

#[test]
fn grammers_wait_is_not_transient() {
    // The bug this guards against: the bare name with its value apart read as transient.
    assert!(matches!(
        ApiError::rpc_with_value(420, "FLOOD_WAIT", Some(31)),
        ApiError::FloodWait { after } if after == Duration::from_secs(31)
    ));
}

#[test]
fn joined_names_split_only_a_trailing_number() {
    let cases: &[(&str, Class)] = &[
        ("FLOOD_WAIT_X", Class::Transient),
        ("FLOOD_WAIT_", Class::Transient),
        ("FLOOD_WAIT_99999999999", Class::Transient),
        ("_5", Class::Transient),
        ("FLOOD_WAIT_7", Class::Wait(7)),
    ];
    for &(message, expected) in cases {
        assert_eq!(class(&ApiError::rpc(420, message)), expected, "{message}");
    }
    // A number on a name that is not a wait changes nothing of its class.
    assert_eq!(
        class(&ApiError::rpc(400, "CHANNEL_PRIVATE")),
        Class::Channel
    );
}
