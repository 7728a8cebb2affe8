//! The synthetic sticker generator: procedural RGBA stickers in the AI RUSH layout whose tags follow from what is
//! drawn, deterministic from a seed, multi-threaded, at AI RUSH scale.
