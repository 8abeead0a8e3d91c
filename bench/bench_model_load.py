"""Benchmark: what the content-hash check adds to the runtime loader's load time, on the FP32 demo models.

Each model is copied twice into a temporary folder: once with ``content_sha256``
in its metadata (what export writes) and once without (the check is skipped,
with a warning). Both copies are loaded ``--repeats`` times, alternating, with
``load_model(..., backend="cpu")``; the hash alone (``graph_sha256_of_file``)
is timed too. Prints medians and the ratio hashed / unhashed, and writes them
as JSON.

Usage: python bench/bench_model_load.py [--repeats 5] [--json docs/measurements/model_load_content_hash.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from perception_core.model_metadata import PREFIX, ModelMetadata, graph_sha256_of_file, load_onnx, set_model_metadata
from perception_core.runtime.loader import CONTENT_VERIFIED, load_model

REPO = Path(__file__).resolve().parents[1]
DEMO_MODELS = ("models/depth_levels_r18.onnx", "models/ddrnet23s_offroad.onnx")


def _copies(source: Path, folder: Path) -> tuple[Path, Path]:
    """(copy with content_sha256, copy without) of ``source``."""
    import onnx

    model = load_onnx(source)
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, str(source))
    set_model_metadata(model, meta)
    hashed = folder / f"{source.stem}_hashed.onnx"
    onnx.save(model, str(hashed))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != f"{PREFIX}content_sha256"]
    del model.metadata_props[:]
    for key, value in kept:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    plain = folder / f"{source.stem}_no_hash.onnx"
    onnx.save(model, str(plain))
    return hashed, plain


def _seconds(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.getLogger("perception_core.runtime.loader").setLevel(logging.ERROR)  # the no-hash copy warns each load
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in DEMO_MODELS:
            source = REPO / name
            if not source.is_file():
                raise SystemExit(f"{source} is missing: run `make setup` (it exports the FP32 demo models)")
            hashed, plain = _copies(source, Path(tmp))
            assert load_model(hashed, backend="cpu").content_check == CONTENT_VERIFIED
            times: dict[str, list[float]] = {"hashed_load_s": [], "no_hash_load_s": [], "hash_only_s": []}
            for _ in range(args.repeats):
                times["hashed_load_s"].append(_seconds(load_model, hashed, backend="cpu"))
                times["no_hash_load_s"].append(_seconds(load_model, plain, backend="cpu"))
                times["hash_only_s"].append(_seconds(graph_sha256_of_file, hashed))
            medians = {key: statistics.median(values) for key, values in times.items()}
            row = {"model": name, "file_mb": round(source.stat().st_size / 1e6, 1), **medians,
                   "ratio_hashed_to_no_hash": medians["hashed_load_s"] / medians["no_hash_load_s"],
                   "samples": times}
            results.append(row)
            print(f"{name:<34} {row['file_mb']:6.1f} MB  load with hash check {medians['hashed_load_s'] * 1e3:7.1f} ms, "
                  f"without {medians['no_hash_load_s'] * 1e3:7.1f} ms ({row['ratio_hashed_to_no_hash']:.2f}x); "
                  f"hash alone {medians['hash_only_s'] * 1e3:6.1f} ms")
    if args.json:
        report = {"command": f"python bench/bench_model_load.py --repeats {args.repeats}", "repeats": args.repeats,
                  "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
                  "statistic": "median over repeats", "models": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
