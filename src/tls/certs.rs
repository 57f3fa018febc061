//! Certificate generation and validation for the relay's TLS listener.
//!
//! All times are unix seconds supplied by the caller; nothing here reads the
//! system clock.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509NameRef, X509Ref, X509};

/// Seconds in a day.
const DAY: i64 = 86_400;
/// How far back the not-before time is set, to tolerate clock skew.
const BACKDATE: i64 = 3_600;
/// The longest common name X.509 allows (ub-common-name).
const MAX_CN: usize = 64;
/// The organisation put in CA subjects.
const CA_ORG: &str = "BeepMyPhone";

/// What kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (prime256v1).
    EcdsaP256,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lowercased; may start with a `*.` wildcard label.
    Dns(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

impl Host {
    /// Parses a host as configured: an IP literal (IPv6 optionally in brackets) or a DNS name.
    pub fn parse(s: &str) -> Result<Host, CertError> {
        let t = s.trim();
        let bad = || CertError::BadHost(s.to_string());
        if let Some(inner) = t.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            return match inner.parse::<IpAddr>() {
                Ok(ip @ IpAddr::V6(_)) => Ok(Host::Ip(ip)),
                _ => Err(bad()),
            };
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = t.to_ascii_lowercase();
        if valid_dns_name(&name) {
            Ok(Host::Dns(name))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Whether `name` (already lowercased) is a DNS name, optionally with a leading `*.`.
fn valid_dns_name(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = rest.split('.').collect();
    let labels_ok = labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    // An all-numeric last label would look like a malformed IP address.
    let last_numeric = labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

/// Errors from generating, reading, checking or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The leaf's not-after time is before `now`.
    #[error("the certificate expired at {not_after} (unix seconds)")]
    Expired {
        /// The leaf's not-after time.
        not_after: i64,
    },
    /// The leaf's not-before time is after `now`.
    #[error("the certificate is not valid before {not_before} (unix seconds)")]
    NotYetValid {
        /// The leaf's not-before time.
        not_before: i64,
    },
    /// The private key is not the one the certificate was issued for.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// A configured host is not covered by any SAN of the leaf.
    #[error("the certificate does not cover the host name {0}")]
    MissingHost(String),
    /// The key is too weak or of an unsupported kind.
    #[error(
        "weak or unsupported key: {0} (use RSA of 2048 bits or more, or ECDSA P-256 or P-384)"
    )]
    WeakKey(String),
    /// A host name that is neither an IP literal nor a valid DNS name.
    #[error("invalid host name {0:?}")]
    BadHost(String),
    /// The PEM data (or chain) holds no certificate.
    #[error("no certificate in the PEM data")]
    Empty,
    /// Certificate `index` in the chain is not signed by certificate `index + 1`.
    #[error("the chain is broken: certificate {index} is not signed by the next")]
    BrokenChain {
        /// Position of the certificate whose signature did not verify.
        index: usize,
    },
    /// An error reported by OpenSSL.
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
    /// An I/O error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Generates a new private key of the given kind.
pub fn generate_key(kind: KeyType) -> Result<PKey<Private>, CertError> {
    let key = match kind {
        KeyType::EcdsaP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?)?,
    };
    Ok(key)
}

/// A random positive 127-bit serial number.
fn random_serial() -> Result<BigNum, ErrorStack> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)?;
    bytes[0] &= 0x7f;
    if bytes.iter().all(|b| *b == 0) {
        bytes[15] = 1;
    }
    BigNum::from_slice(&bytes)
}

/// A name with the given CN (omitted when too long for X.509) and optional O.
fn make_name(cn: &str, org: Option<&str>) -> Result<X509Name, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    if !cn.is_empty() && cn.len() <= MAX_CN {
        name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    }
    if let Some(org) = org {
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, org)?;
    }
    Ok(name.build())
}

/// A builder with version 3, serial, validity `[now - 1h, now + days]`, subject and public key set.
fn base_builder(
    key: &PKeyRef<Private>,
    subject: &X509NameRef,
    now: i64,
    days: u32,
) -> Result<X509Builder, CertError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    let not_before = Asn1Time::from_unix(now.saturating_sub(BACKDATE))?;
    let not_after = Asn1Time::from_unix(now.saturating_add(i64::from(days) * DAY))?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.set_subject_name(subject)?;
    b.set_pubkey(key)?;
    Ok(b)
}

/// The CN text for a server certificate: the first host; `hosts` must not be empty.
fn first_host(hosts: &[Host]) -> Result<String, CertError> {
    hosts
        .first()
        .map(Host::to_string)
        .ok_or_else(|| CertError::BadHost(String::new()))
}

/// Appends the extensions of a TLS server certificate (SAN, SKI, usages).
fn add_server_extensions(
    b: &mut X509Builder,
    issuer: Option<&X509Ref>,
    key: &PKeyRef<Private>,
    hosts: &[Host],
) -> Result<(), CertError> {
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if key.id() == Id::RSA {
        ku.key_encipherment();
    }
    b.append_extension(ku.build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let mut san = SubjectAlternativeName::new();
    for host in hosts {
        match host {
            Host::Dns(name) => san.dns(name),
            Host::Ip(ip) => san.ip(&ip.to_string()),
        };
    }
    let san = san.build(&b.x509v3_context(issuer, None))?;
    b.append_extension(san)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer, None))?;
    b.append_extension(ski)?;
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(issuer, None))?;
        b.append_extension(aki)?;
    }
    Ok(())
}

/// A self-signed server certificate for `hosts` (first host is the CN; SANs = all hosts), valid from `now - 3600` for `days`.
pub fn self_signed(
    key: &PKey<Private>,
    hosts: &[Host],
    now: i64,
    days: u32,
) -> Result<X509, CertError> {
    let name = make_name(&first_host(hosts)?, None)?;
    let mut b = base_builder(key, &name, now, days)?;
    b.set_issuer_name(&name)?;
    add_server_extensions(&mut b, None, key, hosts)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A root CA: CN = `name`, basicConstraints critical CA:TRUE pathlen:0, keyUsage critical keyCertSign+cRLSign, SKI.
pub fn new_ca(key: &PKey<Private>, name: &str, now: i64, days: u32) -> Result<X509, CertError> {
    let subject = make_name(name, Some(CA_ORG))?;
    let mut b = base_builder(key, &subject, now, days)?;
    b.set_issuer_name(&subject)?;
    add_ca_extensions(&mut b)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// basicConstraints critical CA:TRUE pathlen:0, keyUsage critical keyCertSign+cRLSign, SKI.
fn add_ca_extensions(b: &mut X509Builder) -> Result<(), CertError> {
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    Ok(())
}

/// DNS suffixes a local CA may always vouch for: names that only resolve on a local network.
const LOCAL_DNS: [&str; 5] = ["localhost", "local", "lan", "home.arpa", "internal"];
/// Address ranges a local CA may always vouch for (address/mask): loopback, private, link-local
/// and shared (CGNAT, Tailscale) ranges.
const LOCAL_IPS: [&str; 9] = [
    "127.0.0.0/255.0.0.0",
    "10.0.0.0/255.0.0.0",
    "172.16.0.0/255.240.0.0",
    "192.168.0.0/255.255.0.0",
    "169.254.0.0/255.255.0.0",
    "100.64.0.0/255.192.0.0",
    "::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fc00::/fe00::",
    "fe80::/ffc0::",
];

/// A root CA for the relay's own server certificates: [`new_ca`], restricted by critical name
/// constraints to `hosts` and to local names and addresses ([`LOCAL_DNS`], [`LOCAL_IPS`]), and
/// by its extended key usage to TLS servers. A device that installs it trusts it for nothing
/// else, even if its key leaks.
pub fn new_local_ca(
    key: &PKey<Private>,
    name: &str,
    now: i64,
    days: u32,
    hosts: &[Host],
) -> Result<X509, CertError> {
    let mut permitted: Vec<String> = LOCAL_DNS.iter().map(|d| format!("DNS:{d}")).collect();
    permitted.extend(LOCAL_IPS.iter().map(|ip| format!("IP:{ip}")));
    for host in hosts {
        let entry = match host {
            Host::Dns(dns) => format!("DNS:{}", dns.trim_start_matches("*.")),
            Host::Ip(std::net::IpAddr::V4(ip)) => format!("IP:{ip}/255.255.255.255"),
            Host::Ip(std::net::IpAddr::V6(ip)) => {
                format!("IP:{ip}/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
            }
        };
        if !permitted.contains(&entry) {
            permitted.push(entry);
        }
    }
    let constraints = format!(
        "critical,{}",
        permitted
            .iter()
            .map(|p| format!("permitted;{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let subject = make_name(name, Some(CA_ORG))?;
    let mut b = base_builder(key, &subject, now, days)?;
    b.set_issuer_name(&subject)?;
    add_ca_extensions(&mut b)?;
    // rust-openssl has no builder for name constraints: OpenSSL's own configuration syntax.
    #[allow(deprecated)]
    let extension = openssl::x509::X509Extension::new_nid(
        None,
        Some(&b.x509v3_context(None, None)),
        Nid::NAME_CONSTRAINTS,
        &constraints,
    )?;
    b.append_extension(extension)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// Checks that `leaf` verifies as a TLS server certificate under `ca` alone at `now` (its
/// signature, dates, the CA's name constraints and key usages); the OpenSSL reason otherwise.
pub fn verify_issued(ca: &X509, leaf: &X509, now: i64) -> Result<(), String> {
    let run = || -> Result<Result<(), String>, ErrorStack> {
        let mut store = openssl::x509::store::X509StoreBuilder::new()?;
        store.add_cert(ca.clone())?;
        let mut param = openssl::x509::verify::X509VerifyParam::new()?;
        param.set_time(now);
        param.set_purpose(openssl::x509::X509PurposeId::SSL_SERVER)?;
        store.set_param(&param)?;
        let store = store.build();
        let chain = openssl::stack::Stack::new()?;
        let mut context = openssl::x509::X509StoreContext::new()?;
        context.init(&store, leaf, &chain, |c| {
            Ok(if c.verify_cert()? {
                Ok(())
            } else {
                Err(c.error().error_string().to_owned())
            })
        })
    };
    run().map_err(|e| e.to_string())?
}

/// A server certificate issued by the CA: basicConstraints CA:FALSE, keyUsage critical digitalSignature (+keyEncipherment for RSA keys), extendedKeyUsage serverAuth, SANs, SKI and AKI; issuer = CA subject; signed SHA-256.
pub fn issue(
    ca: &X509,
    ca_key: &PKey<Private>,
    key: &PKey<Private>,
    hosts: &[Host],
    now: i64,
    days: u32,
) -> Result<X509, CertError> {
    if !ca.public_key()?.public_eq(ca_key) {
        return Err(CertError::KeyMismatch);
    }
    let name = make_name(&first_host(hosts)?, None)?;
    let mut b = base_builder(key, &name, now, days)?;
    b.set_issuer_name(ca.subject_name())?;
    add_server_extensions(&mut b, Some(ca), key, hosts)?;
    b.sign(ca_key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// "sha256:" + lowercase hex (64 chars, no colons) of the DER; just "sha256:" if OpenSSL cannot hash it.
pub fn fingerprint(cert: &X509) -> String {
    let mut out = String::from("sha256:");
    if let Ok(digest) = cert.digest(MessageDigest::sha256()) {
        for b in digest.iter() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// Parses a fingerprint as users type it (optional "sha256:" prefix, optional ':' separators, any case) into the canonical form; None when not 32 bytes of hex.
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let t = s.trim();
    let body = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
        _ => t,
    };
    let hex: String = if body.contains(':') {
        let groups: Vec<&str> = body.split(':').collect();
        if groups.iter().any(|g| g.len() != 2) {
            return None;
        }
        groups.concat()
    } else {
        body.to_string()
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Seconds since the epoch of an ASN.1 time.
fn unix_of(t: &Asn1TimeRef) -> Result<i64, CertError> {
    let epoch = Asn1Time::from_unix(0)?;
    let d = epoch.diff(t)?;
    Ok(i64::from(d.days) * DAY + i64::from(d.secs))
}

/// Not-before / not-after as unix seconds.
pub fn validity(cert: &X509Ref) -> Result<(i64, i64), CertError> {
    Ok((unix_of(cert.not_before())?, unix_of(cert.not_after())?))
}

/// The SANs of a certificate as Hosts (DNS and IP entries).
pub fn hosts_of(cert: &X509Ref) -> Vec<Host> {
    let Some(names) = cert.subject_alt_names() else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|gn| {
            if let Some(dns) = gn.dnsname() {
                return Some(Host::Dns(dns.to_ascii_lowercase()));
            }
            match gn.ipaddress()? {
                b if b.len() == 4 => {
                    let a: [u8; 4] = b.try_into().ok()?;
                    Some(Host::Ip(IpAddr::from(a)))
                }
                b if b.len() == 16 => {
                    let a: [u8; 16] = b.try_into().ok()?;
                    Some(Host::Ip(IpAddr::from(a)))
                }
                _ => None,
            }
        })
        .collect()
}

/// What `validate` found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The leaf's not-before time, unix seconds.
    pub not_before: i64,
    /// The leaf's not-after time, unix seconds.
    pub not_after: i64,
    /// The leaf's SANs as text.
    pub hosts: Vec<String>,
    /// The leaf's fingerprint, as `fingerprint` gives it.
    pub fingerprint: String,
    /// The leaf's subject, e.g. "CN=relay.lan".
    pub subject: String,
    /// The leaf's issuer, e.g. "CN=Relay CA, O=BeepMyPhone".
    pub issuer: String,
    /// The key, e.g. "ECDSA P-256" or "RSA 3072".
    pub key: String,
}

/// A name as "CN=x, O=y" in its stored order.
fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let field = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| String::from("?"));
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Describes an accepted key, or refuses it as weak or unsupported.
fn describe_key(key: &PKeyRef<Private>) -> Result<String, CertError> {
    match key.id() {
        Id::RSA => {
            let bits = key.bits();
            if bits >= 2048 {
                Ok(format!("RSA {bits}"))
            } else {
                Err(CertError::WeakKey(format!("RSA {bits}")))
            }
        }
        Id::EC => {
            let curve = key.ec_key()?.group().curve_name();
            match curve {
                Some(Nid::X9_62_PRIME256V1) => Ok("ECDSA P-256".to_string()),
                Some(Nid::SECP384R1) => Ok("ECDSA P-384".to_string()),
                Some(nid) => Err(CertError::WeakKey(format!(
                    "ECDSA {}",
                    nid.short_name().unwrap_or("unknown curve")
                ))),
                None => Err(CertError::WeakKey("ECDSA on explicit parameters".into())),
            }
        }
        other => {
            let nid = Nid::from_raw(other.as_raw());
            Err(CertError::WeakKey(
                nid.short_name().unwrap_or("unknown key type").to_string(),
            ))
        }
    }
}

/// Whether a SAN covers a configured host.
fn covers(san: &Host, want: &Host) -> bool {
    match (san, want) {
        (Host::Ip(a), Host::Ip(b)) => a == b,
        (Host::Dns(san), Host::Dns(want)) => {
            if san.eq_ignore_ascii_case(want) {
                return true;
            }
            if want.starts_with("*.") {
                return false;
            }
            let Some(suffix) = san.strip_prefix("*.") else {
                return false;
            };
            match want.split_once('.') {
                Some((label, rest)) => {
                    !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)
                }
                None => false,
            }
        }
        _ => false,
    }
}

/// Checks a leaf-first chain and its key before it is served: validity at `now`, key match, key strength, host coverage and chain signatures.
pub fn validate(
    chain: &[X509],
    key: &PKey<Private>,
    hosts: &[Host],
    now: i64,
) -> Result<Checked, CertError> {
    let leaf = chain.first().ok_or(CertError::Empty)?;
    let (not_before, not_after) = validity(leaf)?;
    if now > not_after {
        return Err(CertError::Expired { not_after });
    }
    if now < not_before {
        return Err(CertError::NotYetValid { not_before });
    }
    if !leaf.public_key()?.public_eq(key) {
        return Err(CertError::KeyMismatch);
    }
    let key_desc = describe_key(key)?;
    let sans = hosts_of(leaf);
    for want in hosts {
        if !sans.iter().any(|san| covers(san, want)) {
            return Err(CertError::MissingHost(want.to_string()));
        }
    }
    for (index, pair) in chain.windows(2).enumerate() {
        let signer = pair[1].public_key()?;
        if !matches!(pair[0].verify(&signer), Ok(true)) {
            return Err(CertError::BrokenChain { index });
        }
    }
    Ok(Checked {
        not_before,
        not_after,
        hosts: sans.iter().map(Host::to_string).collect(),
        fingerprint: fingerprint(leaf),
        subject: name_text(leaf.subject_name()),
        issuer: name_text(leaf.issuer_name()),
        key: key_desc,
    })
}

/// Reads every certificate in PEM data, leaf first; none -> Empty.
pub fn read_chain(pem: &[u8]) -> Result<Vec<X509>, CertError> {
    let chain = X509::stack_from_pem(pem)?;
    if chain.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(chain)
}

/// Reads a private key from PEM (PKCS#8 or traditional).
pub fn read_key(pem: &[u8]) -> Result<PKey<Private>, CertError> {
    Ok(PKey::private_key_from_pem(pem)?)
}

/// The key as unencrypted PKCS#8 PEM.
pub fn key_pem(key: &PKey<Private>) -> Result<Vec<u8>, CertError> {
    Ok(key.private_key_to_pem_pkcs8()?)
}

/// The chain as concatenated PEM certificates; an empty chain -> Empty.
pub fn chain_pem(chain: &[X509]) -> Result<Vec<u8>, CertError> {
    if chain.is_empty() {
        return Err(CertError::Empty);
    }
    let mut out = Vec::new();
    for cert in chain {
        out.extend_from_slice(&cert.to_pem()?);
    }
    Ok(out)
}

/// An Io error for `path`.
fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` atomically: a temp file in the same directory created with mode `mode` (0o600 for keys, 0o644 for certs), write, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| CertError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        })?
        .to_string_lossy()
        .into_owned();
    let mut tag = [0u8; 8];
    openssl::rand::rand_bytes(&mut tag)?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{file_name}.{tag}.tmp"));

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyParam;
    use openssl::x509::{X509ExtendedKeyUsage, X509KeyUsage, X509StoreContext};

    const NOW: i64 = 1_700_000_000;

    fn h(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    fn ec() -> PKey<Private> {
        generate_key(KeyType::EcdsaP256).unwrap()
    }

    fn ec_on(nid: Nid) -> PKey<Private> {
        let group = EcGroup::from_curve_name(nid).unwrap();
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
    }

    #[test]
    fn generates_both_key_types() {
        let e = ec();
        assert_eq!(e.id(), Id::EC);
        assert_eq!(
            e.ec_key().unwrap().group().curve_name(),
            Some(Nid::X9_62_PRIME256V1)
        );
        let r = generate_key(KeyType::Rsa2048).unwrap();
        assert_eq!(r.id(), Id::RSA);
        assert_eq!(r.bits(), 2048);
        assert!(!e.public_eq(&ec()), "two generated keys must differ");
    }

    #[test]
    fn self_signed_validity_window() {
        let key = ec();
        let hosts = [h("relay.lan"), h("192.168.1.5"), h("[::1]")];
        let cert = self_signed(&key, &hosts, NOW, 30).unwrap();
        let (nb, na) = validity(&cert).unwrap();
        assert_eq!(nb, NOW - 3600);
        assert_eq!(na, NOW + 30 * 86_400);

        let c = validate(std::slice::from_ref(&cert), &key, &hosts, NOW).unwrap();
        assert_eq!(c.not_before, nb);
        assert_eq!(c.not_after, na);
        assert_eq!(c.subject, "CN=relay.lan");
        assert_eq!(c.issuer, "CN=relay.lan");
        assert_eq!(c.key, "ECDSA P-256");
        assert_eq!(c.hosts, vec!["relay.lan", "192.168.1.5", "::1"]);
        assert_eq!(c.fingerprint, fingerprint(&cert));
        assert_eq!(hosts_of(&cert), hosts.to_vec());
        assert!(cert.verify(&key).unwrap(), "self-signature");

        // Last valid second, then expired.
        validate(std::slice::from_ref(&cert), &key, &hosts, na).unwrap();
        match validate(std::slice::from_ref(&cert), &key, &hosts, na + 1) {
            Err(CertError::Expired { not_after }) => assert_eq!(not_after, na),
            other => panic!("expected Expired, got {other:?}"),
        }
        match validate(&[cert], &key, &hosts, nb - 1) {
            Err(CertError::NotYetValid { not_before }) => assert_eq!(not_before, nb),
            other => panic!("expected NotYetValid, got {other:?}"),
        }
    }

    #[test]
    fn ca_issued_leaf_validates_and_verifies() {
        let ca_key = ec();
        let ca = new_ca(&ca_key, "Relay CA", NOW, 3650).unwrap();
        let key = generate_key(KeyType::Rsa2048).unwrap();
        let hosts = [h("relay.lan"), h("10.0.0.7")];
        let leaf = issue(&ca, &ca_key, &key, &hosts, NOW, 90).unwrap();

        let chain = [leaf.clone(), ca.clone()];
        let c = validate(&chain, &key, &hosts, NOW).unwrap();
        assert_eq!(c.key, "RSA 2048");
        assert_eq!(c.subject, "CN=relay.lan");
        assert_eq!(c.issuer, "CN=Relay CA, O=BeepMyPhone");

        // Extensions of the leaf.
        let text = String::from_utf8(leaf.to_text().unwrap()).unwrap();
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
        assert_eq!(
            leaf.extended_key_usage(),
            Some(X509ExtendedKeyUsage::SSL_SERVER)
        );
        assert_eq!(
            leaf.key_usage(),
            Some(X509KeyUsage::DIGITAL_SIGNATURE | X509KeyUsage::KEY_ENCIPHERMENT)
        );
        assert_eq!(
            leaf.issuer_name().to_der().unwrap(),
            ca.subject_name().to_der().unwrap()
        );
        assert_eq!(
            leaf.signature_algorithm().object().nid(),
            Nid::ECDSA_WITH_SHA256
        );
        // Extensions of the CA.
        assert_eq!(ca.pathlen(), Some(0));
        assert_eq!(
            ca.key_usage(),
            Some(X509KeyUsage::KEY_CERT_SIGN | X509KeyUsage::CRL_SIGN)
        );
        let ca_text = String::from_utf8(ca.to_text().unwrap()).unwrap();
        assert!(ca_text.contains("CA:TRUE, pathlen:0"), "{ca_text}");

        // An EC leaf gets digitalSignature only.
        let ec_key = ec();
        let ec_leaf = issue(&ca, &ca_key, &ec_key, &hosts, NOW, 90).unwrap();
        assert_eq!(ec_leaf.key_usage(), Some(X509KeyUsage::DIGITAL_SIGNATURE));

        // OpenSSL's own verification, trusting only the CA, as a TLS server, at NOW.
        let verify = |trusted: Option<&X509>, host: &str| -> bool {
            let mut sb = X509StoreBuilder::new().unwrap();
            if let Some(t) = trusted {
                sb.add_cert(t.clone()).unwrap();
            }
            let mut param = X509VerifyParam::new().unwrap();
            param.set_time(NOW);
            param.set_host(host).unwrap();
            sb.set_param(&param).unwrap();
            sb.set_purpose(openssl::x509::X509PurposeId::SSL_SERVER)
                .unwrap();
            let store = sb.build();
            let untrusted = Stack::new().unwrap();
            let mut ctx = X509StoreContext::new().unwrap();
            ctx.init(&store, &leaf, &untrusted, |c| c.verify_cert())
                .unwrap()
        };
        assert!(verify(Some(&ca), "relay.lan"));
        assert!(!verify(Some(&ca), "other.lan"), "host check must apply");
        assert!(!verify(None, "relay.lan"), "untrusted CA must fail");

        // issue refuses a CA key that is not the CA's.
        assert!(matches!(
            issue(&ca, &ec(), &key, &hosts, NOW, 90),
            Err(CertError::KeyMismatch)
        ));
    }

    #[test]
    fn key_mismatch() {
        let key = ec();
        let cert = self_signed(&key, &[h("relay.lan")], NOW, 30).unwrap();
        assert!(matches!(
            validate(&[cert], &ec(), &[h("relay.lan")], NOW),
            Err(CertError::KeyMismatch)
        ));
    }

    #[test]
    fn missing_hosts() {
        let key = ec();
        let cert = self_signed(&key, &[h("relay.lan"), h("10.0.0.1")], NOW, 30).unwrap();
        let chain = [cert];
        match validate(&chain, &key, &[h("relay.lan"), h("other.lan")], NOW) {
            Err(CertError::MissingHost(hn)) => assert_eq!(hn, "other.lan"),
            other => panic!("expected MissingHost, got {other:?}"),
        }
        match validate(&chain, &key, &[h("10.0.0.2")], NOW) {
            Err(CertError::MissingHost(hn)) => assert_eq!(hn, "10.0.0.2"),
            other => panic!("expected MissingHost, got {other:?}"),
        }
        // Every configured host covered, DNS case-insensitively.
        assert!(validate(&chain, &key, &[h("10.0.0.1"), h("RELAY.lan")], NOW).is_ok());
    }

    #[test]
    fn wildcard_semantics() {
        let key = ec();
        let cert = self_signed(&key, &[h("*.example.com")], NOW, 30).unwrap();
        let chain = [cert];
        let ok = |s: &str| validate(&chain, &key, &[h(s)], NOW).is_ok();
        assert!(ok("a.example.com"));
        assert!(ok("A.Example.COM"));
        assert!(ok("*.example.com"));
        assert!(!ok("a.b.example.com"));
        assert!(!ok("example.com"));
        assert!(!ok("a.example.org"));

        // A configured wildcard needs the same wildcard SAN.
        let plain = self_signed(&key, &[h("a.example.com")], NOW, 30).unwrap();
        assert!(matches!(
            validate(&[plain], &key, &[h("*.example.com")], NOW),
            Err(CertError::MissingHost(_))
        ));
    }

    #[test]
    fn weak_keys_refused() {
        let rsa1024 = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        for (key, what) in [
            (rsa1024, "RSA 1024"),
            (ec_on(Nid::SECP256K1), "secp256k1"),
            (ec_on(Nid::SECP521R1), "secp521r1"),
        ] {
            let cert = self_signed(&key, &[h("relay.lan")], NOW, 30).unwrap();
            match validate(&[cert], &key, &[h("relay.lan")], NOW) {
                Err(CertError::WeakKey(d)) => assert!(d.contains(what), "{d}"),
                other => panic!("expected WeakKey for {what}, got {other:?}"),
            }
        }
        let p384 = ec_on(Nid::SECP384R1);
        let cert = self_signed(&p384, &[h("relay.lan")], NOW, 30).unwrap();
        let c = validate(&[cert], &p384, &[], NOW).unwrap();
        assert_eq!(c.key, "ECDSA P-384");
    }

    #[test]
    fn broken_chain() {
        let ca_key = ec();
        let ca = new_ca(&ca_key, "Relay CA", NOW, 365).unwrap();
        let other_key = ec();
        let other = new_ca(&other_key, "Relay CA", NOW, 365).unwrap();
        let key = ec();
        let leaf = issue(&ca, &ca_key, &key, &[h("relay.lan")], NOW, 30).unwrap();
        match validate(&[leaf.clone(), other.clone()], &key, &[], NOW) {
            Err(CertError::BrokenChain { index }) => assert_eq!(index, 0),
            other => panic!("expected BrokenChain, got {other:?}"),
        }
        match validate(&[leaf.clone(), ca.clone(), other], &key, &[], NOW) {
            Err(CertError::BrokenChain { index }) => assert_eq!(index, 1),
            other => panic!("expected BrokenChain at 1, got {other:?}"),
        }
        // An RSA "issuer" for an EC-signed cert is broken too, not an error.
        let rsa = generate_key(KeyType::Rsa2048).unwrap();
        let rsa_ca = new_ca(&rsa, "RSA CA", NOW, 365).unwrap();
        assert!(matches!(
            validate(&[leaf, rsa_ca], &key, &[], NOW),
            Err(CertError::BrokenChain { index: 0 })
        ));
        assert!(matches!(
            validate(&[], &key, &[], NOW),
            Err(CertError::Empty)
        ));
    }

    #[test]
    fn fingerprints() {
        let key = ec();
        let cert = self_signed(&key, &[h("relay.lan")], NOW, 30).unwrap();
        let fp = fingerprint(&cert);
        assert_eq!(fp, fingerprint(&cert));
        assert!(fp.starts_with("sha256:"));
        assert_eq!(fp.len(), 7 + 64);
        assert!(fp[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let again = read_chain(&chain_pem(std::slice::from_ref(&cert)).unwrap()).unwrap();
        assert_eq!(fingerprint(&again[0]), fp);
        let other = self_signed(&key, &[h("relay.lan")], NOW, 30).unwrap();
        assert_ne!(
            fingerprint(&other),
            fp,
            "random serials give distinct certs"
        );

        let hex = &fp[7..];
        let upper_colons = hex
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&fp), Some(fp.clone()));
        assert_eq!(parse_fingerprint(hex), Some(fp.clone()));
        assert_eq!(
            parse_fingerprint(&format!("SHA256:{upper_colons}")),
            Some(fp.clone())
        );
        assert_eq!(
            parse_fingerprint(&format!("  {upper_colons} ")),
            Some(fp.clone())
        );
        assert_eq!(parse_fingerprint(&hex[..62]), None, "31 bytes");
        assert_eq!(
            parse_fingerprint(&upper_colons[..upper_colons.len() - 3]),
            None
        );
        assert_eq!(parse_fingerprint(&format!("{hex}00")), None, "33 bytes");
        assert_eq!(parse_fingerprint(&format!("{}zz", &hex[..62])), None);
        assert_eq!(parse_fingerprint(""), None);
    }

    #[test]
    fn write_atomic_mode_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"first", 0o600).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let cert_path = dir.path().join("cert.pem");
        write_atomic(&cert_path, b"cert", 0o644).unwrap();
        assert_eq!(
            fs::metadata(&cert_path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let entries = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 2, "no temp files left behind");
        assert!(matches!(
            write_atomic(&dir.path().join("missing/x.pem"), b"x", 0o600),
            Err(CertError::Io { .. })
        ));
    }

    #[test]
    fn pem_round_trips() {
        assert!(matches!(read_chain(b""), Err(CertError::Empty)));
        assert!(matches!(read_chain(b"not pem"), Err(CertError::Empty)));
        assert!(matches!(chain_pem(&[]), Err(CertError::Empty)));
        let ca_key = ec();
        let ca = new_ca(&ca_key, "Relay CA", NOW, 365).unwrap();
        let key = generate_key(KeyType::Rsa2048).unwrap();
        let leaf = issue(&ca, &ca_key, &key, &[h("relay.lan")], NOW, 30).unwrap();
        let pem = chain_pem(&[leaf.clone(), ca.clone()]).unwrap();
        let back = read_chain(&pem).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].to_der().unwrap(), leaf.to_der().unwrap());
        assert_eq!(back[1].to_der().unwrap(), ca.to_der().unwrap());
        let kp = key_pem(&key).unwrap();
        assert!(kp.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let key2 = read_key(&kp).unwrap();
        assert!(key2.public_eq(&key));
        assert!(validate(&back, &key2, &[h("relay.lan")], NOW).is_ok());
        assert!(matches!(read_key(b"garbage"), Err(CertError::Openssl(_))));
    }

    #[test]
    fn host_parse() {
        assert_eq!(h("[::1]"), Host::Ip("::1".parse().unwrap()));
        assert_eq!(h("::1"), Host::Ip("::1".parse().unwrap()));
        assert_eq!(h(" 10.1.2.3 "), Host::Ip("10.1.2.3".parse().unwrap()));
        assert_eq!(h("Relay.LAN"), Host::Dns("relay.lan".into()));
        assert_eq!(h("*.Example.com"), Host::Dns("*.example.com".into()));
        assert_eq!(h("localhost"), Host::Dns("localhost".into()));
        assert_eq!(h("my-relay.lan").to_string(), "my-relay.lan");
        assert_eq!(h("[::1]").to_string(), "::1");
        for bad in [
            "bad host",
            "",
            "  ",
            "*",
            "*.",
            "a..b",
            ".a",
            "a.",
            "-a.lan",
            "a-.lan",
            "a.*.b",
            "**.b",
            "[10.0.0.1]",
            "[::1",
            "fe80::1%eth0",
            "relay_1.lan",
            "héllo.lan",
            "1.2.3",
            "999.1.1.1",
        ] {
            match Host::parse(bad) {
                Err(CertError::BadHost(s)) => assert_eq!(s, bad),
                other => panic!("{bad:?} should be BadHost, got {other:?}"),
            }
        }
        assert!(matches!(
            self_signed(&ec(), &[], NOW, 1),
            Err(CertError::BadHost(_))
        ));
    }

    #[test]
    fn long_names_are_san_only() {
        let long = format!("{}.lan", "a".repeat(63));
        let key = ec();
        let cert = self_signed(&key, &[h(&long)], NOW, 1).unwrap();
        let c = validate(&[cert], &key, &[h(&long)], NOW).unwrap();
        assert_eq!(c.subject, "");
        assert_eq!(c.hosts, vec![long]);
    }

    #[test]
    fn a_local_ca_vouches_only_for_local_names_and_its_hosts() {
        let now = 1_800_000_000;
        let ca_key = generate_key(KeyType::EcdsaP256).unwrap();
        let hosts = [
            Host::parse("relay.example.org").unwrap(),
            Host::parse("203.0.113.7").unwrap(),
        ];
        let ca = new_local_ca(&ca_key, "Local CA", now, 3_650, &hosts).unwrap();
        let leaf_for = |names: &[&str]| {
            let key = generate_key(KeyType::EcdsaP256).unwrap();
            let hosts: Vec<Host> = names.iter().map(|n| Host::parse(n).unwrap()).collect();
            issue(&ca, &ca_key, &key, &hosts, now, 90).unwrap()
        };
        for fine in [
            &["localhost", "127.0.0.1", "::1"][..],
            &["relay.example.org", "203.0.113.7"],
            &["phone.lan", "192.168.1.5", "10.0.0.2", "fd00::5"],
            &["nas.home.arpa", "printer.local", "a.relay.example.org"],
        ] {
            let leaf = leaf_for(fine);
            assert_eq!(verify_issued(&ca, &leaf, now), Ok(()), "{fine:?}");
        }
        for outside in [
            &["bank.example.com"][..],
            &["8.8.8.8"],
            &["relay.lan", "2001:db8::1"],
        ] {
            let leaf = leaf_for(outside);
            let error = verify_issued(&ca, &leaf, now).unwrap_err();
            assert!(
                error.contains("name constraint") || error.contains("subtree"),
                "{outside:?}: {error}"
            );
        }
        // Dates still count.
        let leaf = leaf_for(&["localhost"]);
        assert!(verify_issued(&ca, &leaf, now + 100 * 86_400).is_err());
    }
}
