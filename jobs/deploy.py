"""Entry point for `ray job submit`: deploys the Serve app (as `pipeline deploy`) and returns; the app keeps
serving on the cluster after the job ends.

    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/deploy.py --registry s3://bucket/registry
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
