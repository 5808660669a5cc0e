//! Teacher checkpoints on the Hugging Face Hub.
//!
//! UMT's first stage trains the uni-modal teachers; users can skip it by pulling teachers
//! someone already trained. A teacher is given as a [`TeacherRef`]: a local path, or
//! `hf://OWNER/REPO[@REVISION]/PATH.safetensors` (the `hf://` convention of huggingface_hub's
//! `HfFileSystem`). Hub files are fetched into the cache the Python tools share
//! (`models--OWNER--NAME/{refs,blobs,snapshots}`), honouring `HF_HOME`, `HF_HUB_CACHE`,
//! `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`, and every download is checked against the size
//! and hash the hub announces before it is renamed into place. docs/hub.md is the user guide.
//!
//! - [`TeacherRef`] / [`HubFile`]: parsed references; [`HubConfig`]: the environment
//!   (`from_env`, `from_vars`, builder setters); [`HfToken`]: a token that never prints.
//! - [`resolve`] (synchronous) or [`Hub::resolve`] / [`Hub::fetch`] (async): a file on disk.
//! - [`Hub::pull`]: a whole teacher set ahead of time (`cargo xtask pull-teachers`).
//! - [`cached_file`], [`repo_dir`]: the cache layout, shared with Python's `huggingface_hub`.
//! - [`imagenet::adapt_first_conv`]: ESANet's depth encoder from ImageNet weights (conv1 summed
//!   over RGB), on the safetensors file, without candle.
//!
//! ```
//! use umt_hub::{HubConfig, TeacherRef};
//!
//! let teacher: TeacherRef = "hf://umt-rs/vggsound-teachers@v1/audio.safetensors".parse()?;
//! let TeacherRef::Hub(file) = &teacher else { unreachable!() };
//! assert_eq!((file.repo_id.as_str(), file.revision.as_str()), ("umt-rs/vggsound-teachers", "v1"));
//!
//! // The environment is an explicit value; here: cache only, in an empty folder.
//! let cache = tempfile::tempdir()?;
//! let config = HubConfig::new(cache.path()).with_offline(true);
//! let err = umt_hub::resolve(&teacher, &config).expect_err("nothing is cached");
//! assert!(err.to_string().contains("not in the cache"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod config;
mod download;
mod error;
pub mod imagenet;
mod pull;
mod reference;
mod url;

pub use cache::{cached_file, is_commit_hash, repo_dir};
pub use config::{HfToken, HubConfig, DEFAULT_ENDPOINT};
pub use download::{block_on, resolve, FileMetadata, Hub, RepoListing};
pub use error::HubError;
pub use pull::{is_teacher_set_file, PulledFile};
pub use reference::{HubFile, TeacherRef, DEFAULT_REVISION};
