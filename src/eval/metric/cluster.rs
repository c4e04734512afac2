//! A cluster-conditional run's clustering (`[cluster]`, measured by the training itself, see
//! `train::clustering`): its agreement with the dataset's labels, the same for k-means on pixels
//! with the run's seed (the baseline beside it), and how often EM's failure modes struck.
use super::Metric;

pub const METRICS: [Metric; 12] = [
    Metric::model("cluster_accuracy", "cluster accuracy", 4)
        .higher()
        .percent()
        .panel("clustering accuracy (Hungarian)"),
    Metric::model("cluster_nmi", "NMI", 4).higher().panel("NMI"),
    Metric::model("cluster_ari", "ARI", 4).higher().panel("ARI"),
    Metric::baseline("kmeans_accuracy", "k-means accuracy", "cluster_accuracy").higher().percent(),
    Metric::baseline("kmeans_nmi", "k-means NMI", "cluster_nmi").higher(),
    Metric::baseline("kmeans_ari", "k-means ARI", "cluster_ari").higher(),
    Metric::model("em_refills", "refilled clusters", 0).untagged(),
    Metric::model("em_collapses", "collapsed E-steps", 0).untagged(),
    // The final E-step estimated twice with independent draws: how often the best cluster agrees,
    // the noise of one estimate's gap between an image's two best clusters, and that gap's mean.
    Metric::model("e_step_agreement", "E-step agreement", 4).higher().untagged(),
    Metric::model("e_step_gap_noise", "E-step gap noise (nats)", 2).untagged(),
    Metric::model("e_step_margin", "E-step margin (nats)", 2).higher().untagged(),
    Metric::timing("e_step_seconds", "E-step seconds"),
];
