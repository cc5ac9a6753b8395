"""Entry point for `ray job submit`: the same flow and flags as `pipeline run TASK ...`.

    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/pipeline.py image --output s3://bucket/runs/image --registry s3://bucket/registry
"""

import os
import sys

# The job's working directory is the uploaded repository; make its `pipeline` package importable
# even where the cluster's Python environment does not have the project installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
