//! The Azure SDK side of `azure-kv:`: built only with the `azure` feature.

use super::{AzureError, AzureSettings};
use crate::context::Context;
use crate::profile::AzureRef;
use secrecy::SecretString;

/// The Key Vault credential of a run (one for every vault), with its settings.
pub(crate) struct Azure {
    settings: AzureSettings,
}

impl Azure {
    /// Build the credential (client secret, workload identity, managed identity, Azure CLI).
    pub(crate) async fn connect(
        settings: &AzureSettings,
        _ctx: &Context,
    ) -> Result<Azure, AzureError> {
        Ok(Azure {
            settings: settings.clone(),
        })
    }

    /// `GetSecret`. Always a fresh call: nothing is cached.
    pub(crate) async fn read(&self, r: &AzureRef) -> Result<SecretString, AzureError> {
        Err(AzureError::Other {
            secret: format!("{}/{}", r.vault, r.name),
            place: self.settings.vault_url(&r.vault),
            msg: "not built yet (issue 15 scaffold)".into(),
        })
    }
}
