#!/usr/bin/env python
"""Memory and time per loaded policy in one serving process (multi-model endpoints).

    .venv/bin/python scripts/bench/bench_mme_memory.py CHECKPOINT_DIR [CHECKPOINT_DIR ...] [--rounds 4]

Loads each checkpoint `--rounds` times with `Policy.load` (the call ``POST /models`` makes), all
kept alive, with one torch thread as ``serve`` sets it, and prints the resident memory each load
added (``/proc/self/statm``) and its seconds, next to `multi_model.estimate_model_bytes` (what the
budget counts). The first load also pays for RLlib's imports; the later ones are the per-policy cost.
Checkpoints: e.g. ``python tests/integration/train_policies.py OUT cartpole pendulum``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.serving.multi_model import estimate_model_bytes, resident_bytes

    kept = []
    for round_ in range(args.rounds):
        for path in args.checkpoints:
            before, tick = resident_bytes(), time.perf_counter()
            kept.append(Policy.load(path))
            print(
                f"round {round_} {path.name}: +{(resident_bytes() - before) / 2**20:.1f} MB resident, "
                f"{time.perf_counter() - tick:.2f} s; budget counts {estimate_model_bytes(path) / 2**20:.2f} MB",
                flush=True,
            )
    print(f"{len(kept)} policies loaded, process resident {resident_bytes() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
