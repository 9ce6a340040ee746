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

fn ca_params() -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
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

/// `ca issue --name N --dir D`.
pub fn issue_to_dir(dir: &Path, name: &str, extra_sans: &[String]) -> Result<(), CaError> {
    let ca = load_ca(dir)?;
    let pem = issue(&ca, name, extra_sans)?;
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, &pem.cert).map_err(io("write", &cert, String::new()))?;
    write_private(&dir.join(format!("{name}.key")), &pem.key)?;
    Ok(())
}
