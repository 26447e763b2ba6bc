//! `berthctl image inspect NAME`: the image record, its index (if any), and the chosen
//! platform's manifest and config, as one JSON document.

use std::time::SystemTime;

use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::{json, Value};

use super::remote::Remote;
use super::{normalize_name, resolve, PlatformChoice};
use crate::archive::oci::Descriptor;
use crate::archive::MAX_METADATA_SIZE;
use crate::client::Client;
use crate::commands::leases::rfc3339;

/// Arguments of `image inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image name.
    pub name: String,
    /// Platform whose manifest and config to show (os/arch[/variant]); default: this host's.
    #[arg(long)]
    pub platform: Option<String>,
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(|t| SystemTime::try_from(*t).ok()).map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// A blob as JSON: parsed when it is JSON, else null.
async fn json_blob(remote: &mut Remote<'_>, desc: &Descriptor) -> Result<Value> {
    let blob = remote.read_all(&desc.digest, desc.size, MAX_METADATA_SIZE).await?;
    Ok(serde_json::from_slice(&blob).unwrap_or(Value::Null))
}

/// Runs `image inspect`.
pub async fn run(client: &Client, args: InspectArgs) -> Result<()> {
    let mut remote = Remote::new(client);
    let name = normalize_name(&args.name)?;
    let image = remote.get_image(&name).await?.ok_or_else(|| anyhow!("image {name:?}: not found"))?;
    let target =
        image.target.as_ref().map(Descriptor::from_proto).ok_or_else(|| anyhow!("image {name} has no target"))?;
    let choice = PlatformChoice::from_flags(false, args.platform.as_deref())?;
    let tree = resolve(&mut remote, &target, &choice, false).await?;
    let labels: serde_json::Map<String, Value> =
        image.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut out = json!({
        "name": image.name,
        "labels": labels,
        "target": target,
        "createdAt": time(image.created_at.as_ref()),
        "updatedAt": time(image.updated_at.as_ref()),
    });
    if let Some((desc, _)) = tree.indexes.first() {
        out["index"] = json_blob(&mut remote, desc).await?;
    }
    if let Some(m) = tree.manifests.first() {
        out["manifestDescriptor"] = serde_json::to_value(&m.desc)?;
        out["manifest"] = json_blob(&mut remote, &m.desc).await?;
        out["config"] = json_blob(&mut remote, &m.manifest.config).await?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
