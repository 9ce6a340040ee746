//! The cluster CA: `switchy-controller ca init` and `ca issue`. Files in the
//! directory: `ca.pem`, `ca.key`, and `<name>.pem` / `<name>.key` per issued
//! certificate (keys are written with mode 0600).

use crate::CaError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;

/// A PEM certificate and key.
#[derive(Clone, Debug)]
pub struct Pem {
    /// Certificate (PEM).
    pub cert: String,
    /// Private key (PEM).
    pub key: String,
}

/// Subject of every switchy CA.
const CA_NAME: &str = "switchy cluster CA";

/// How long a new CA is valid.
pub const CA_VALID_DAYS: i64 = 3652;
/// How long an issued (node or controller) certificate is valid by
/// default: renew with `ca issue --force` before it expires.
pub const CERT_VALID_DAYS: i64 = 365;

/// Sets a certificate's validity: from yesterday (clock skew) to `days`
/// days from today (UTC).
fn valid_for(p: &mut CertificateParams, days: i64) {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 / 86_400);
    let (y, m, d) = civil_from_days(today - 1);
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + days);
    p.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

fn ca_params() -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    valid_for(&mut p, CA_VALID_DAYS);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Creates a new CA.
pub fn new_ca() -> Result<Pem, CaError> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues a certificate for `name` (an agent's node id, or `controller`),
/// valid as TLS client and server, with `name` and `localhost`/127.0.0.1 as
/// subject alternative names plus `extra_sans`.
pub fn issue(ca: &Pem, name: &str, extra_sans: &[String]) -> Result<Pem, CaError> {
    issue_for(ca, name, extra_sans, CERT_VALID_DAYS)
}

/// As [`issue`], valid for `days` days from yesterday.
pub fn issue_for(ca: &Pem, name: &str, extra_sans: &[String], days: i64) -> Result<Pem, CaError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(CaError::BadName(name.to_owned()));
    }
    let ca_key = KeyPair::from_pem(&ca.key).map_err(CaError::Key)?;
    // The issuer is the CA's subject and key (all a signature needs).
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut sans = vec![name.to_owned(), "localhost".to_owned()];
    sans.extend(extra_sans.iter().cloned());
    let mut p = CertificateParams::new(sans)?;
    p.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    valid_for(&mut p, days.max(1));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn io(action: &'static str, path: &Path, hint: String) -> impl FnOnce(std::io::Error) -> CaError {
    let path = path.to_owned();
    move |source| CaError::Io {
        action,
        path,
        source,
        hint,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(io("write", path, String::new()))?;
    f.write_all(text.as_bytes())
        .map_err(io("write", path, String::new()))?;
    Ok(())
}

/// `ca init --dir D`: refuses to overwrite an existing CA.
pub fn init_dir(dir: &Path) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir, String::new()))?;
    if dir.join("ca.pem").exists() {
        return Err(CaError::Exists(dir.to_owned()));
    }
    let ca = new_ca()?;
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, &ca.cert).map_err(io("write", &pem, String::new()))?;
    write_private(&dir.join("ca.key"), &ca.key)?;
    Ok(())
}

/// Loads the CA of a directory.
pub fn load_ca(dir: &Path) -> Result<Pem, CaError> {
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read_to_string(&path).map_err(io(
            "read",
            &path,
            format!(
                " (run `switchy-controller ca init --dir {}` first)",
                dir.display()
            ),
        ))
    };
    Ok(Pem {
        cert: read("ca.pem")?,
        key: read("ca.key")?,
    })
}

/// `ca issue --name N --dir D [--days N] [--force]`: refuses to replace an
/// existing certificate or key unless `force` (renewal).
pub fn issue_to_dir(
    dir: &Path,
    name: &str,
    extra_sans: &[String],
    days: i64,
    force: bool,
) -> Result<(), CaError> {
    let ca = load_ca(dir)?;
    if !force {
        for f in [format!("{name}.pem"), format!("{name}.key")] {
            if dir.join(&f).exists() {
                return Err(CaError::Issued(dir.join(f)));
            }
        }
    }
    let pem = issue_for(&ca, name, extra_sans, days)?;
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, &pem.cert).map_err(io("write", &cert, String::new()))?;
    write_private(&dir.join(format!("{name}.key")), &pem.key)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
    }

    #[test]
    fn issuing_refuses_to_overwrite_without_force() {
        let dir = std::env::temp_dir().join(format!("switchy-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init_dir(&dir).unwrap();
        issue_to_dir(&dir, "fs1", &[], CERT_VALID_DAYS, false).unwrap();
        let key = std::fs::read_to_string(dir.join("fs1.key")).unwrap();
        let e = issue_to_dir(&dir, "fs1", &[], CERT_VALID_DAYS, false).unwrap_err();
        assert!(matches!(e, CaError::Issued(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("fs1.key")).unwrap(),
            key,
            "key kept"
        );
        issue_to_dir(&dir, "fs1", &[], 30, true).unwrap();
        assert_ne!(
            std::fs::read_to_string(dir.join("fs1.key")).unwrap(),
            key,
            "renewed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
