//! Generated protobuf types and tonic clients/servers for the containerd v1 API that berthd
//! serves, plus the encoded descriptor set used for gRPC server reflection.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

/// Encoded `FileDescriptorSet` of every compiled .proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));

/// Packs a message into `Any` under its bare full name (no `type.googleapis.com/` prefix),
/// as containerd's typeurl does, so `ctr events` and other clients can decode it.
pub fn to_any<M: prost::Name>(msg: &M) -> prost_types::Any {
    prost_types::Any { type_url: M::full_name(), value: prost::Message::encode_to_vec(msg) }
}

/// berth.* packages: Berth-only additions to the API.
pub mod berth {
    /// berth.shim.*: the task API of berth-shim.
    pub mod shim {
        /// berth.shim.v1.
        pub mod v1 {
            tonic::include_proto!("berth.shim.v1");
        }
    }
    /// berth.services.*.
    pub mod services {
        /// berth.services.gc.v1.
        pub mod gc {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("berth.services.gc.v1");
            }
        }
        /// berth.services.unpack.v1.
        pub mod unpack {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("berth.services.unpack.v1");
            }
        }
        /// berth.services.transfer.v1.
        pub mod transfer {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("berth.services.transfer.v1");
            }
        }
    }
}

/// io.containerd.cgroups.*: the cgroup statistics carried in `containerd.types.Metric`'s data.
pub mod io {
    /// io.containerd.
    pub mod containerd {
        /// io.containerd.cgroups.
        pub mod cgroups {
            /// io.containerd.cgroups.v1: cgroup v1 (and hybrid) hosts.
            pub mod v1 {
                tonic::include_proto!("io.containerd.cgroups.v1");
            }
            /// io.containerd.cgroups.v2: pure cgroup v2 hosts.
            pub mod v2 {
                tonic::include_proto!("io.containerd.cgroups.v2");
            }
        }
    }
}

/// google.rpc types.
pub mod google {
    /// google.rpc.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// containerd.* packages.
pub mod containerd {
    /// containerd.types.
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
    /// containerd.v1.types (task status and process info).
    pub mod v1 {
        /// containerd.v1.types.
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    /// containerd.events (event payloads carried in Any).
    pub mod events {
        tonic::include_proto!("containerd.events");
    }
    /// containerd.services.*.
    pub mod services {
        /// containerd.services.containers.v1.
        pub mod containers {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
        /// containerd.services.content.v1.
        pub mod content {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        /// containerd.services.diff.v1.
        pub mod diff {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        /// containerd.services.events.v1.
        pub mod events {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.events.v1");
            }
        }
        /// containerd.services.images.v1.
        pub mod images {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        /// containerd.services.introspection.v1.
        pub mod introspection {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.introspection.v1");
            }
        }
        /// containerd.services.leases.v1.
        pub mod leases {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        /// containerd.services.namespaces.v1.
        pub mod namespaces {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.namespaces.v1");
            }
        }
        /// containerd.services.snapshots.v1.
        pub mod snapshots {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
        /// containerd.services.tasks.v1.
        pub mod tasks {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.tasks.v1");
            }
        }
        /// containerd.services.version.v1.
        pub mod version {
            /// v1.
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::io::containerd::cgroups::{v1, v2};

    #[test]
    fn cgroup_metrics_pack_under_containerd_type_urls() {
        assert_eq!(crate::to_any(&v1::Metrics::default()).type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(crate::to_any(&v2::Metrics::default()).type_url, "io.containerd.cgroups.v2.Metrics");
    }
}
