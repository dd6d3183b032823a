//! `[destination]` as a Kinesis stream reached through the AWS SDK: credentials from the
//! config (names of environment variables, a profile, a role to assume) and the sink built
//! from them. Only with the `aws` feature (on by default).

use std::sync::Arc;

use kinesync_transport::{
    AssumeRole, AwsKinesisSink, CallObserver, Credentials, Secret, StreamName,
};

use super::Destination;
use crate::Error;
use crate::config::{AuthKind, Config, DestinationConfig};

/// The sink for `dest`, every call it makes reported to `observer` (STS's too).
pub(super) async fn connect(
    config: &Config,
    dest: &DestinationConfig,
    stream: StreamName,
    observer: Option<Arc<dyn CallObserver>>,
) -> Result<Destination, Error> {
    let (credentials, mut described) = base_credentials(config, dest)?;
    let mut builder = AwsKinesisSink::builder().credentials(credentials);
    if let Some(observer) = observer {
        builder = builder.observer(observer);
    }
    if let Some(region) = &dest.region {
        builder = builder.region(region);
    }
    if let Some(url) = &dest.endpoint_url {
        builder = builder.endpoint_url(url);
    }
    if let Some(url) = &dest.sts_endpoint_url {
        builder = builder.sts_endpoint_url(url);
    }
    if dest.auth.kind == AuthKind::AssumeRole {
        let role_arn = dest.auth.role_arn.clone().ok_or_else(|| {
            config.invalid("[destination.auth] kind = \"assume_role\" needs role_arn")
        })?;
        described = format!("role {role_arn} assumed with {described}");
        builder = builder.assume_role(AssumeRole {
            role_arn,
            external_id: dest.auth.external_id.clone(),
            session_name: dest.auth.session_name.clone(),
        });
    }
    let sink = builder
        .build()
        .await
        .map_err(|e| config.invalid(format!("[destination] {e}")))?;
    let mut location = format!("region {}", sink.region());
    if let Some(url) = &dest.endpoint_url {
        location.push_str(&format!(", endpoint {url}"));
    }
    Ok(Destination {
        sink: Arc::new(sink),
        stream,
        location,
        credentials: described,
        simulated: None,
    })
}

fn env(config: &Config, setting: &str, name: &Option<String>) -> Result<String, Error> {
    let name = name
        .as_deref()
        .ok_or_else(|| config.invalid(format!("[destination.auth] needs {setting}")))?;
    std::env::var(name).map_err(|_| {
        if crate::config::looks_like_a_variable(name) {
            config.invalid(format!(
                "[destination.auth] {setting} names the environment variable {name}, which is not set"
            ))
        } else {
            // A secret pasted where its variable's name goes: never echo it.
            config.invalid(format!(
                "[destination.auth] {setting} must be the name of an environment variable (such as AWS_SECRET_ACCESS_KEY), and its value does not look like one: if it is the secret itself, remove it from the config (and rotate it if the file was shared), put it in an environment variable, and name that variable here (the value is not shown)"
            ))
        }
    })
}

fn base_credentials(
    config: &Config,
    dest: &DestinationConfig,
) -> Result<(Credentials, String), Error> {
    let auth = &dest.auth;
    let access_key = || -> Result<(Credentials, String), Error> {
        let access_key_id = env(config, "access_key_id_env", &auth.access_key_id_env)?;
        let secret = env(config, "secret_access_key_env", &auth.secret_access_key_env)?;
        let token = match &auth.session_token_env {
            Some(_) => Some(Secret::new(env(
                config,
                "session_token_env",
                &auth.session_token_env,
            )?)),
            None => None,
        };
        let described = format!(
            "access key ending {} from ${}",
            Credentials::key_id_ending(&access_key_id),
            auth.access_key_id_env.as_deref().unwrap_or_default()
        );
        Ok((
            Credentials::AccessKey {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: token,
            },
            described,
        ))
    };
    let profile = |name: &str| -> Result<(Credentials, String), Error> {
        profile_is_defined(config, name)?;
        Ok((
            Credentials::Profile(name.to_owned()),
            format!("profile {name:?}"),
        ))
    };
    match auth.kind {
        AuthKind::Default => Ok((Credentials::DefaultChain, "the default credential chain".into())),
        AuthKind::Profile => {
            let name = auth.profile.as_deref().ok_or_else(|| config.invalid("[destination.auth] kind = \"profile\" needs profile = \"NAME\""))?;
            profile(name)
        }
        AuthKind::AccessKey => access_key(),
        AuthKind::AssumeRole => match (&auth.profile, auth.access_key_id_env.is_some() || auth.secret_access_key_env.is_some()) {
            (Some(_), true) => Err(config.invalid("[destination.auth] names both a profile and an access key as the base for assume_role; keep one")),
            (Some(name), false) => profile(name),
            // Both halves of the key are required: `env` names the one that is missing.
            (None, true) => access_key(),
            (None, false) => Ok((Credentials::DefaultChain, "the default credential chain".into())),
        },
    }
}

/// The AWS config and credentials files a profile is looked for in, as the SDK finds them:
/// `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`, or `~/.aws/config` and
/// `~/.aws/credentials`.
fn profile_files() -> Vec<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |variable: &str, default: &str| {
        std::env::var_os(variable)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    [
        file("AWS_CONFIG_FILE", "config"),
        file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Refuses a profile that neither file defines, before any call: the SDK would otherwise go
/// on down its chain (to the instance metadata service) and report that failure instead.
/// Only section headers are read (`[profile NAME]`, `[NAME]`); no value is ever shown.
fn profile_is_defined(config: &Config, name: &str) -> Result<(), Error> {
    let files = profile_files();
    let defined = files.iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|line| {
                let header = line.trim();
                let Some(inner) = header.strip_prefix('[').and_then(|h| h.strip_suffix(']')) else {
                    return false;
                };
                let inner = inner.trim();
                inner == name || inner.strip_prefix("profile ").map(str::trim) == Some(name)
            })
        })
    });
    if defined {
        return Ok(());
    }
    let looked: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    Err(config.invalid(format!(
        "[destination.auth] profile {name:?} is not defined in {} (set AWS_CONFIG_FILE or AWS_SHARED_CREDENTIALS_FILE to look elsewhere)",
        if looked.is_empty() {
            "any AWS config file (HOME is not set)".to_owned()
        } else {
            looked.join(" or ")
        }
    )))
}
