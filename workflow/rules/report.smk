# Reports: claims with verdicts (from the tables: clocks, fits, measures), figures and one
# self-contained offline HTML page.


rule report:
    input:
        clocks=f"{RESULTS}/clocks.parquet",
        fits_json=f"{RESULTS}/fits.json",
        stores=trajectories("store"),
        manifests=trajectories("manifest"),
        measures=[f"{RESULTS}/runs/{cid}/measures.parquet" for cid in CELL_IDS],
        laws=[f"{RESULTS}/runs/{cid}/laws.json" for cid in CELL_IDS],
        calibration=f"{RESULTS}/calibration.json",
        # analysis.numerics_replicate (replicate.smk): empty lists when off
        replicate_stores=REPLICATE_FILES["stores"],
        replicate_manifests=REPLICATE_FILES["manifests"],
        replicate_clocks=REPLICATE_FILES["study_clocks"],
        replicate_fits=REPLICATE_FILES["fits"],
        replicate_measures=REPLICATE_FILES["measures"],
    output:
        claims=f"{RESULTS}/claims.json",
        index=report(
            f"{RESULTS}/report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
        figures=report(
            directory(f"{RESULTS}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    localrule: True
    conda:
        "../envs/twoclocks.yaml"
    params:
        config=STUDY.config,
        cell_ids=CELL_IDS,
        benchmarks_dir=f"{RESULTS}/benchmarks",
    script:
        "../../scripts/make_report.py"
