//! `mock-mesh`: a MESH API v1/v2 server (NHS England's "Message Exchange for Social Care and
//! Health") that NHS England's own `mesh-client` cannot tell from the real one, with the
//! National Data Opt-out POS workflow built in. Protocol facts: `mesh-protocol.md`; POS facts:
//! `ndop-domain.md` §2–4.
//!
//! Embed it on an ephemeral port:
//! ```no_run
//! # async fn demo() -> Result<(), mock_mesh::Error> {
//! let mesh = mock_mesh::MockMesh::start(mock_mesh::Config::default().with_mailbox("X26NDOP1", "pw")).await?;
//! println!("{}", mesh.base_url()); // http://127.0.0.1:PORT
//! mesh.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Replies of the POS
//! A complete DATA message with `Mex-WorkflowID: SPINE_NTT_UPHOLDING` sent to a POS mailbox
//! (`X26OT154` INT, `X26HC065` LIVE) is collected (acknowledged) by the POS, which then puts
//! two messages into the sender's inbox (see [`pos`] for the exact rules):
//!
//! | header | 1. job created | 2. result |
//! |---|---|---|
//! | `Mex-From` | the POS mailbox | the POS mailbox |
//! | `Mex-To` | the sender | the sender |
//! | `Mex-WorkflowID` | `SPINE_NTT_UPHOLDING` | `SPINE_NTT_UPHOLDING` |
//! | `Mex-Subject` | `SUCCESS` | the submission's `Mex-Subject` (absent if it had none) |
//! | `Mex-LocalID` | the submission's `Mex-LocalID` | the submission's `Mex-LocalID` |
//! | `Mex-FileName` | `<message id>.dat` (default) | the submission's `Mex-FileName` (else `<message id>.dat`) |
//! | `Mex-Content-Type` | `application/json` | absent |
//! | body | one line of JSON: `status` `pending` or `failed`, `stages`, `metadata.request.extra.local_id` … | the cleaned file, or `The file contains one or more invalid NHS Numbers.` + line ending |
//!
//! Both replies are ordinary `DATA` messages in the sender's inbox. Match them to the request by
//! `Mex-LocalID` (absent if the submission had none; then by `Mex-Subject`, which the result
//! echoes); tell them apart by `Mex-Subject: SUCCESS` and `Mex-Content-Type: application/json`
//! (job created) versus the body (result: NHS-number lines, or the one error line). The result
//! is cut into chunks of [`Config::pos_chunk_bytes`] (`Mex-Chunk-Range: n:N`, 206 until the last
//! chunk), like any large message; if [`PosConfig::result_encoding`] says gzip, each chunk is
//! stored as one gzip member of its content: a client that sends `Accept-Encoding: gzip` gets
//! it with `Content-Encoding: gzip`, any other the content (as for a gzip'd upload, §8 of the
//! protocol notes). In the sender's tracking the submission turns `acknowledged`
//! as soon as the POS has collected it. No MESH collect report is sent.
//!
//! The result follows the job-created message after [`PosConfig::delay`]. A job whose stages
//! fail (empty file; same content already submitted by this sender to this POS mailbox) has
//! `status: failed` and no result message. With a disk store a job interrupted by a restart is
//! resumed: the job-created message is not sent twice and the result still comes.
//!
//! # The NDOP FHIR API
//! Under `/STU3/` the same server mocks NHS England's National Data Opt-out FHIR API
//! (`ndop-fhir.md`): `metadata`, `GET Consent?patient=…`, `POST Consent` (201 + `Location`; 405
//! `MSG_RESOURCE_ID_FAIL` with an id, 422 `DUPLICATE_REJECTED` for a second Consent of a
//! patient), `PUT Consent/{id}` (a new version; 400/404/422), `GET Consent/_history?patient=…`
//! and `GET Consent/{id}/_history/{vid}`, FHIR JSON only (XML: 406). Every request needs the
//! Spine headers (`Ssp-TraceID`, `Ssp-From`, `Ssp-To`, `Ssp-InteractionID`) and an unsigned JWT
//! (`Authorization: Bearer`) with the documented claims; refusals are `OperationOutcome`s with
//! Spine error codes, and a Consent that breaks an NDOP-Consent-1 rule is refused naming the
//! element. Consents are durable in the store directory (`consent.jsonl`, fsynced before the
//! answer). One truth: the store starts with an `active` Consent for each INT test patient with
//! an opt-out, and the INT POS answers from the Consents (an `active` one removes the number
//! from the next result, an `inactive` one keeps it); numbers without a Consent follow the
//! opt-out rules of [`pos`]. With TLS and a client CA, mutual TLS covers these paths like every other.
//!
//! # Servers
//! [`serve`] runs the API on a bound listener until a shutdown future completes; [`MockMesh`]
//! does that on `127.0.0.1:0` for tests; [`App::handle`] answers one request without a socket.
//! Plain HTTP by default; [`Config::with_tls`] serves HTTPS instead, and with a client CA
//! ([`TlsConfig::with_client_ca`]) requires a client certificate signed by it, like real MESH.
//! [`pki`] makes the certificates for that (tests and local mTLS setups).
//!
//! # What it survives
//! A message is visible to its recipient, and answered `202`, only once its journal record is
//! fsynced; a failed journal write is cut back and answered `507` on a full disk; a chunk that
//! loses the race with its retry is refused and never touches accepted data; recovery tolerates
//! torn records and reclaims data no record owns. Every wait on a client has a timeout and
//! every resource a cap ([`Limits`]): body and response timeouts, concurrent connections, the
//! declared chunk count, unfinished uploads, and the bytes the POS decodes.
//!
//! Logs (`tracing`) carry ids, counts, sizes, routes and statuses, never a body, an NHS number, a
//! local id, a subject or a credential.

mod api;
mod app;
pub mod auth;
mod body;
mod clock;
mod config;
mod error;
mod fhir;
pub mod headers;
mod mapped;
pub mod pki;
pub mod pos;
mod response;
mod router;
mod server;
mod state;
mod store;
mod tls;

pub use app::App;
pub use auth::AuthConfig;
pub use body::ResponseBody;
pub use clock::Clock;
pub use config::{
    load_optout_file, parse_result_encoding, Config, LimitOverrides, Limits, MailboxConfig,
    PosConfig, PosEnv, StoreMode, WorkflowConfig, MAX_CHUNKS, POS_INT_MAILBOX, POS_LIVE_MAILBOX,
    POS_WORKFLOW,
};
pub use error::{ApiError, Error};
pub use response::ApiVersion;
pub use server::{serve, serve_app, MockMesh};
pub use tls::TlsConfig;
