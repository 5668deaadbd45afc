//! Actors, one per file: each holds its `State`, its message enum, its `Arguments`
//! and its `impl Actor`. Decisions live in `domain/`.

pub mod indexer;
pub mod maintenance;
pub mod product;
pub mod product_directory;
pub mod push_directory;
pub mod pusher;
pub mod referral;
pub mod supervisor;
pub mod writer;
