//! Pairing: `GET /dashboard/pairing` (the form), `POST /dashboard/pairing` (mints a code through
//! the API's `POST /pairing-codes` operation and shows it large, with its QR code, its expiry
//! counting down, and, over the live stream, the device that pairs with it).
//!
//! The QR code is drawn as one SVG path of numbers (no markup from elsewhere); it holds the
//! same `beepmyphone://pair?server=…&code=…[&ca=…]` link as `beepmyphone pairing-code`. The
//! server in it is `server.public_url`, or else the address the dashboard is open at.

use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use qrcode::{Color, QrCode};
use serde::Deserialize;

use crate::api::audited::AuditContext;
use crate::api::routes::pairing::{new_pairing_code_for, pairing_link, PairingCodeResponse};
use crate::api::schemas::PairingCodeRequest;
use crate::dashboard::guard::{Admin, Submitted};
use crate::dashboard::view::{self, Layout};
use crate::state::AppState;

/// The choices of lifetime, seconds and label.
const LIFETIMES: &[(u64, &str)] = &[
    (300, "5 minutes"),
    (600, "10 minutes"),
    (1_800, "30 minutes"),
    (3_600, "1 hour"),
];

/// A QR code as an SVG path.
#[derive(Debug, Clone, PartialEq)]
pub struct Qr {
    /// The side, in modules, with the quiet zone.
    pub size: usize,
    /// One `M x y h1v1h-1z` per dark module.
    pub path: String,
}

/// The QR code of `text` (with a four-module quiet zone).
pub fn qr(text: &str) -> Option<Qr> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let mut path = String::new();
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == Color::Dark {
            let (x, y) = (i % width + 4, i / width + 4);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    Some(Qr {
        size: width + 8,
        path,
    })
}

/// The pairing page.
#[derive(Template)]
#[template(path = "pairing.html", config = "src/dashboard/askama.toml")]
struct PairingPage {
    layout: Layout,
    lifetimes: &'static [(u64, &'static str)],
    minted: Option<Minted>,
}

/// A code just minted.
struct Minted {
    code: PairingCodeResponse,
    server: String,
    pin: Option<String>,
    qr: Option<Qr>,
}

/// `GET /dashboard/pairing`.
pub async fn form(admin: Admin) -> HttpResponse {
    view::ok(&PairingPage {
        layout: Layout::new(&admin, "pairing"),
        lifetimes: LIFETIMES,
        minted: None,
    })
}

/// The form: a lifetime.
#[derive(Deserialize)]
pub struct MintForm {
    #[serde(default)]
    ttl: String,
}

/// The address devices should use: `server.public_url`, or where the dashboard is open.
fn server_url(state: &AppState, req: &HttpRequest) -> String {
    let public = state.settings.server.public_url.trim_end_matches('/');
    if !public.is_empty() {
        return public.to_owned();
    }
    let info = req.connection_info();
    let scheme =
        if crate::api::headers::request_over_tls(req, &crate::api::headers::trusted_proxies(state))
        {
            "https"
        } else {
            info.scheme()
        };
    format!("{scheme}://{}", info.host())
}

/// `POST /dashboard/pairing`.
pub async fn mint(
    state: web::Data<AppState>,
    source: AuditContext,
    req: HttpRequest,
    posted: Submitted<MintForm>,
) -> HttpResponse {
    let Submitted { admin, form } = posted;
    let layout = Layout::new(&admin, "pairing");
    let request = PairingCodeRequest {
        ttl_seconds: form.ttl.parse().ok(),
    };
    match new_pairing_code_for(&state, &admin.principal, &source, request).await {
        Ok(code) => {
            let server = server_url(&state, &req);
            let pin = state
                .tls
                .as_ref()
                .and_then(|tls| tls.status.snapshot().certificate.pin);
            let link = pairing_link(&server, &code.code, pin.as_deref());
            view::ok(&PairingPage {
                layout,
                lifetimes: LIFETIMES,
                minted: Some(Minted {
                    qr: qr(&link),
                    code,
                    server,
                    pin,
                }),
            })
        }
        Err(e) => {
            let (status, flash) = view::failure(&e);
            view::page(
                status,
                &PairingPage {
                    layout: layout.with(Some(flash)),
                    lifetimes: LIFETIMES,
                    minted: None,
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_a_path_of_dark_modules_inside_a_quiet_zone() {
        let qr =
            qr("beepmyphone://pair?server=http%3A%2F%2F127.0.0.1%3A8080&code=K7QF-2M9X").unwrap();
        assert!(qr.size > 25);
        // The finder pattern's corner module is dark, at the quiet zone's edge.
        assert!(qr.path.starts_with("M4 4h1v1h-1z"));
        assert!(qr
            .path
            .chars()
            .all(|c| c.is_ascii_digit() || "Mhvz -".contains(c)));
    }
}
