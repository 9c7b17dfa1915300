//! `[auth]`: the bearer tokens of the gRPC API, from the environment
//! (`BREAKERD_DATA_TOKEN`, `BREAKERD_ADMIN_TOKEN`), a file
//! (`auth.*_token_file`) or the config file (`auth.*_token`), in that order:
//! never from the command line, where any local user could read them in the
//! process list. Checked into the [`AuthConfig`] the auth middleware
//! enforces.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    cli::{ADMIN_TOKEN_ENV, DATA_TOKEN_ENV, EnvTokens},
    error::ConfigError,
};
use crate::{middleware::auth::AuthConfig, token::Token};

/// `[auth]` as written in the config file. Empty strings mean unset.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Token the `Breaker` service requires (the admin token works too).
    pub data_token: String,
    /// File whose content is the data-plane token (one trailing newline
    /// ignored); exclusive with `data_token`.
    pub data_token_file: String,
    /// Token the `Admin` service requires.
    pub admin_token: String,
    /// File whose content is the admin token; exclusive with `admin_token`.
    pub admin_token_file: String,
}

impl fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &str| {
            if s.is_empty() {
                "<unset>"
            } else {
                "<redacted>"
            }
        };
        f.debug_struct("AuthSection")
            .field("data_token", &secret(&self.data_token))
            .field("data_token_file", &self.data_token_file)
            .field("admin_token", &secret(&self.admin_token))
            .field("admin_token_file", &self.admin_token_file)
            .finish()
    }
}

impl AuthSection {
    /// Resolves and checks both tokens, `env` first.
    pub fn check(&self, env: &EnvTokens) -> Result<AuthConfig, ConfigError> {
        let data_token = resolve(
            DATA_TOKEN_ENV,
            env.data.as_deref(),
            ("auth.data_token", &self.data_token),
            ("auth.data_token_file", &self.data_token_file),
        )?;
        let admin_token = resolve(
            ADMIN_TOKEN_ENV,
            env.admin.as_deref(),
            ("auth.admin_token", &self.admin_token),
            ("auth.admin_token_file", &self.admin_token_file),
        )?;
        match (&data_token, &admin_token) {
            (Some(_), None) => Err(ConfigError::new(
                "auth.admin_token",
                "must be set when a data-plane token is (auth.data_token, auth.data_token_file \
                 or BREAKERD_DATA_TOKEN); without it the Admin service would stay open to every client",
            )),
            (Some((_, data)), Some((key, admin))) if data == admin => Err(ConfigError::new(
                *key,
                "must differ from the data-plane token, or every node could change circuits",
            )),
            _ => Ok(AuthConfig {
                data_token: data_token.map(|(_, t)| t),
                admin_token: admin_token.map(|(_, t)| t),
            }),
        }
    }
}

/// One token from the environment, a file or inline, with the key it came
/// from (for later errors).
fn resolve(
    env_name: &'static str,
    env: Option<&str>,
    (inline_key, inline): (&'static str, &str),
    (file_key, file): (&'static str, &str),
) -> Result<Option<(&'static str, Token)>, ConfigError> {
    if !inline.is_empty() && !file.is_empty() {
        return Err(ConfigError::new(
            file_key,
            format!("set either {inline_key} or {file_key}, not both"),
        ));
    }
    let (key, text) = if let Some(v) = env {
        if v.is_empty() {
            // An empty secret usually means a failed secret injection:
            // refusing beats silently serving without authentication.
            return Err(ConfigError::new(
                env_name,
                "is set but empty (unset it to turn the token off)",
            ));
        }
        (env_name, v.to_owned())
    } else if !file.is_empty() {
        let text = std::fs::read_to_string(Path::new(file))
            .map_err(|e| ConfigError::new(file_key, format!("cannot read {file:?}: {e}")))?;
        // Editors and `echo` add a final newline; nothing else is trimmed.
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_owned();
        if text.is_empty() {
            return Err(ConfigError::new(file_key, format!("{file:?} is empty")));
        }
        (file_key, text)
    } else if !inline.is_empty() {
        (inline_key, inline.to_owned())
    } else {
        return Ok(None);
    };
    Token::new(&text)
        .map(|t| Some((key, t)))
        .map_err(|reason| ConfigError::new(key, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = "data-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn auth() -> AuthConfig {
        AuthSection {
            data_token: DATA.into(),
            admin_token: ADMIN.into(),
            ..Default::default()
        }
        .check(&EnvTokens::default())
        .unwrap()
    }

    #[test]
    fn sources_env_then_file_then_inline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        std::fs::write(&file, "file-token-0123456789\n").unwrap();
        let section = AuthSection {
            admin_token_file: file.display().to_string(),
            ..Default::default()
        };
        let from_file = section.check(&EnvTokens::default()).unwrap();
        assert!(
            from_file
                .admin_token
                .unwrap()
                .matches(b"file-token-0123456789")
        );
        let env = EnvTokens {
            admin: Some("env-token-0123456789".into()),
            data: None,
        };
        let from_env = section.check(&env).unwrap();
        assert!(
            from_env
                .admin_token
                .unwrap()
                .matches(b"env-token-0123456789")
        );
    }

    #[test]
    fn bad_tokens_name_their_key() {
        let check = |s: AuthSection, env: EnvTokens| s.check(&env).unwrap_err();
        let none = EnvTokens::default;
        let short = check(
            AuthSection {
                admin_token: "short".into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(short.key, "auth.admin_token");
        assert!(short.reason.contains("16"), "{short}");
        let err = check(
            AuthSection {
                data_token: DATA.into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token");
        let err = check(
            AuthSection {
                data_token: ADMIN.into(),
                admin_token: ADMIN.into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token");
        let err = check(
            AuthSection {
                admin_token: ADMIN.into(),
                admin_token_file: "/x".into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token_file");
        let err = check(
            AuthSection {
                admin_token_file: "/nonexistent/breakerd/token".into(),
                ..Default::default()
            },
            none(),
        );
        assert_eq!(err.key, "auth.admin_token_file");
        assert!(err.reason.contains("cannot read"), "{err}");
        let err = check(
            AuthSection::default(),
            EnvTokens {
                admin: Some(String::new()),
                data: None,
            },
        );
        assert_eq!(err.key, ADMIN_TOKEN_ENV);
        let err = check(
            AuthSection::default(),
            EnvTokens {
                admin: Some("short".into()),
                data: None,
            },
        );
        assert_eq!(err.key, ADMIN_TOKEN_ENV);
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let section = AuthSection {
            data_token: DATA.into(),
            admin_token: ADMIN.into(),
            ..Default::default()
        };
        let env = EnvTokens {
            data: Some(DATA.into()),
            admin: Some(ADMIN.into()),
        };
        for text in [
            format!("{section:?}"),
            format!("{env:?}"),
            format!("{:?}", auth()),
        ] {
            assert!(!text.contains("token-0123"), "{text}");
        }
    }
}
