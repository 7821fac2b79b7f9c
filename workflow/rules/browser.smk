# The feature browser (results/browser/index.html, opened from the file system) and the blinded rating of
# sampled features (results/browser/rate.html): the sample is drawn first and kept outside the site; the
# raters' exported files under rating.dir are scored into precision per label and model, which the claims
# table reads.


# The blinded sample's key: trial -> SAE, feature, label (seeded; catch trials from the null sweep).
rule rating_sample:
    input:
        tables=[
            CONCEPTS.format(dataset=d, model=m, layer=l, sweep=s) for d, m, l, s in layout.rating_keys(RUN)
        ],
        catch=[CONCEPTS.format(dataset=d, model=m, layer=l, sweep=s) for d, m, l, s in layout.catch_keys(RUN)],
    output:
        RATING_SAMPLE,
    log:
        log("rating_sample", "all"),
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        rating=as_params(RUN.rating),
        code=code("rating_sample"),
    script:
        "../scripts/rating_sample.py"


# The site: an index of SAEs, each SAE's feature table in shards, a view per feature (top images with
# patch maps, concept-table row, WordNet or taxonomy context, best matches, cards), and the rating page.
rule browser:
    input:
        **browser_inputs(),
    output:
        directory(BROWSER),
    log:
        log("browser", "all"),
    benchmark:
        benchmark("browser", "all")
    conda:
        "../../envs/vitsae.yaml"
    threads: 1
    resources:
        mem_mb=scaled(16000),
        runtime=scaled(240),
    params:
        **browser_params(),
        settings=as_params(RUN.browser),
        categories=list(RUN.rating.categories),
        title=f"vitsae feature browser: {RUN.run_name}",
        note=RUN.note,
        assets=browser_assets_digest(),
        code=code("browser"),
    script:
        "../scripts/browser.py"


rule browser_lineage:
    input:
        BROWSER,
    output:
        html=LINEAGE_HTML.format(figure="browser"),
        json=LINEAGE_JSON.format(figure="browser"),
    log:
        log("lineage", "browser"),
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        title="Feature browser",
        code=code("lineage"),
    script:
        "../scripts/lineage.py"


# The raters' files scored: agreement between raters, each label's precision per model and the
# precision-corrected label shares. No files: the tables say so (precision empty).
rule ratings:
    input:
        sample=RATING_SAMPLE,
        ratings=rating_files(),
        tables=[
            CONCEPTS.format(dataset=d, model=m, layer=l, sweep=s) for d, m, l, s in layout.rating_keys(RUN)
        ],
    output:
        ratings=report(RATINGS, caption="../report/ratings.rst", category="Claims"),
        agreement=report(RATING_AGREEMENT, caption="../report/ratings.rst", category="Claims"),
    log:
        log("ratings", "all"),
    localrule: True
    conda:
        "../../envs/vitsae.yaml"
    params:
        rating=as_params(RUN.rating),
        code=code("ratings"),
    script:
        "../scripts/ratings.py"
