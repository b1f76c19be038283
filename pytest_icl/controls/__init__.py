"""Controls: the runs Dai et al. lacked (Deutch et al. 2024, Shen et al. 2024), each judged against the real run."""
