"""The release models: trained by one recipe (raycfg/release.yaml), shipped in facetune/pretrained/.

One job per module: `paths` says where the shipped files are (all that predict, serve and export
need, importing nothing else of the release); `recipe` reads and checks the recipe; `members` trains
a member; `reuse` takes members already shipped; `evaluation` gives the per-group figures; `card`
writes the model card and the docs page's figures block; `train` runs the whole release.
Nothing is imported here, so that reading `paths` never loads the trainer.
"""
