//! The diesel schema, matching `migrations/`.

diesel::table! {
    devices (id) {
        id -> Text,
        name -> Binary,
        platform -> Binary,
        app_version -> Nullable<Binary>,
        enabled -> Bool,
        min_priority -> SmallInt,
        quiet_start -> Nullable<Binary>,
        quiet_end -> Nullable<Binary>,
        quiet_tz -> Nullable<Binary>,
        created_at -> BigInt,
        last_seen_at -> Nullable<BigInt>,
        tokens_valid_after -> BigInt,
        key_id -> Nullable<BigInt>,
        platform_index -> Nullable<Binary>,
        groups -> Nullable<Binary>,
        e2e_public_key -> Nullable<Binary>,
    }
}

diesel::table! {
    device_tokens (id) {
        id -> Text,
        device_id -> Text,
        family_id -> Text,
        token_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        name -> Text,
        scope -> Text,
        token_hash -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    pairing_codes (code_hash) {
        code_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    notifications (seq) {
        seq -> BigInt,
        id -> Text,
        title -> Binary,
        body -> Binary,
        app -> Binary,
        priority -> SmallInt,
        tags -> Binary,
        click_url -> Nullable<Binary>,
        created_at -> BigInt,
        expires_at -> BigInt,
        publisher -> Text,
        idempotency_key -> Nullable<Binary>,
        trace_id -> Nullable<Binary>,
        key_id -> Nullable<BigInt>,
        app_index -> Nullable<Binary>,
        encrypted -> Nullable<Binary>,
    }
}

diesel::table! {
    deliveries (notification_seq, device_id) {
        notification_seq -> BigInt,
        device_id -> Text,
        status -> SmallInt,
        attempts -> Integer,
        sent_at -> Nullable<BigInt>,
        acked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    notification_tags (tag_index, notification_seq) {
        tag_index -> Binary,
        notification_seq -> BigInt,
    }
}

diesel::joinable!(device_tokens -> devices (device_id));
diesel::joinable!(notification_tags -> notifications (notification_seq));
diesel::joinable!(deliveries -> devices (device_id));
diesel::joinable!(deliveries -> notifications (notification_seq));

diesel::allow_tables_to_appear_in_same_query!(
    devices,
    device_tokens,
    api_tokens,
    pairing_codes,
    notifications,
    notification_tags,
    deliveries
);

diesel::table! {
    admins (id) {
        id -> Text,
        username -> Text,
        password_hash -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    admin_sessions (id_hash) {
        id_hash -> Text,
        admin_id -> Text,
        data -> Binary,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        device_id -> Text,
        expires_at -> BigInt,
    }
}

diesel::joinable!(admin_sessions -> admins (admin_id));
diesel::allow_tables_to_appear_in_same_query!(admins, admin_sessions);

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        at_ms -> BigInt,
        actor_kind -> Text,
        actor_id -> Nullable<Text>,
        action -> Text,
        subject -> Nullable<Text>,
        outcome -> Text,
        request_id -> Nullable<Text>,
        trace_id -> Nullable<Text>,
        key_id -> Nullable<BigInt>,
        sealed -> Nullable<Binary>,
        leaf_hash -> Binary,
    }
}

diesel::table! {
    audit_checkpoints (size) {
        size -> BigInt,
        at_ms -> BigInt,
        note -> Text,
        frontier -> Binary,
    }
}
