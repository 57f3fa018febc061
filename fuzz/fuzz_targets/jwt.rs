//! Device access tokens: `JwtKeys::verify_access`, what every device request and socket `auth`
//! frame goes through, against a real RS256 key made once per process.
//!
//! The first byte picks how the rest becomes a token:
//!
//! - 0: the bytes are the token. It must never verify (nobody here holds the key).
//! - 1: the bytes are `header JSON \n claims JSON`, signed with the real key as an attacker who
//!   had it would. A token that verifies must have an RS256 header without `crit`, this key's
//!   `kid`, and claims that meet every rule of the module (issuer, audience, times with the
//!   leeway, `typ`, `jti`, a device `sub`).
//! - 2: the bytes are the claims JSON under the header the relay writes, signed: it verifies
//!   exactly when the claims meet those rules.
//! - 3: the bytes edit a token the relay signed itself (`sign_access`): 2 bytes of position, 1 of
//!   operation (replace, insert, delete, truncate), 1 byte of data, repeated. The result verifies
//!   exactly when it is the token unchanged.

#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use serde_json::Value;

use beepmyphone::security::jwt::{
    DeviceClaims, JwtKeys, TokenRejection, LEEWAY_SECONDS, MAX_TOKEN_BYTES,
};
use beepmyphone_actors::model::DeviceId;

const ISSUER: &str = "beepmyphone";
const AUDIENCE: &str = "beepmyphone-devices";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Fixture {
    keys: JwtKeys,
    signer: PKey<Private>,
    /// A token the relay signed, valid for ten years.
    genuine: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let pem = openssl::rsa::Rsa::generate(2048)
        .and_then(|rsa| rsa.private_key_to_pem())
        .expect("an RSA key");
    let keys = JwtKeys::from_private_pem(&pem, ISSUER, AUDIENCE).expect("the key ring");
    let signer = PKey::private_key_from_pem(&pem).expect("the private key");
    let device = DeviceId::generate();
    let now = now_s();
    let (genuine, _) = keys
        .sign_access(&device, now, 10 * 365 * 86_400)
        .expect("a token");
    assert!(
        keys.verify_access(&genuine).is_ok(),
        "the relay's own token"
    );
    Fixture {
        keys,
        signer,
        genuine,
    }
});

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `header.claims.signature` with RS256 over the first two, as jsonwebtoken writes it.
fn sign(fixture: &Fixture, header: &[u8], claims: &[u8]) -> String {
    let message = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let mut signer =
        openssl::sign::Signer::new(MessageDigest::sha256(), &fixture.signer).expect("a signer");
    let signature = signer
        .sign_oneshot_to_vec(message.as_bytes())
        .expect("a signature");
    format!("{message}.{}", B64.encode(signature))
}

/// Whether the claims meet every rule, and how sure that is: `None` when a time is within two
/// seconds of a limit (the clock moves between this check and the relay's).
fn claims_valid(claims: &[u8]) -> Option<bool> {
    let Ok(claims) = serde_json::from_slice::<DeviceClaims>(claims) else {
        return Some(false);
    };
    let now = now_s();
    let leeway = LEEWAY_SECONDS as i64;
    let near = |t: i64, limit: i64| t.abs_diff(limit) <= 2;
    if near(claims.nbf, now.saturating_add(leeway)) || near(claims.exp, now.saturating_sub(leeway))
    {
        return None;
    }
    Some(
        claims.iss == ISSUER
            && claims.aud == AUDIENCE
            && claims.nbf <= now + leeway
            && claims.exp > now - leeway
            && claims.typ == "access"
            && !claims.jti.is_empty()
            && DeviceId::parse(&claims.sub).is_some(),
    )
}

fn header_valid(fixture: &Fixture, header: &[u8]) -> bool {
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(header) else {
        return false;
    };
    header.get("alg").and_then(Value::as_str) == Some("RS256")
        && header.get("crit").is_none_or(Value::is_null)
        && header.get("kid").and_then(Value::as_str) == Some(fixture.keys.kid())
}

fn edit(genuine: &str, edits: &[u8]) -> Vec<u8> {
    let mut token = genuine.as_bytes().to_vec();
    for op in edits.chunks_exact(4) {
        let at = usize::from(u16::from_be_bytes([op[0], op[1]])) % (token.len() + 1);
        match op[2] % 4 {
            0 if at < token.len() => token[at] = op[3],
            1 => token.insert(at, op[3]),
            2 if at < token.len() => {
                token.remove(at);
            }
            3 => token.truncate(at),
            _ => {}
        }
    }
    token
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = &*FIXTURE;
    match mode % 4 {
        0 => {
            let Ok(token) = std::str::from_utf8(rest) else {
                return;
            };
            assert!(
                fixture.keys.verify_access(token).is_err(),
                "an unsigned token verified: {token:?}"
            );
        }
        1 => {
            let (header, claims) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            let token = sign(fixture, header, claims);
            if fixture.keys.verify_access(&token).is_ok() {
                assert!(
                    header_valid(fixture, header),
                    "header {:?}",
                    String::from_utf8_lossy(header)
                );
                assert_ne!(
                    claims_valid(claims),
                    Some(false),
                    "claims {:?}",
                    String::from_utf8_lossy(claims)
                );
            }
        }
        2 => {
            let header =
                serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": fixture.keys.kid()});
            let header = serde_json::to_vec(&header).expect("a header");
            let token = sign(fixture, &header, rest);
            let verified = fixture.keys.verify_access(&token);
            let expected = match token.len() > MAX_TOKEN_BYTES {
                true => Some(false),
                false => claims_valid(rest),
            };
            if let Some(valid) = expected {
                assert_eq!(
                    verified.is_ok(),
                    valid,
                    "claims {:?}: {verified:?}",
                    String::from_utf8_lossy(rest)
                );
            }
            match verified {
                Ok(device) => {
                    let claims: DeviceClaims =
                        serde_json::from_slice(rest).expect("verified claims");
                    assert_eq!(device.device.as_str(), claims.sub);
                    assert_eq!(
                        (device.jti, device.iat, device.exp),
                        (claims.jti, claims.iat, claims.exp)
                    );
                }
                Err(why) => assert!(matches!(
                    why,
                    TokenRejection::Invalid | TokenRejection::Expired
                )),
            }
        }
        _ => {
            let edited = edit(&fixture.genuine, rest);
            let Ok(token) = std::str::from_utf8(&edited) else {
                return;
            };
            assert_eq!(
                fixture.keys.verify_access(token).is_ok(),
                token == fixture.genuine,
                "an edited token: {token:?}"
            );
        }
    }
});
