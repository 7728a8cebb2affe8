//! Submissions: inference over the test split, the `.npy` prediction file, scoring against hidden labels, ensembles.
