//! `berthctl image tag SRC DST`: a second name for the same target.

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::normalize_name;
use super::remote::Remote;
use crate::archive::oci::Descriptor;
use crate::client::Client;

/// Arguments of `image tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Existing image.
    pub source: String,
    /// New names.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Repoint names that already exist.
    #[arg(long, short)]
    pub force: bool,
}

/// Runs `image tag`.
pub async fn run(client: &Client, args: TagArgs) -> Result<()> {
    let mut remote = Remote::new(client);
    let source = normalize_name(&args.source)?;
    let image = remote.get_image(&source).await?.ok_or_else(|| anyhow!("image {source:?}: not found"))?;
    let target =
        image.target.as_ref().map(Descriptor::from_proto).ok_or_else(|| anyhow!("image {source} has no target"))?;
    for raw in &args.targets {
        let name = normalize_name(raw)?;
        if !args.force && remote.get_image(&name).await?.is_some() {
            bail!("image {name:?}: already exists (use --force to repoint it)");
        }
        remote.put_image(&name, &target, image.labels.clone()).await?;
        println!("{name}");
    }
    Ok(())
}
