//! The Google Cloud client side of `gcp-sm:`: built only with the `gcp` feature.

use super::{GcpError, GcpSettings};
use crate::context::Context;
use crate::profile::GcpRef;
use secrecy::SecretString;

/// The Secret Manager client of a run, with its settings (for messages and limits).
pub(crate) struct Gcp {
    settings: GcpSettings,
}

impl Gcp {
    /// Build the client: credentials from the settings, the endpoint, limits.
    pub(crate) async fn connect(settings: &GcpSettings, _ctx: &Context) -> Result<Gcp, GcpError> {
        Ok(Gcp {
            settings: settings.clone(),
        })
    }

    /// `AccessSecretVersion`. Always a fresh call: nothing is cached.
    pub(crate) async fn read(&self, r: &GcpRef) -> Result<SecretString, GcpError> {
        let project = self.settings.project.as_deref().unwrap_or("");
        Err(GcpError::Other {
            secret: r.resource(project),
            place: self.settings.place(),
            msg: "not built yet (issue 15 scaffold)".into(),
        })
    }
}
