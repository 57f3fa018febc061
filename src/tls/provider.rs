//! The three certificate providers of `tls.mode`, on the files of the keys directory (or the
//! operator's): `self-signed`, `local-ca` and `files`. Each one checks what it loads
//! ([`certs::validate`]) and hands it to [`Served`], which new handshakes read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use beepmyphone_actors::ports::{CertificateInfo, CertificateProvider, TlsError};

use super::certs::{self, CertError, Host, KeyType};
use super::serve::Served;
use crate::config::{TlsKeyType, TlsMode, TlsSettings};

/// The folder of the keys directory the relay's own certificates live in.
pub const TLS_DIR: &str = "tls";
/// The local CA's certificate (`beepmyphone cert export-ca` prints it).
pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
/// The local CA is valid this long (ten years).
const CA_DAYS: u32 = 3_653;
/// Its subject.
const CA_NAME: &str = "BeepMyPhone local CA";

/// Certificates on disk, for one mode.
pub struct DiskCertificates {
    mode: TlsMode,
    /// The server certificate (chain) and key.
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The local CA's files (mode `local-ca`).
    ca_dir: PathBuf,
    /// Hosts every certificate must cover (`tls.hosts` and the public URL's host).
    required: Vec<Host>,
    /// Hosts an issued certificate covers (the required ones and this machine's names).
    issued: Vec<Host>,
    key_type: KeyType,
    days: u32,
    renew_before_ms: i64,
    served: Served,
}

fn invalid(e: CertError) -> TlsError {
    TlsError::Invalid(e.to_string())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |e| TlsError::Invalid(format!("{}: {e}", path.display()))
}

impl DiskCertificates {
    /// The provider for `settings` (TLS on), whose files live in `keys_dir` (modes `self-signed`
    /// and `local-ca`) or where `tls.cert_file` and `tls.key_file` say. `public_host` is the host
    /// of `server.public_url`, if set.
    pub fn new(
        settings: &TlsSettings,
        keys_dir: &Path,
        public_host: Option<&str>,
        served: Served,
    ) -> Result<Self, TlsError> {
        let mut required = Vec::new();
        for host in settings.hosts.iter().map(String::as_str).chain(public_host) {
            let host =
                Host::parse(host).map_err(|e| TlsError::Invalid(format!("tls.hosts: {e}")))?;
            if !required.contains(&host) {
                required.push(host);
            }
        }
        let mut issued = required.clone();
        let machine = machine_host_name();
        for name in ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .chain(machine.as_deref())
        {
            if let Ok(host) = Host::parse(name) {
                if !issued.contains(&host) {
                    issued.push(host);
                }
            }
        }
        let dir = keys_dir.join(TLS_DIR);
        let (cert_file, key_file) = match settings.mode {
            TlsMode::Files => (settings.cert_file.clone(), settings.key_file.clone()),
            _ => (dir.join(SERVER_CERT), dir.join(SERVER_KEY)),
        };
        Ok(Self {
            mode: settings.mode,
            cert_file,
            key_file,
            ca_dir: dir,
            required,
            issued,
            key_type: match settings.key_type {
                TlsKeyType::EcdsaP256 => KeyType::EcdsaP256,
                TlsKeyType::Rsa2048 => KeyType::Rsa2048,
            },
            days: settings.certificate_days,
            renew_before_ms: i64::from(settings.renew_before_days) * 86_400_000,
            served,
        })
    }

    /// At start-up: loads the certificate, first issuing one where the provider can and what is
    /// on disk is missing, unusable, lacks a host or is due for renewal. Mode `files` only loads,
    /// and fails on anything unusable.
    /// Also returns the files' stamp from before the certificate was read (for
    /// [`beepmyphone_actors::certs::CertificateManager::with_stamp`]).
    pub fn prepare(&self, now_ms: i64) -> Result<(CertificateInfo, u64), TlsError> {
        let due = self.mode != TlsMode::Files
            && !matches!(self.read_checked(now_ms),
                Ok((info, _, _)) if info.not_after_ms - now_ms > self.renew_before_ms);
        if due {
            // `renew` has loaded and served what it wrote; the stamp is that of its own files.
            let info = self.renew(now_ms)?;
            return Ok((info, self.stamp()));
        }
        let stamp = self.stamp();
        Ok((self.load(now_ms)?, stamp))
    }

    /// Reads and checks the certificate on disk without serving it (`beepmyphone cert status`,
    /// `pairing-code`).
    pub fn inspect(&self, now_ms: i64) -> Result<CertificateInfo, TlsError> {
        self.read_checked(now_ms).map(|(info, _, _)| info)
    }

    /// The local CA's certificate (PEM), mode `local-ca` only, once created.
    pub fn ca_pem(&self) -> Result<Vec<u8>, TlsError> {
        if self.mode != TlsMode::LocalCa {
            return Err(TlsError::Invalid(format!(
                "the relay has no local CA (tls.mode is \"{}\", not \"local-ca\")",
                self.mode.as_str()
            )));
        }
        let path = self.ca_dir.join(CA_CERT);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TlsError::Invalid(format!(
                "no local CA yet ({} does not exist): start the relay once, or run beepmyphone cert renew",
                path.display()
            ))),
            other => other.map_err(io(&path)),
        }
    }

    /// The local CA, created on first use.
    fn ca(&self, now_s: i64) -> Result<(X509, PKey<Private>), TlsError> {
        let (cert_path, key_path) = (self.ca_dir.join(CA_CERT), self.ca_dir.join(CA_KEY));
        // A key without its certificate is a first start that stopped between the two writes:
        // that CA was never published (nothing it signed was written), so a new one replaces it.
        if cert_path.exists() {
            let cert = certs::read_chain(&std::fs::read(&cert_path).map_err(io(&cert_path))?)
                .map_err(invalid)?
                .remove(0);
            let key = certs::read_key(&std::fs::read(&key_path).map_err(io(&key_path))?)
                .map_err(invalid)?;
            let (_, not_after) = certs::validity(&cert).map_err(invalid)?;
            if not_after <= now_s {
                return Err(TlsError::Invalid(format!(
                    "the local CA {} expired; move the tls folder of the keys directory aside to create a new one (devices must pair again to pin it)",
                    cert_path.display()
                )));
            }
            let public = cert.public_key().map_err(|e| invalid(e.into()))?;
            if !public.public_eq(&key) {
                return Err(invalid(CertError::KeyMismatch));
            }
            return Ok((cert, key));
        }
        let key = certs::generate_key(self.key_type).map_err(invalid)?;
        let cert =
            certs::new_local_ca(&key, CA_NAME, now_s, CA_DAYS, &self.issued).map_err(invalid)?;
        self.ensure_dir()?;
        write(&key_path, &certs::key_pem(&key).map_err(invalid)?, 0o600)?;
        write(
            &cert_path,
            &certs::chain_pem(std::slice::from_ref(&cert)).map_err(invalid)?,
            0o600,
        )?;
        Ok((cert, key))
    }

    fn ensure_dir(&self) -> Result<(), TlsError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.ca_dir)
            .map_err(io(&self.ca_dir))
    }

    /// Reads and checks the chain and key on disk.
    fn read_checked(
        &self,
        now_ms: i64,
    ) -> Result<(CertificateInfo, Vec<X509>, PKey<Private>), TlsError> {
        let chain =
            certs::read_chain(&std::fs::read(&self.cert_file).map_err(io(&self.cert_file))?)
                .map_err(|e| TlsError::Invalid(format!("{}: {e}", self.cert_file.display())))?;
        let key = certs::read_key(&std::fs::read(&self.key_file).map_err(io(&self.key_file))?)
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", self.key_file.display())))?;
        let checked = certs::validate(&chain, &key, &self.required, now_ms.div_euclid(1_000))
            .map_err(|e| TlsError::Invalid(format!("{}: {e}", self.cert_file.display())))?;
        let (pin, ca_not_after_ms) = match self.mode {
            TlsMode::SelfSigned => (Some(checked.fingerprint.clone()), None),
            TlsMode::LocalCa => match chain.last().filter(|_| chain.len() > 1) {
                Some(ca) => (
                    Some(certs::fingerprint(ca)),
                    certs::validity(ca).ok().map(|(_, until)| until * 1_000),
                ),
                None => (None, None),
            },
            _ => (None, None),
        };
        let info = CertificateInfo {
            mode: self.mode.as_str().to_owned(),
            subject: checked.subject,
            issuer: checked.issuer,
            hosts: checked.hosts,
            not_before_ms: checked.not_before * 1_000,
            not_after_ms: checked.not_after * 1_000,
            fingerprint: checked.fingerprint,
            key: checked.key,
            pin,
            ca_not_after_ms,
        };
        Ok((info, chain, key))
    }
}

impl CertificateProvider for DiskCertificates {
    fn load(&self, now_ms: i64) -> Result<CertificateInfo, TlsError> {
        let (info, chain, key) = self.read_checked(now_ms)?;
        self.served.serve(&chain, &key).map_err(invalid)?;
        Ok(info)
    }

    fn renew(&self, now_ms: i64) -> Result<CertificateInfo, TlsError> {
        if !self.can_issue() {
            return Err(TlsError::CannotIssue);
        }
        // One writer at a time: the relay and `beepmyphone cert renew` beside it.
        self.ensure_dir()?;
        let _lock = lock(&self.ca_dir)?;
        let now_s = now_ms.div_euclid(1_000);
        let key = certs::generate_key(self.key_type).map_err(invalid)?;
        let chain = match self.mode {
            TlsMode::Files | TlsMode::Off => return Err(TlsError::CannotIssue),
            TlsMode::SelfSigned => {
                vec![certs::self_signed(&key, &self.issued, now_s, self.days).map_err(invalid)?]
            }
            TlsMode::LocalCa => {
                let (ca, ca_key) = self.ca(now_s)?;
                // Never valid beyond the CA that vouches for it.
                let (_, ca_until) = certs::validity(&ca).map_err(invalid)?;
                let ca_days = u32::try_from((ca_until - now_s).div_euclid(86_400)).unwrap_or(0);
                let days = self.days.min(ca_days).max(1);
                let leaf =
                    certs::issue(&ca, &ca_key, &key, &self.issued, now_s, days).map_err(invalid)?;
                certs::verify_issued(&ca, &leaf, now_s).map_err(|why| {
                    TlsError::Invalid(format!(
                        "the local CA {} cannot vouch for these host names ({why}); it only covers \
                         local names and addresses and the hosts configured when it was made: move \
                         the tls folder of the keys directory aside to create a new one (devices \
                         must pair again to pin it)",
                        self.ca_dir.join(CA_CERT).display()
                    ))
                })?;
                vec![leaf, ca]
            }
        };
        self.ensure_dir()?;
        // The key first: a crash between the two writes leaves a pair that does not match, which
        // the next start replaces (a new certificate), never one that serves a stale key.
        write(
            &self.key_file,
            &certs::key_pem(&key).map_err(invalid)?,
            0o600,
        )?;
        write(
            &self.cert_file,
            &certs::chain_pem(&chain).map_err(invalid)?,
            0o600,
        )?;
        self.load(now_ms)
    }

    fn can_issue(&self) -> bool {
        matches!(self.mode, TlsMode::SelfSigned | TlsMode::LocalCa)
    }

    fn stamp(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for path in [&self.cert_file, &self.key_file] {
            match std::fs::metadata(path) {
                Ok(meta) => {
                    (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut hasher)
                }
                Err(_) => 0u8.hash(&mut hasher),
            }
        }
        hasher.finish().max(1)
    }
}

/// An exclusive lock on `dir/.lock`, held until the file is dropped.
fn lock(dir: &Path) -> Result<std::fs::File, TlsError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(&path)(std::io::Error::last_os_error()));
    }
    Ok(file)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    certs::write_atomic(path, bytes, mode).map_err(invalid)
}

/// This machine's host name, if it is a usable DNS name.
fn machine_host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| Host::parse(name).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsSettings;

    const DAY_MS: i64 = 86_400_000;

    fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    fn provider(
        dir: &Path,
        mode: TlsMode,
        tweak: impl FnOnce(&mut TlsSettings),
    ) -> DiskCertificates {
        let mut settings = TlsSettings {
            mode,
            ..TlsSettings::default()
        };
        tweak(&mut settings);
        DiskCertificates::new(&settings, dir, Some("relay.example"), Served::default()).unwrap()
    }

    #[test]
    fn a_start_reuses_a_good_certificate_and_replaces_one_that_is_due_or_broken() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let certs = provider(dir.path(), TlsMode::SelfSigned, |s| {
            s.certificate_days = 31;
        });
        let (first, _) = certs.prepare(now).unwrap();
        assert!(first.hosts.iter().any(|h| h == "relay.example"));
        assert_eq!(certs.prepare(now).unwrap().0.fingerprint, first.fingerprint);
        // Two days later it is inside the 30-day window: a start renews it.
        let (due, _) = certs.prepare(now + 2 * DAY_MS).unwrap();
        assert_ne!(due.fingerprint, first.fingerprint);
        // A key that does not match (a crash between the two writes): replaced too.
        let stray = certs::generate_key(KeyType::EcdsaP256).unwrap();
        write(&certs.key_file, &certs::key_pem(&stray).unwrap(), 0o600).unwrap();
        assert!(certs.inspect(now).is_err());
        let stamp = certs.stamp();
        let (fixed, _) = certs.prepare(now).unwrap();
        assert_ne!(fixed.fingerprint, due.fingerprint);
        assert_ne!(certs.stamp(), stamp);
    }

    #[test]
    fn the_local_ca_is_made_once_and_checked_before_it_issues() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let certs = provider(dir.path(), TlsMode::LocalCa, |_| {});
        let (first, _) = certs.prepare(now).unwrap();
        let renewed = certs.renew(now).unwrap();
        assert_eq!(renewed.pin, first.pin);
        assert!(renewed.ca_not_after_ms.unwrap() > now + 3_000 * DAY_MS);
        let pem = certs.ca_pem().unwrap();
        assert_eq!(
            Some(certs::fingerprint(&certs::read_chain(&pem).unwrap()[0])),
            first.pin
        );
        // A CA key that is not the CA's.
        let ca_key = dir.path().join(TLS_DIR).join(CA_KEY);
        let original = std::fs::read(&ca_key).unwrap();
        let stray = certs::generate_key(KeyType::EcdsaP256).unwrap();
        write(&ca_key, &certs::key_pem(&stray).unwrap(), 0o600).unwrap();
        let error = certs.renew(now).unwrap_err().to_string();
        assert!(error.contains("does not match"), "{error}");
        // An expired CA: a clear way out.
        write(&ca_key, &original, 0o600).unwrap();
        let error = certs.renew(now + 3_700 * DAY_MS).unwrap_err().to_string();
        assert!(error.contains("move the tls folder"), "{error}");
    }

    #[test]
    fn files_are_only_read_and_other_modes_have_no_ca() {
        let dir = tempfile::tempdir().unwrap();
        let certs = provider(dir.path(), TlsMode::Files, |s| {
            s.cert_file = dir.path().join("missing.crt");
            s.key_file = dir.path().join("missing.key");
        });
        assert_eq!(certs.renew(now_ms()), Err(TlsError::CannotIssue));
        let error = certs.prepare(now_ms()).unwrap_err().to_string();
        assert!(error.contains("missing.crt"), "{error}");
        let error = certs.ca_pem().unwrap_err().to_string();
        assert!(error.contains("no local CA"), "{error}");
        let bad = DiskCertificates::new(
            &TlsSettings {
                mode: TlsMode::SelfSigned,
                hosts: vec!["not a host".into()],
                ..TlsSettings::default()
            },
            dir.path(),
            None,
            Served::default(),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn the_local_ca_refuses_a_host_outside_what_it_was_made_for() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        provider(dir.path(), TlsMode::LocalCa, |_| {})
            .prepare(now)
            .unwrap();
        // A local address later is fine; a public name the CA was not made for is not.
        let lan = provider(dir.path(), TlsMode::LocalCa, |s| {
            s.hosts = vec!["192.168.7.7".into()]
        });
        assert!(lan.renew(now).is_ok());
        let public = provider(dir.path(), TlsMode::LocalCa, |s| {
            s.hosts = vec!["other.example".into()]
        });
        let error = public.renew(now).unwrap_err().to_string();
        assert!(error.contains("cannot vouch"), "{error}");
        // What is served is still the earlier certificate.
        assert!(lan.inspect(now).is_ok());
    }
}
