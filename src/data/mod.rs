//! The AI RUSH data layout: reading it (train, test, tags, packages), a dataset's facts as the daemon keeps them,
//! splitting by package, decoding images, and writing it (the synthetic generator and the emoji-art builder).

pub mod cache;
pub mod emoji;
pub mod facts;
pub mod image;
pub mod layout;
pub mod split;
pub mod synth;
