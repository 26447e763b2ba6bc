//! `berthctl image ls`: name, target digest, size and platforms of each image.

use std::collections::{BTreeSet, HashSet};

use anyhow::Result;
use berth_proto::containerd::services::images::v1::{Image, ListImagesRequest};
use clap::Args;

use super::remote::Remote;
use super::{human_size, resolve, PlatformChoice};
use crate::archive::oci::{ConfigPlatform, Descriptor, MEDIA_TYPE_DOCKER_CONFIG};
use crate::client::{status_error, Client};
use crate::table::Table;

/// Arguments of `image ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print only names.
    #[arg(long, short)]
    pub quiet: bool,
    /// Filters such as `name~=busybox` or `labels."k"==v` (any one may match).
    pub filters: Vec<String>,
}

/// Size (target, indexes, present manifests with their configs and layers, each blob once)
/// and platforms of an image.
async fn summarize(remote: &mut Remote<'_>, image: &Image) -> Result<(u64, String)> {
    let Some(target) = image.target.as_ref().map(Descriptor::from_proto) else {
        return Ok((0, "-".into()));
    };
    let tree = resolve(remote, &target, &PlatformChoice::All, false).await?;
    let mut seen = HashSet::new();
    let mut size = 0u64;
    let mut count = |d: &Descriptor| {
        if seen.insert(d.digest.clone()) {
            size += d.size.max(0) as u64;
        }
    };
    count(&target);
    tree.indexes.iter().for_each(|(d, _)| count(d));
    let mut platforms = BTreeSet::new();
    for m in &tree.manifests {
        count(&m.desc);
        count(&m.manifest.config);
        m.manifest.layers.iter().for_each(&mut count);
        let platform = match &m.desc.platform {
            Some(p) => p.to_string(),
            None => {
                let mut config = m.manifest.config.clone();
                if config.media_type.is_empty() {
                    config.media_type = MEDIA_TYPE_DOCKER_CONFIG.into();
                }
                let blob = remote.read_all(&config.digest, config.size, crate::archive::MAX_METADATA_SIZE).await?;
                let p: ConfigPlatform = serde_json::from_slice(&blob).unwrap_or_default();
                p.platform().to_string()
            }
        };
        platforms.insert(platform);
    }
    let platforms = if platforms.is_empty() { "-".into() } else { platforms.into_iter().collect::<Vec<_>>().join(",") };
    Ok((size, platforms))
}

/// Runs `image ls`.
pub async fn run(client: &Client, args: LsArgs) -> Result<()> {
    let mut remote = Remote::new(client);
    let req = remote.request(ListImagesRequest { filters: args.filters });
    let mut images = remote.images.list(req).await.map_err(status_error)?.into_inner().images;
    images.sort_by(|a, b| a.name.cmp(&b.name));
    if args.quiet {
        for img in images {
            println!("{}", img.name);
        }
        return Ok(());
    }
    let mut table = Table::new(&["NAME", "DIGEST", "SIZE", "PLATFORMS"]);
    for img in &images {
        let digest = img.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default();
        // An image whose content is gone still lists, with what could be read.
        let (size, platforms) = match summarize(&mut remote, img).await {
            Ok(v) => (human_size(v.0), v.1),
            Err(e) => ("-".into(), format!("({e:#})")),
        };
        table.row(vec![img.name.clone(), digest, size, platforms]);
    }
    table.print()?;
    Ok(())
}
