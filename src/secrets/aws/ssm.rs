//! AWS Systems Manager Parameter Store: `aws-ssm:NAME[#KEY]` (`?version=N`, `?label=L`,
//! `?region=`). `GetParameter` with `WithDecryption`, on the region's configuration that
//! `aws-sm:` uses too (`[aws]`, the same credential chain).

use super::client::{Aws, Call};
use super::{AwsError, AwsService};
use crate::profile::SsmRef;
use secrecy::SecretString;

/// The Parameter Store reads of one region: the region's [`Aws`] configuration.
#[derive(Clone)]
pub(crate) struct Ssm(pub(crate) Aws);

impl Ssm {
    /// `GetParameter` with decryption, the version or label as the name's selector
    /// (`NAME:3`, `NAME:prod`). Always a fresh call: nothing is cached.
    pub(crate) async fn read(&self, r: &SsmRef) -> Result<SecretString, AwsError> {
        let aws = &self.0;
        let call = Call {
            secret: format!("aws-ssm {}", r.name),
            place: &aws.place,
            settings: &aws.settings,
            service: AwsService::ParameterStore,
        };
        let (selector, what) = match (r.version, &r.label) {
            (Some(v), _) => (format!(":{v}"), format!(" (version {v})")),
            (None, Some(l)) => (format!(":{l}"), format!(" (label {l})")),
            (None, None) => (String::new(), String::new()),
        };
        let req = aws
            .ssm
            .get_parameter()
            .name(format!("{}{selector}", r.name))
            .with_decryption(true);
        let out = call.send(req.send(), &what).await?;
        let Some(text) = out.parameter().and_then(|p| p.value()) else {
            return Err(call.other("the parameter has no value"));
        };
        call.finish(text.to_string(), r.key.as_deref())
    }
}
