//! The emoji-art stand-in dataset: npm tarballs of open emoji styles rendered with resvg into the AI RUSH layout.
