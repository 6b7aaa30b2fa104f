//! Settings of the MESH connection: which environment, which mailbox, its secrets and TLS
//! files, gathered from four places and turned into a [`mesh_client::ClientConfig`].
//!
//! Precedence, highest first: values given explicitly (command-line options), environment
//! variables, the `[mesh]` table of the TOML configuration file, built-in defaults (INT,
//! the client's 75 MiB chunks, gzip on). Each layer is a [`MeshSettings`] with every field
//! optional; [`MeshSettings::over`] lays one over another.
//!
//! | TOML `[mesh]` key | environment variable | meaning |
//! |---|---|---|
//! | `env` | `NDOP_MESH_URL` | `int`, `live` or a base URL (plain `http` only to loopback) |
//! | `mailbox` | `NDOP_MAILBOX` | our mailbox id |
//! | `password` | `NDOP_MESH_PASSWORD` | the mailbox password |
//! | `shared_key` | `NDOP_MESH_SHARED_KEY` | the environment's shared secret (HMAC key) |
//! | `cert`, `key` | `NDOP_MESH_CERT`, `NDOP_MESH_KEY` | client certificate and key (PEM) for mutual TLS |
//! | `ca` | `NDOP_MESH_CA` | CA bundle (PEM) to trust instead of the public roots |
//! | `chunk_size`, `compress`, `compress_level`, `retries`, `timeout_secs` | — | sending and retry tuning |
//!
//! Relative paths in the file are relative to the file's directory. Secrets are held in
//! [`Secret`], whose `Debug` prints `<redacted>`, so no `{:?}` of the settings, and no log line,
//! can show them; a configuration file holding a secret that others can read draws a warning.
//!
//! ```toml
//! [mesh]
//! env = "int"
//! mailbox = "X26ABC1"
//! cert = "certs/client.pem"
//! key = "certs/client.key"
//! ca = "certs/nhs-int-ca-bundle.pem"
//! # password and shared_key are better kept in NDOP_MESH_PASSWORD / NDOP_MESH_SHARED_KEY
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_client::{ClientConfig, Environment};
use processor::pos::PosEnv;
use serde::Deserialize;

use processor::{Error, Result};

/// A password or key: printed as `<redacted>` by `Debug`; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself: only to hand it to the MESH client.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One layer of MESH settings; `None` = not set in this layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MeshSettings {
    /// `int`, `live` or a base URL.
    pub env: Option<String>,
    /// Our mailbox id.
    pub mailbox: Option<String>,
    /// The mailbox password.
    pub password: Option<Secret>,
    /// The environment's shared secret.
    pub shared_key: Option<Secret>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// Bytes of a file per MESH chunk (at most 100 MB).
    pub chunk_size: Option<u64>,
    /// Gzip each chunk on the way out.
    pub compress: Option<bool>,
    /// Gzip level, 0 (stored) to 9; default 1 (on .dat files the fastest and as small as 9).
    pub compress_level: Option<u32>,
    /// Retries of requests that are safe to repeat.
    pub retries: Option<u32>,
    /// Time limit of one HTTP request, in seconds.
    pub timeout_secs: Option<u64>,
}

/// Environment variable: `int`, `live` or a base URL.
pub(crate) const ENV_URL: &str = "NDOP_MESH_URL";
/// Environment variable: our mailbox id.
pub(crate) const ENV_MAILBOX: &str = "NDOP_MAILBOX";
/// Environment variable: the mailbox password.
pub(crate) const ENV_PASSWORD: &str = "NDOP_MESH_PASSWORD";
/// Environment variable: the shared secret.
pub(crate) const ENV_SHARED_KEY: &str = "NDOP_MESH_SHARED_KEY";
/// Environment variable: client certificate file.
pub(crate) const ENV_CERT: &str = "NDOP_MESH_CERT";
/// Environment variable: client key file.
pub(crate) const ENV_KEY: &str = "NDOP_MESH_KEY";
/// Environment variable: CA bundle file.
pub(crate) const ENV_CA: &str = "NDOP_MESH_CA";

/// The whole configuration file: only `[mesh]` is read here; other tables belong to others.
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    mesh: Option<MeshSettings>,
}

impl MeshSettings {
    /// The built-in defaults: INT, 75 MiB chunks, gzip on, 3 retries, 600 s timeout.
    pub(crate) fn defaults() -> MeshSettings {
        MeshSettings {
            env: Some("int".into()),
            chunk_size: Some(mesh_client::DEFAULT_CHUNK_SIZE),
            compress: Some(true),
            retries: Some(3),
            timeout_secs: Some(600),
            ..MeshSettings::default()
        }
    }

    /// The `[mesh]` table of TOML text (empty settings if there is none). Relative paths are
    /// resolved against `base_dir`.
    pub(crate) fn from_toml(
        text: &str,
        base_dir: &Path,
    ) -> std::result::Result<MeshSettings, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut s = file.mesh.unwrap_or_default();
        for p in [&mut s.cert, &mut s.key, &mut s.ca].into_iter().flatten() {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
        Ok(s)
    }

    /// The `[mesh]` table of the TOML file at `path`.
    pub(crate) fn from_file(path: &Path) -> Result<MeshSettings> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let settings = MeshSettings::from_toml(&text, base).map_err(|reason| {
            Error::read(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
            )
        })?;
        if settings.password.is_some() || settings.shared_key.is_some() {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the configuration file holds a MESH secret and others can read it; chmod 600 it"
                    );
                }
            }
        }
        Ok(settings)
    }

    /// The settings in the process environment (empty variables count as unset).
    pub(crate) fn from_env() -> MeshSettings {
        MeshSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings from any variable lookup (for tests and embedding).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> MeshSettings {
        let get = |name| lookup(name).filter(|v| !v.trim().is_empty());
        MeshSettings {
            env: get(ENV_URL),
            mailbox: get(ENV_MAILBOX),
            password: get(ENV_PASSWORD).map(Secret),
            shared_key: get(ENV_SHARED_KEY).map(Secret),
            cert: get(ENV_CERT).map(PathBuf::from),
            key: get(ENV_KEY).map(PathBuf::from),
            ca: get(ENV_CA).map(PathBuf::from),
            ..MeshSettings::default()
        }
    }

    /// `self` laid over `lower`: every field set in `self` wins.
    pub(crate) fn over(self, lower: MeshSettings) -> MeshSettings {
        MeshSettings {
            env: self.env.or(lower.env),
            mailbox: self.mailbox.or(lower.mailbox),
            password: self.password.or(lower.password),
            shared_key: self.shared_key.or(lower.shared_key),
            cert: self.cert.or(lower.cert),
            key: self.key.or(lower.key),
            ca: self.ca.or(lower.ca),
            chunk_size: self.chunk_size.or(lower.chunk_size),
            compress: self.compress.or(lower.compress),
            compress_level: self.compress_level.or(lower.compress_level),
            retries: self.retries.or(lower.retries),
            timeout_secs: self.timeout_secs.or(lower.timeout_secs),
        }
    }

    /// All four layers: `explicit` > the process environment > the `[mesh]` table of
    /// `config_file` (if given) > [`defaults`](MeshSettings::defaults).
    pub(crate) fn resolve(
        explicit: MeshSettings,
        config_file: Option<&Path>,
    ) -> Result<MeshSettings> {
        let file = match config_file {
            Some(path) => MeshSettings::from_file(path)?,
            None => MeshSettings::default(),
        };
        Ok(explicit
            .over(MeshSettings::from_env())
            .over(file)
            .over(MeshSettings::defaults()))
    }

    /// The environment these settings point at (`int` when unset).
    pub(crate) fn environment(&self) -> Result<Environment> {
        self.env
            .as_deref()
            .unwrap_or("int")
            .parse::<Environment>()
            .map_err(|e| Error::Usage(format!("MESH environment: {e}")))
    }

    /// The POS environment these settings address, which picks the POS mailbox every `.ctl`
    /// is written to: derived from the MESH environment as the client parses it (any case,
    /// surrounding spaces), so that LIVE MESH always means the LIVE POS. INT and any other URL
    /// (a mock, the sandbox) mean the INT POS.
    pub(crate) fn pos_env(&self) -> Result<PosEnv> {
        Ok(match self.environment()? {
            Environment::Live => PosEnv::Live,
            Environment::Int | Environment::Custom(_) => PosEnv::Int,
        })
    }

    /// The client configuration. Fails with a message naming the setting (file key and
    /// environment variable) when the mailbox, password or shared key is missing, or only one
    /// of certificate and key is given. The URL, chunk size and TLS files are checked when
    /// the client is built ([`mesh_client::MeshClient::new`]).
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        let missing = |what: &str, key: &str, var: &str| {
            Error::Usage(format!(
                "no MESH {what}: set `{key}` in [mesh] of the configuration file or {var}"
            ))
        };
        let mailbox = self
            .mailbox
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| missing("mailbox", "mailbox", ENV_MAILBOX))?;
        let password = self
            .password
            .as_ref()
            .ok_or_else(|| missing("password", "password", ENV_PASSWORD))?;
        let shared_key = self
            .shared_key
            .as_ref()
            .ok_or_else(|| missing("shared key", "shared_key", ENV_SHARED_KEY))?;
        let defaults = MeshSettings::defaults();
        let mut config = ClientConfig::default()
            .with_environment(self.environment()?)
            .with_mailbox(mailbox, password.expose())
            .with_shared_key(shared_key.expose())
            .with_application_name("ndop")
            .with_compression(self.compress.or(defaults.compress).unwrap_or(true))
            .with_compression_level(
                self.compress_level
                    .unwrap_or(mesh_client::DEFAULT_COMPRESS_LEVEL),
            )
            .with_chunk_size(self.chunk_size.unwrap_or(mesh_client::DEFAULT_CHUNK_SIZE))
            .with_retries(
                self.retries.or(defaults.retries).unwrap_or(3),
                Duration::from_millis(500),
            )
            .with_timeout(Duration::from_secs(
                self.timeout_secs.or(defaults.timeout_secs).unwrap_or(600),
            ));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => config = config.with_client_certificate(cert, key),
            (None, None) => {}
            _ => {
                return Err(Error::Usage(format!(
                    "mutual TLS needs both a client certificate and its key (`cert` and `key`, or {ENV_CERT} and {ENV_KEY})"
                )))
            }
        }
        if let Some(ca) = &self.ca {
            config = config.with_ca_bundle(ca);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> MeshSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MeshSettings::from_lookup(|name| map.get(name).cloned())
    }

    const FILE: &str = r#"
        title = "other tables are not ours"
        [mesh]
        env = "live"
        mailbox = "X26FILE1"
        password = "file-password"
        shared_key = "file-key"
        cert = "certs/client.pem"
        key = "/abs/client.key"
        chunk_size = 1000000
        compress = false
        compress_level = 1
        [cache]
        max_age_days = 21
    "#;

    #[test]
    fn precedence_is_explicit_then_env_then_file_then_default() {
        let file = MeshSettings::from_toml(FILE, Path::new("/etc/ndop")).unwrap();
        assert_eq!(
            file.cert.as_deref(),
            Some(Path::new("/etc/ndop/certs/client.pem"))
        );
        assert_eq!(file.key.as_deref(), Some(Path::new("/abs/client.key")));
        let from_env = env(&[
            (ENV_MAILBOX, "X26ENV1"),
            (ENV_PASSWORD, "env-password"),
            (ENV_URL, ""),
        ]);
        let explicit = MeshSettings {
            mailbox: Some("X26CLI1".into()),
            ..MeshSettings::default()
        };
        let s = explicit
            .over(from_env)
            .over(file)
            .over(MeshSettings::defaults());
        assert_eq!(s.mailbox.as_deref(), Some("X26CLI1"));
        assert_eq!(s.password, Some(Secret::new("env-password")));
        assert_eq!(s.shared_key, Some(Secret::new("file-key")));
        assert_eq!(s.env.as_deref(), Some("live"), "an empty variable is unset");
        assert_eq!(s.compress, Some(false));
        assert_eq!(s.compress_level, Some(1));
        assert_eq!(s.retries, Some(3));
        let c = s.client_config().unwrap();
        assert_eq!(c.mailbox(), "X26CLI1");
        let dbg = format!("{c:?}");
        assert!(dbg.contains("environment: Live"), "{dbg}");
        assert!(
            dbg.contains("chunk_size: 1000000")
                && dbg.contains("compress: false")
                && dbg.contains("compress_level: 1"),
            "{dbg}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = env(&[(ENV_PASSWORD, "hunter2-env")])
            .over(MeshSettings::from_toml(FILE, Path::new("/")).unwrap());
        let c = s.client_config().unwrap();
        for text in [format!("{s:?}"), format!("{c:?}"), format!("{:#?}", s)] {
            for secret in ["hunter2-env", "file-key", "file-password"] {
                assert!(!text.contains(secret), "{secret} leaked: {text}");
            }
        }
        assert_eq!(s.password.as_ref().unwrap().expose(), "hunter2-env");
    }

    #[test]
    fn environment_values() {
        for (value, url) in [
            ("int", mesh_client::INT_URL),
            ("LIVE", mesh_client::LIVE_URL),
            ("http://127.0.0.1:8700", "http://127.0.0.1:8700"),
        ] {
            let s = env(&[(ENV_URL, value)]);
            assert_eq!(s.environment().unwrap().url(), url);
        }
        assert_eq!(
            MeshSettings::default().environment().unwrap().url(),
            mesh_client::INT_URL
        );
    }

    #[test]
    fn the_pos_environment_follows_the_mesh_environment() {
        for (value, pos) in [
            ("live", PosEnv::Live),
            ("LIVE", PosEnv::Live),
            (" live ", PosEnv::Live),
            ("Live", PosEnv::Live),
            ("int", PosEnv::Int),
            (" INT", PosEnv::Int),
            ("http://127.0.0.1:8700", PosEnv::Int),
            ("https://live.mesh.example", PosEnv::Int),
        ] {
            let s = env(&[(ENV_URL, value)]);
            assert_eq!(s.pos_env().unwrap(), pos, "{value:?}");
        }
        assert_eq!(MeshSettings::default().pos_env().unwrap(), PosEnv::Int);
        assert_eq!(
            MeshSettings::defaults().pos_env().unwrap(),
            PosEnv::Int,
            "the default is INT"
        );
    }

    #[test]
    fn missing_or_half_settings_name_the_fix() {
        let complete = env(&[
            (ENV_MAILBOX, "X26ABC1"),
            (ENV_PASSWORD, "p"),
            (ENV_SHARED_KEY, "k"),
        ]);
        assert!(complete.client_config().is_ok());
        for (drop, hint) in [
            (ENV_MAILBOX, "NDOP_MAILBOX"),
            (ENV_PASSWORD, "NDOP_MESH_PASSWORD"),
            (ENV_SHARED_KEY, "NDOP_MESH_SHARED_KEY"),
        ] {
            let mut s = complete.clone();
            match drop {
                ENV_MAILBOX => s.mailbox = None,
                ENV_PASSWORD => s.password = None,
                _ => s.shared_key = None,
            }
            let e = s.client_config().unwrap_err().to_string();
            assert!(e.contains(hint), "{e}");
        }
        let half = MeshSettings {
            cert: Some("c.pem".into()),
            ..complete.clone()
        };
        assert!(half
            .client_config()
            .unwrap_err()
            .to_string()
            .contains("both"));
        let tls = MeshSettings {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ca: Some("ca.pem".into()),
            ..complete
        };
        let dbg = format!("{:?}", tls.client_config().unwrap());
        assert!(dbg.contains("c.pem") && dbg.contains("ca.pem"), "{dbg}");
    }

    #[test]
    fn bad_files_are_reported_with_their_path() {
        assert!(MeshSettings::from_toml("[mesh]\nmailbox = 1", Path::new("/")).is_err());
        assert!(
            MeshSettings::from_toml("[mesh]\npasword = \"x\"", Path::new("/"))
                .unwrap_err()
                .contains("pasword")
        );
        assert_eq!(
            MeshSettings::from_toml("", Path::new("/")).unwrap(),
            MeshSettings::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ndop.toml");
        std::fs::write(&path, "[mesh\n").unwrap();
        let e = MeshSettings::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("ndop.toml"), "{e}");
        assert!(MeshSettings::from_file(&dir.path().join("none.toml")).is_err());
        std::fs::write(&path, "[mesh]\nmailbox = \"X26ABC1\"\ncert = \"c.pem\"\n").unwrap();
        let s = MeshSettings::resolve(MeshSettings::default(), Some(&path)).unwrap();
        assert_eq!(s.cert, Some(dir.path().join("c.pem")));
        assert_eq!(s.chunk_size, Some(mesh_client::DEFAULT_CHUNK_SIZE));
    }
}
