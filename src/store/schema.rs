//! The diesel schema, matching `migrations/`.

diesel::table! {
    devices (id) {
        id -> Text,
        name -> Text,
        platform -> Text,
        app_version -> Nullable<Text>,
        enabled -> Bool,
        min_priority -> SmallInt,
        quiet_start -> Nullable<Text>,
        quiet_end -> Nullable<Text>,
        quiet_tz -> Nullable<Text>,
        created_at -> BigInt,
        last_seen_at -> Nullable<BigInt>,
        tokens_valid_after -> BigInt,
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
        title -> Text,
        body -> Text,
        app -> Text,
        priority -> SmallInt,
        tags -> Text,
        click_url -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        publisher -> Text,
        idempotency_key -> Nullable<Text>,
        trace_id -> Nullable<Binary>,
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

diesel::joinable!(device_tokens -> devices (device_id));
diesel::joinable!(deliveries -> devices (device_id));
diesel::joinable!(deliveries -> notifications (notification_seq));

diesel::allow_tables_to_appear_in_same_query!(
    devices,
    device_tokens,
    api_tokens,
    pairing_codes,
    notifications,
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
