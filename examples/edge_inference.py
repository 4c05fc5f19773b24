"""Play CartPole from an exported ONNX policy with onnxruntime only: no Ray, no torch, no
sagemaker_ray_rl. What a device (an IoT Greengrass component, a robot, a native service) runs.

    pip install onnxruntime numpy gymnasium
    python examples/edge_inference.py MODEL_DIR [--episodes 10] [--env CartPole-v1] [--module default_policy]

MODEL_DIR is a trained model (``model.tar.gz`` unpacked) or only its ``onnx/`` directory, or one
``.onnx`` file with its ``.json`` sidecar beside it. The graph holds everything the SageMaker
endpoint applies (observation filters, flattening, greedy action, unsquash/clip), so the env's raw
observation goes in and the env's action comes out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort


def find_model(path: Path, module_id: str) -> Path:
    """The ``.onnx`` file for `module_id` under `path` (a model dir, its onnx/ dir, or the file)."""
    if path.is_file():
        return path
    for candidate in (path / "onnx" / f"{module_id}.onnx", path / f"{module_id}.onnx"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"no {module_id}.onnx in {path} or {path / 'onnx'}")


class OnnxPolicy:
    """One exported module: raw observations (any Gymnasium space) in, env actions out."""

    def __init__(self, model: Path) -> None:
        self.sidecar = json.loads(model.with_suffix(".json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one observation at a time: threads only add latency
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.inputs = [(spec["name"], np.dtype(spec["dtype"])) for spec in self.sidecar["inputs"]]

    def feed(self, observation) -> dict[str, np.ndarray]:
        """One observation as the graph's inputs: one per leaf (``obs``, or ``obs.<key>...`` for
        Dict/Tuple spaces), with a batch axis of 1."""
        feed = {}
        for name, dtype in self.inputs:
            leaf = observation
            for part in name.split(".")[1:]:
                leaf = leaf[int(part)] if isinstance(leaf, (tuple, list)) else leaf[part]
            feed[name] = np.asarray(leaf, dtype=dtype)[None]
        return feed

    def act(self, observation):
        action = self.session.run(["action"], self.feed(observation))[0][0]
        return action.item() if action.ndim == 0 else action


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--module", default="default_policy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    policy = OnnxPolicy(find_model(args.model, args.module))
    env = gym.make(args.env)
    returns = []
    for episode in range(args.episodes):
        observation, _ = env.reset(seed=args.seed + episode)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy.act(observation))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        print(f"episode {episode}: return {total:g}", flush=True)
    mean = float(np.mean(returns))
    print(f"mean return over {args.episodes} episodes: {mean:g}")
    return mean


if __name__ == "__main__":
    main(sys.argv[1:])
