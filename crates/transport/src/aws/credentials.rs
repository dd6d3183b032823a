//! Where the sink's credentials come from, and the types that carry them.
//!
//! The secret access key and the session token are held in [`Secret`], and [`Credentials`]
//! writes its `Debug` by hand, so that neither can reach a log line, an error or a call
//! record. An [`AssumeRole`] holds nothing secret.

use std::fmt;

/// A secret (a secret access key, a session token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the SDK.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the credentials come from.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// The SDK's default chain: environment, shared profile, web identity, container and
    /// instance metadata.
    #[default]
    DefaultChain,
    /// A named profile of the shared config and credentials files.
    Profile(String),
    /// An access key pair (and a session token, for temporary credentials).
    AccessKey {
        /// The access key id (not secret).
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
        /// The session token of temporary credentials.
        session_token: Option<Secret>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::DefaultChain => f.write_str("DefaultChain"),
            Credentials::Profile(name) => f.debug_tuple("Profile").field(name).finish(),
            Credentials::AccessKey {
                access_key_id,
                session_token,
                ..
            } => f
                .debug_struct("AccessKey")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"***")
                .field("session_token", &session_token.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

impl Credentials {
    /// An access key id's last four characters, as the AWS console shows a key: enough to
    /// tell which key, and all that messages show of it.
    pub fn key_id_ending(access_key_id: &str) -> String {
        let chars: Vec<char> = access_key_id.chars().collect();
        chars[chars.len().saturating_sub(4)..].iter().collect()
    }

    /// Where these credentials were looked for, for error messages.
    pub fn describe_source(&self) -> String {
        match self {
            Credentials::DefaultChain => "the default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, web identity, container and instance metadata)".into(),
            Credentials::Profile(name) => format!("profile {name:?} in ~/.aws/config and ~/.aws/credentials"),
            Credentials::AccessKey { access_key_id, .. } => format!(
                "the access key ending {} given in the configuration",
                Self::key_id_ending(access_key_id)
            ),
        }
    }
}

/// A role to assume on top of the base credentials, for a stream in another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The external ID the role's trust policy requires, if any.
    pub external_id: Option<String>,
    /// The session name (default `kinesync`).
    pub session_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwsKinesisSinkBuilder;

    #[test]
    fn secrets_never_show_in_debug() {
        let creds = Credentials::AccessKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("FwoGZXIvYXdzEXAMPLETOKEN")),
        };
        let builder = AwsKinesisSinkBuilder::new()
            .region("us-east-1")
            .credentials(creds.clone());
        for text in [
            format!("{creds:?}"),
            format!("{builder:?}"),
            format!("{:#?}", builder),
        ] {
            assert!(
                !text.contains("wJalrXUtnFEMI") && !text.contains("FwoGZXIvYXdz"),
                "{text}"
            );
            assert!(
                text.contains("AKIDEXAMPLE"),
                "the key id is not secret: {text}"
            );
        }
    }
}
