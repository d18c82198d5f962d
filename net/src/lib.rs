//! retcd's client-facing layer: etcd's v3 protobuf/gRPC API and its error
//! table.
//!
//! - [`pb`]: the generated etcd v3 messages, servers and clients;
//! - [`codec`]: the gRPC codec they use (prost's, with the encode buffer sized once);
//! - [`errors`]: etcd's gRPC errors with their exact codes and messages.

#[cfg(feature = "server")]
pub mod admission;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod authority;
#[cfg(feature = "server")]
pub mod cluster;
pub mod codec;
#[cfg(feature = "server")]
pub mod concurrency;
#[cfg(feature = "server")]
pub mod context;
#[cfg(feature = "server")]
pub mod corruption;
#[cfg(feature = "server")]
pub mod election;
pub mod errors;
#[cfg(feature = "server")]
pub mod grpc_limit;
#[cfg(feature = "server")]
pub mod hpack;
#[cfg(feature = "server")]
pub mod http;
pub mod keys;
#[cfg(feature = "server")]
pub mod kv;
#[cfg(feature = "server")]
pub mod learner;
#[cfg(feature = "server")]
pub mod lease;
#[cfg(feature = "server")]
pub mod lock;
#[cfg(feature = "server")]
pub mod maintenance;
#[cfg(feature = "server")]
pub mod metrics;
pub mod pb;
#[cfg(feature = "server")]
pub mod peer;
#[cfg(feature = "server")]
pub mod profile;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "server")]
pub mod timer;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod watch;

/// Every gRPC service of a member, for one core's listeners. Each service accepts messages up to
/// etcd's gRPC limit: --max-request-bytes plus 512 KiB of framing (larger ones are refused from
/// their length prefix, before they are buffered).
#[cfg(feature = "server")]
pub fn routes(ctx: std::sync::Arc<context::Ctx>) -> tonic::service::Routes {
    use learner::LearnerGuard;
    use pb::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer,
    };
    let limit = ctx.limits.max_request_bytes + (512 << 10);
    let status = ctx.status.clone();
    tonic::service::Routes::new(LearnerGuard::new(
        KvServer::new(kv::KvService::new(ctx.clone())).max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        MaintenanceServer::new(maintenance::MaintenanceService::new(ctx.clone()))
            .max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        LeaseServer::new(lease::LeaseService::new(ctx.clone())).max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        pb::etcdserverpb::watch_server::WatchServer::new(watch::WatchService::new(ctx.clone()))
            .max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        ClusterServer::new(cluster::ClusterService::new(ctx.clone()))
            .max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        pb::etcdserverpb::auth_server::AuthServer::new(auth::AuthService::new(ctx.clone()))
            .max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        pb::v3lockpb::lock_server::LockServer::new(lock::LockService::new(ctx.clone()))
            .max_decoding_message_size(limit),
        status.clone(),
    ))
    .add_service(LearnerGuard::new(
        pb::v3electionpb::election_server::ElectionServer::new(election::ElectionService::new(ctx))
            .max_decoding_message_size(limit),
        status,
    ))
}
