//! Config loading (`config::Settings::load`): the input is a `config.toml`, written to a file here
//! and loaded as `beepmyphone serve --config FILE` loads it (the defaults, the file through
//! figment's TOML provider, the environment, then `Settings::validate`).
//!
//! Checks: a refused file is an error that says something; settings that load are valid again,
//! with the listen address, OTLP headers, trusted proxies and log levels the relay reads at
//! start-up in a form it can use; and they can issue a device token: one signed with the loaded
//! issuer, audience and access-token lifetime verifies and lasts that lifetime (or until the end
//! of i64 time, for a lifetime longer than what is left of it).

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;

use beepmyphone::config::{Overrides, Settings};
use beepmyphone::domain::log_level::parse_level;
use beepmyphone::domain::net::Cidr;
use beepmyphone::security::jwt::{JwtKeys, RingKey};
use beepmyphone_actors::keys::{KeyState, KeyStatus};
use beepmyphone_actors::model::DeviceId;

struct Fixture {
    file: PathBuf,
    key: Arc<RingKey>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // Only the file speaks: no `BEEP__…` variable of the machine running the fuzzer.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BEEP__") {
            std::env::remove_var(name);
        }
    }
    let pem = openssl::rsa::Rsa::generate(2048)
        .and_then(|rsa| rsa.private_key_to_pem())
        .expect("an RSA key");
    Fixture {
        file: std::env::temp_dir().join(format!(
            "beepmyphone-fuzz-{}-config.toml",
            std::process::id()
        )),
        key: Arc::new(RingKey::from_private_pem(&pem).expect("a ring key")),
    }
});

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn usable(fixture: &Fixture, settings: &Settings) {
    settings.validate().expect("loaded settings are valid");
    settings
        .listen_addr()
        .expect("a listen address that validated");
    settings
        .otlp
        .headers
        .pairs()
        .expect("OTLP headers that validated");
    for proxy in &settings.limits.trusted_proxies {
        assert!(Cidr::parse(proxy).is_some(), "{proxy:?}");
    }
    assert!(parse_level(&settings.log.level).is_some());
    let _ = (
        settings.keys_dir(),
        settings.audit_checkpoint_file(),
        settings.audit_archive_dir(),
    );
    let _ = settings.ack_timeout();

    let auth = &settings.auth;
    let status = KeyStatus {
        kid: fixture.key.kid().to_owned(),
        created_ms: 0,
        state: KeyState::Current,
        retires_at_ms: None,
    };
    let keys = JwtKeys::new(
        vec![(fixture.key.clone(), status)],
        &auth.issuer,
        &auth.audience,
    )
    .expect("a key ring for the loaded issuer and audience");
    let device = DeviceId::generate();
    let (token, claims) = keys
        .sign_access(&device, now_s(), auth.access_token_ttl_seconds)
        .expect("a token for the loaded settings");
    // The loaded lifetime, or as much of it as i64 time has left.
    let lasts = u64::try_from(claims.exp - claims.iat).expect("a token ends after it starts");
    let room = u64::try_from(i64::MAX - claims.iat).unwrap_or(0);
    if i64::try_from(auth.access_token_ttl_seconds).is_ok() {
        assert_eq!(
            lasts,
            auth.access_token_ttl_seconds.min(room),
            "a token of the loaded lifetime"
        );
    }
    let verified = keys
        .verify_access(&token)
        .expect("the relay's own token verifies");
    assert_eq!(verified.device, device);
}

fuzz_target!(|text: &[u8]| {
    let fixture = &*FIXTURE;
    std::fs::write(&fixture.file, text).expect("writing the config file");
    let overrides = Overrides {
        config: Some(fixture.file.clone()),
        ..Overrides::default()
    };
    match Settings::load(&overrides) {
        Ok(settings) => usable(fixture, &settings),
        Err(e) => assert!(!e.0.is_empty()),
    }
});
