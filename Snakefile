# recircuit workflow: train every circuit x variant x seed of the sweep config, evaluate, analyse, collect, plot.
# Every rule calls the `recircuit` CLI, so any job can be re-run by hand. Default config: the quick reproduction.
# Use `--configfile workflows/config/paper.yaml` (not --config) to pick another sweep: a config file given on
# the command line replaces the default one entirely, and lists (seeds, variants) keep their types.
from snakemake.utils import min_version, validate

min_version("9.0")

if not config:  # no --configfile given: the quick reproduction
    configfile: "workflows/config/quick.yaml"

validate(config, "workflows/schemas/config.schema.json")

include: "workflows/rules/common.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/analysis.smk"
include: "workflows/rules/collect.smk"


rule all:
    default_target: True
    input:
        summaries=summary_files(),
        reports=report_files(),
        figures=figure_dirs(),
