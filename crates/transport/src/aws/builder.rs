//! Building an [`AwsKinesisSink`]: the settings, checked before anything is sent, and the SDK
//! client configured from them (retries off, timeouts, credentials, an assumed role).

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::assumed_role::ObservedAssumeRole;
use super::credentials::{AssumeRole, Credentials};
use super::sink::AwsKinesisSink;
use crate::observe::CallObserver;

/// Why an [`AwsKinesisSink`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No region was given.
    #[error(
        "a region is required (for example region = \"us-east-1\"); kinesync does not guess it"
    )]
    MissingRegion,
    /// The region is not a region name.
    #[error("{0:?} is not an AWS region name (for example \"us-east-1\", \"eu-west-2\")")]
    InvalidRegion(String),
    /// The endpoint URL is not an http(s) URL.
    #[error("endpoint URL {0:?} must start with http:// or https://")]
    InvalidEndpoint(String),
    /// The role ARN is not an IAM role ARN.
    #[error("{0:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")]
    InvalidRoleArn(String),
}

/// Builds an [`AwsKinesisSink`]: region (required, checked here), optional endpoint URL,
/// timeouts, credentials, an optional role to assume, and an optional call observer.
#[derive(Debug, Clone)]
pub struct AwsKinesisSinkBuilder {
    region: Option<String>,
    endpoint_url: Option<String>,
    sts_endpoint_url: Option<String>,
    credentials: Credentials,
    assume_role: Option<AssumeRole>,
    connect_timeout: Duration,
    operation_timeout: Duration,
    observer: Option<Arc<dyn CallObserver>>,
}

impl Default for AwsKinesisSinkBuilder {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            sts_endpoint_url: None,
            credentials: Credentials::DefaultChain,
            assume_role: None,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            observer: None,
        }
    }
}

impl AwsKinesisSinkBuilder {
    /// A builder with the default credential chain and timeouts (5 s to connect, 30 s a call).
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's region (required).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends Kinesis calls to this URL instead of the region's endpoint (a VPC endpoint, or a
    /// local stand-in such as kinesalite).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Sends STS calls (for [`AssumeRole`]) to this URL instead of the region's STS endpoint.
    pub fn sts_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.sts_endpoint_url = Some(url.into());
        self
    }

    /// Where the base credentials come from.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// A role to assume with the base credentials.
    pub fn assume_role(mut self, role: AssumeRole) -> Self {
        self.assume_role = Some(role);
        self
    }

    /// How long to wait for a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one call may take in all.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Receives a record of every call.
    pub fn observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Checks the settings and builds the sink. Credentials are resolved lazily, on the first
    /// call; `kinesync check` makes that call to find out early.
    pub async fn build(self) -> Result<AwsKinesisSink, BuildError> {
        let region = self.region.clone().ok_or(BuildError::MissingRegion)?;
        if !is_region_name(&region) {
            return Err(BuildError::InvalidRegion(region));
        }
        for url in [&self.endpoint_url, &self.sts_endpoint_url]
            .into_iter()
            .flatten()
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(BuildError::InvalidEndpoint(url.clone()));
            }
        }
        if let Some(role) = &self.assume_role
            && !(role.role_arn.starts_with("arn:") && role.role_arn.contains(":role/"))
        {
            return Err(BuildError::InvalidRoleArn(role.role_arn.clone()));
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_timeout(self.operation_timeout)
                    .build(),
            );
        loader = match &self.credentials {
            Credentials::DefaultChain => loader,
            Credentials::Profile(name) => loader.profile_name(name),
            Credentials::AccessKey {
                access_key_id,
                secret_access_key,
                session_token,
            } => loader.credentials_provider(aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key.expose(),
                session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "kinesync",
            )),
        };
        let base: SdkConfig = loader.load().await;
        let mut config = aws_sdk_kinesis::config::Builder::from(&base);
        if let Some(role) = &self.assume_role {
            let mut sts = base.to_builder();
            if let Some(url) = &self.sts_endpoint_url {
                sts = sts.endpoint_url(url);
            }
            let mut provider = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
                .session_name(
                    role.session_name
                        .clone()
                        .unwrap_or_else(|| "kinesync".into()),
                )
                .configure(&sts.build());
            if let Some(id) = &role.external_id {
                provider = provider.external_id(id);
            }
            let provider = provider.build().await;
            config = match &self.observer {
                Some(observer) => config.credentials_provider(ObservedAssumeRole {
                    inner: provider,
                    observer: observer.clone(),
                }),
                None => config.credentials_provider(provider),
            };
        }
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url);
        }
        Ok(AwsKinesisSink {
            client: aws_sdk_kinesis::Client::from_conf(config.build()),
            region,
            endpoint: self.endpoint_url.clone(),
            credentials: self.credentials.describe_source(),
            assumed_role: self.assume_role.as_ref().map(|r| r.role_arn.clone()),
            observer: self.observer,
        })
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, ...
fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-4",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "us east 1",
            "useast1",
            "us-east-1a",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn build_checks_settings_up_front() {
        assert_eq!(
            AwsKinesisSinkBuilder::new().build().await.unwrap_err(),
            BuildError::MissingRegion
        );
        assert_eq!(
            AwsKinesisSinkBuilder::new()
                .region("US-East-1")
                .build()
                .await
                .unwrap_err(),
            BuildError::InvalidRegion("US-East-1".into())
        );
        assert!(matches!(
            AwsKinesisSinkBuilder::new()
                .region("us-east-1")
                .endpoint_url("localhost:4567")
                .build()
                .await,
            Err(BuildError::InvalidEndpoint(_))
        ));
        let role = AssumeRole {
            role_arn: "arn:aws:iam::123456789012:user/x".into(),
            external_id: None,
            session_name: None,
        };
        assert!(matches!(
            AwsKinesisSinkBuilder::new()
                .region("us-east-1")
                .assume_role(role)
                .build()
                .await,
            Err(BuildError::InvalidRoleArn(_))
        ));
    }
}
