//! A client for NHS England's MESH API (Message Exchange for Social Care and Health).
//!
//! MESH moves files between NHS organisations' mailboxes over HTTPS with mutual TLS. This crate
//! speaks its REST API (v2) as NHS England's Python `mesh-client` does: the `NHSMESH`
//! authorization header, chunked and optionally gzip'd uploads streamed from disk, inbox paging,
//! chunked downloads streamed to disk, acknowledgement, tracking and endpoint lookup, with
//! retries where a request is safe to repeat. It knows nothing of what the files contain.
//!
//! ```no_run
//! use mesh_client::{ClientConfig, Environment, MeshClient, SendOptions};
//! use std::path::Path;
//!
//! # async fn demo() -> Result<(), mesh_client::Error> {
//! let sender = MeshClient::new(
//!     ClientConfig::default()
//!         .with_environment(Environment::Int)
//!         .with_mailbox("X26ABC1", "password")
//!         .with_shared_key("TestKey")
//!         .with_client_certificate("client.crt", "client.key")
//!         .with_ca_bundle("nhs-int-ca-bundle.pem"),
//! )?;
//! sender.handshake().await?;
//! let opts = SendOptions {
//!     to: "X26ABC2".into(),
//!     workflow_id: "TEST_WORKFLOW".into(),
//!     local_id: Some("batch-42".into()),
//!     compress: true,
//!     ..SendOptions::default()
//! };
//! let id = sender
//!     .send_file(Path::new("extract.dat"), &opts, &|sent| eprintln!("{sent} bytes sent"))
//!     .await?;
//! println!("sent as {id}: {}", sender.track(&id).await?.status);
//!
//! // On the receiving side:
//! # let receiver = &sender;
//! for id in receiver.list_inbox(None).await? {
//!     let meta = receiver.download_to(&id, Path::new(&format!("{id}.dat"))).await?;
//!     println!("{id}: {} bytes from {:?}", meta.bytes, meta.sender);
//!     receiver.acknowledge(&id).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Section numbers in the docs refer to the team's `mesh-protocol.md`.

mod auth;
mod client;
mod config;
mod error;
mod inbox;
mod lookup;
mod outbox;
mod tracking;

pub use client::MeshClient;
pub use config::{
    ClientConfig, Environment, DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESS_LEVEL, INT_URL, LIVE_URL,
    MAX_CHUNK_SIZE,
};
pub use error::{Error, MeshErrorDetail};
pub use inbox::{MessageMeta, MessageType, Piece};
pub use line_gzip::{gzip, MAX_GZIP_LEVEL};
pub use lookup::Endpoint;
pub use outbox::{ChunkPlan, SendOptions};
pub use tracking::{LocalIdLookup, LocalIdTracking, Tracking};
