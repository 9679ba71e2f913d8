//! `permissions.scoped` (being built: a stub until it lands).

use super::fetch::Got;
use crate::context::Context;
use crate::preflight::{Check, Status};
use crate::profile::Profile;

pub fn scoped(_profile: &Profile, _ctx: &Context, _got: &[Got]) -> Check {
    Check::new("permissions.scoped", Status::Skip, "not built yet", "")
}
