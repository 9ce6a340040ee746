//! The cluster CA: `switchy-controller ca init` and `ca issue`. Files in the
//! directory: `ca.pem`, `ca.key`, and `<name>.pem` / `<name>.key` per issued
//! certificate (keys are written with mode 0600).

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

fn ca_params() -> anyhow::Result<CertificateParams> {
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
pub fn new_ca() -> anyhow::Result<Pem> {
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
pub fn issue(ca: &Pem, name: &str, extra_sans: &[String]) -> anyhow::Result<Pem> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        anyhow::bail!("certificate name {name:?}: use letters, digits, '-', '_' and '.' only");
    }
    let ca_key =
        KeyPair::from_pem(&ca.key).map_err(|e| anyhow::anyhow!("CA key unreadable: {e}"))?;
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

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// `ca init --dir D`: refuses to overwrite an existing CA.
pub fn init_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    if dir.join("ca.pem").exists() {
        anyhow::bail!(
            "{} already holds a CA (ca.pem); remove it first or use another --dir",
            dir.display()
        );
    }
    let ca = new_ca()?;
    std::fs::write(dir.join("ca.pem"), &ca.cert)?;
    write_private(&dir.join("ca.key"), &ca.key)?;
    Ok(())
}

/// Loads the CA of a directory.
pub fn load_ca(dir: &Path) -> anyhow::Result<Pem> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e} (run `switchy-controller ca init --dir {}` first)",
                dir.join(f).display(),
                dir.display()
            )
        })
    };
    Ok(Pem {
        cert: read("ca.pem")?,
        key: read("ca.key")?,
    })
}

/// `ca issue --name N --dir D`.
pub fn issue_to_dir(dir: &Path, name: &str, extra_sans: &[String]) -> anyhow::Result<()> {
    let ca = load_ca(dir)?;
    let pem = issue(&ca, name, extra_sans)?;
    std::fs::write(dir.join(format!("{name}.pem")), &pem.cert)?;
    write_private(&dir.join(format!("{name}.key")), &pem.key)?;
    Ok(())
}
