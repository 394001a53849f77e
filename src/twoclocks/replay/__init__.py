"""The replay stage: what needs weight snapshots or the model itself (gate patterns, frozen-gate
forks, per-snapshot spectra), measured once per cell into runs/<cell>/measures.parquet so that
the analysis reads tables and never re-runs training."""
