//! Serving: the TLS policy (Mozilla "intermediate": TLS 1.2 and 1.3 only, forward-secret AEAD
//! suites), the certificate in force behind an `ArcSwap` that every new handshake reads, and the
//! plain-HTTP listener that only redirects to HTTPS.
//!
//! actix-web builds one `SslAcceptor` at start. Its server-name callback, which OpenSSL runs for
//! every ClientHello (with or without SNI), moves the connection onto the context in force, so a
//! renewed certificate is served to new connections at once while open ones keep theirs.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, HttpRequest, HttpResponse, HttpServer};
use arc_swap::ArcSwap;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    AlpnError, SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod, SslVersion,
};
use openssl::x509::X509;

use super::certs::CertError;

/// The context new handshakes use.
#[derive(Clone)]
pub struct Served(Arc<ArcSwap<Option<SslContext>>>);

impl Default for Served {
    fn default() -> Self {
        Self(Arc::new(ArcSwap::from_pointee(None)))
    }
}

/// A builder with the relay's policy and `chain` (leaf first) and `key`.
fn policy(chain: &[X509], key: &PKey<Private>) -> Result<SslAcceptorBuilder, CertError> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    let (leaf, rest) = chain.split_first().ok_or(CertError::Empty)?;
    builder.set_certificate(leaf)?;
    for cert in rest {
        builder.add_extra_chain_cert(cert.clone())?;
    }
    builder.set_private_key(key)?;
    builder.check_private_key()?;
    // HTTP/1.1 only (the relay is built without HTTP/2), as actix-web offers it.
    builder.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x08http/1.1", offered).ok_or(AlpnError::NOACK)
    });
    Ok(builder)
}

impl Served {
    /// Serves `chain` and `key` to every handshake from now on.
    pub fn serve(&self, chain: &[X509], key: &PKey<Private>) -> Result<(), CertError> {
        let context = policy(chain, key)?.build().into_context();
        self.0.store(Arc::new(Some(context)));
        Ok(())
    }

    /// The acceptor for actix-web: the relay's policy, and the switch to the context in force on
    /// every handshake (it holds no certificate of its own: a handshake before anything is
    /// served fails).
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, CertError> {
        // The protocol versions, suites and ticket settings of a connection are this builder's
        // (a switched context brings its certificate, key and ALPN choice): keep them in step
        // with `policy`.
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        // No stateless tickets: their key would live as long as the process; resumption goes
        // through the server's session cache instead.
        builder.set_options(openssl::ssl::SslOptions::NO_TICKET);
        let served = self.0.clone();
        builder.set_servername_callback(move |ssl, _alert| match served.load().as_ref() {
            Some(context) => ssl
                .set_ssl_context(context)
                .map_err(|_| SniError::ALERT_FATAL),
            None => Err(SniError::ALERT_FATAL),
        });
        Ok(builder)
    }
}

/// The plain-HTTP listener of `tls.redirect_http_listen`: every request gets `308` to the same
/// path and query on HTTPS, at `public_url` when set, else at the request's host name on the
/// HTTPS port. Nothing else is served there.
pub fn redirect_listener(
    listener: TcpListener,
    public_url: Option<String>,
    https_port: u16,
) -> std::io::Result<Server> {
    let target = web::Data::new(Target {
        public_url,
        https_port,
    });
    Ok(HttpServer::new(move || {
        actix_web::App::new()
            .app_data(target.clone())
            .default_service(web::to(redirect))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

struct Target {
    public_url: Option<String>,
    https_port: u16,
}

async fn redirect(req: HttpRequest, target: web::Data<Target>) -> HttpResponse {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let base = match &target.public_url {
        Some(url) => url.clone(),
        None => {
            // The Host header itself (not X-Forwarded-Host: nothing proxies to this listener).
            let host = host_only(
                req.headers()
                    .get(actix_web::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default(),
            );
            let port = match target.https_port {
                443 => String::new(),
                port => format!(":{port}"),
            };
            format!("https://{host}{port}")
        }
    };
    HttpResponse::PermanentRedirect()
        .insert_header(("location", format!("{base}{path}")))
        .insert_header(("cache-control", "no-store"))
        .finish()
}

/// The host of a `Host` header without its port; anything but a host name or address becomes
/// `localhost`, so the redirect never carries what a client smuggled in.
fn host_only(host: &str) -> String {
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().map(|h| format!("[{h}]")),
        None => host.split(':').next().map(str::to_owned),
    }
    .unwrap_or_default();
    let fine = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if fine {
        host.to_ascii_lowercase()
    } else {
        "localhost".into()
    }
}

#[cfg(test)]
mod tests {
    use super::host_only;

    #[test]
    fn the_redirect_host_keeps_only_a_host_name() {
        assert_eq!(host_only("Relay.LAN:8080"), "relay.lan");
        assert_eq!(host_only("[::1]:80"), "[::1]");
        assert_eq!(host_only("192.168.1.5"), "192.168.1.5");
        assert_eq!(host_only("evil.example/@x"), "localhost");
        assert_eq!(host_only(""), "localhost");
    }
}
