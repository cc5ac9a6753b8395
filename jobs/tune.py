"""Entry point for `ray job submit`: the same sweep and flags as `pipeline tune TASK ...`.

    ray job submit --address http://HEAD:8265 --runtime-env cluster/runtime_env.yaml -- \
        python jobs/tune.py image --num-samples 32 --gpus-per-trial 0.25 --storage s3://bucket/sweeps --promote
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
