//! Compiles every `.proto` under `protos/` with protox (no system protoc) and generates
//! tonic clients and servers, plus one encoded descriptor set for gRPC reflection.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("protos");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=protos");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("berth_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `XClient::connect(url)` helpers: every client dials a unix socket through its own
        // connector, and the helper's name collides with berth.shim.v1.Task's Connect rpc.
        .build_transport(false)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        // Type names give every message `prost::Name`; events are packed into `Any` under their
        // full name (`containerd.events.NamespaceCreate`), the type URL containerd clients use.
        .compile_fds_with_config(fds, {
            let mut config = tonic_prost_build::Config::new();
            config.enable_type_names();
            config
        })?;
    Ok(())
}
