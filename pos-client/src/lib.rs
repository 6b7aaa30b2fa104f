//! The POS ("Check for National Data Opt-outs Service") over MESH, resumably:
//! [`send`] prepared `.dat` + `.ctl` pairs, [`collect`] the replies. Everything that happens is
//! journaled ([`journal`]) at the moment it becomes true, so either step can be interrupted at
//! any point and run again:
//!
//! - a pair whose LocalId and SHA-256 are journaled as submitted is never sent again;
//! - a chunked upload that was cut off resumes from its first missing chunk (the journal
//!   records each accepted chunk; MESH tracking confirms the message is still uploading);
//! - a pair about to be sent is journaled first (`sending`), and before any pair goes out
//!   its LocalId is looked up in MESH tracking: a message MESH accepted in a run that died
//!   before journaling it is adopted (journaled `submitted`, `adopted`), an upload it left
//!   unfinished is resumed, never sent a second time. LocalIds are unique per pair and per
//!   prepare run, and the message found must carry the pair's SHA-256 checksum;
//! - a reply is written to the work directory (temporary name, fsync, rename, mode 0600),
//!   journaled, and only then acknowledged, so MESH never forgets a reply we have not kept.
//!
//! What the POS sends back for one submission (`ndop-domain.md` §2.3, §3.2; mock-mesh `pos`),
//! all carrying the submission's `Mex-LocalID`: a "job created" JSON message (`Mex-Subject:
//! SUCCESS`, `status` `pending`, or `failed` if the file was empty or a duplicate), then the
//! cleaned file (the submitted numbers without an opt-out, possibly none) or the single line
//! `The file contains one or more invalid NHS Numbers.`; MESH itself may add REPORT messages
//! (collection or non-delivery, linked to the submission). Replies are matched to submissions by
//! LocalId (else by Subject, or a report's linked message id) and sender; anything else stays
//! in the inbox and is listed as unrecognised. Which reply settles a submission, and what it
//! means for the run, is decided here ([`final_results`]), not by the caller.
//!
//! The files themselves (the `.dat`/`.ctl` formats, the 0600 + fsync + rename policy) are the
//! engine's (`processor`); this crate adds the network, the journal and the reply rules.
//! No NHS number, secret or message body is ever logged: only ids, names, counts and sizes.
//!
//! Modules, bottom to top: `error`, [`journal`], `reply`, `pairs`, `send`, `collect`,
//! [`folder`] (the same pipeline through an installed MESH client's folders).

mod collect;
mod error;
pub mod folder;
pub mod journal;
mod pairs;
mod reply;
mod send;

pub use collect::{
    collect, final_results, CollectOptions, CollectReport, CollectedReply, GatheredNumbers,
    UnrecognisedMessage, REPLY_DIR,
};
pub use error::Error;
pub use pairs::{find_pairs, Pair};
pub use send::{send, send_known, KnownDigest, SendOutcome, SendReport, SentFile};
