"""Entry point for `ray job submit`: the same batch inference and flags as `pipeline batch-predict TASK ...`.

    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/batch_predict.py image --input s3://bucket/new/ --output s3://bucket/predictions/ \
        --registry s3://bucket/registry
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["batch-predict", *sys.argv[1:]]))
