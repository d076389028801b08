#!/usr/bin/env bash
# A stand-in for a cluster scheduler's submit command (used by the tests with the cluster-generic executor):
# run Snakemake's job script detached and print a job id, as sbatch --parsable would.
set -euo pipefail
jobscript="${!#}"
nohup bash "$jobscript" > "${jobscript}.out" 2>&1 &
echo "local-$!"
