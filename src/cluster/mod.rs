//! Clustering with a diffusion model (seed 000, §8): a mixture of Q cluster-conditional DDPMs fitted
//! by variational EM. `estep` estimates each image's bound under every cluster, `em` turns bounds
//! into responsibilities and weights, `kmeans` is the pixel baseline and the initialisation, and
//! `scores` compares a clustering with the dataset's labels. The training loop drives them
//! (`train::clustering`).
pub mod em;
pub mod estep;
pub mod history;
pub mod kmeans;
pub mod scores;
