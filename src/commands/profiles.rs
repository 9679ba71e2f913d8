//! `agentrun profiles`: the profiles found on the search path, escaped for the terminal.

use super::{Fail, plan};
use crate::profile::search;

/// List the profiles on the search path, the first of each name winning.
pub fn profiles() -> Result<u8, Fail> {
    let ctx = plan::context()?;
    let dirs = plan::search_dirs(&ctx);
    let found = search::list(&dirs);
    if found.is_empty() {
        let looked: Vec<String> = dirs
            .iter()
            .map(|d| search::printable(&d.display().to_string()))
            .collect();
        println!("no profiles found; searched {}", looked.join(", "));
    }
    // Names come from directory listings a child may have written to: escaped.
    for (name, path, shadowed) in found {
        let note = if shadowed {
            "  (shadowed by an earlier one)"
        } else {
            ""
        };
        let name = search::printable(&name);
        let path = search::printable(&path.display().to_string());
        println!("{name:<20} {path}{note}");
    }
    Ok(0)
}
