"""Keep each step's class probabilities before the history pass, for the offline screens (bench/screen_*.py).

Put this folder first on PYTHONPATH and name a folder in CAPTURE_DIR; every `python -m core run` (or bench_accuracy.py
run) started so copies, per experiment, each step's stored probabilities (``probs_<i>.npy``: slices x (classes + the
network's argmax) x y x x, uint8) and its labels before the history pass (``pre_<i>.tif``) into
``CAPTURE_DIR/<run folder>/``. Nothing changes in the run itself. Example (tuning half, the defaults, seed 0):

    PYTHONPATH=bench/capture:. CAPTURE_DIR=bench/.capture .venv/bin/python bench/bench_accuracy.py --split tuning \\
        --label capture --out /tmp/capture.json
"""
import os

if os.environ.get("CAPTURE_DIR"):
    try:
        import shutil
        from pathlib import Path

        import core.segmentation.series as _series

        _original = _series._temporal_pass

        def _capturing(outcomes, *args, **kwargs):
            folder = Path(os.environ["CAPTURE_DIR"]) / Path(outcomes[0].out_path).parent.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            for i, o in enumerate(outcomes):
                shutil.copy(_series.probabilities_path(o.out_path), folder / f"probs_{i}.npy")
                shutil.copy(o.out_path, folder / f"pre_{i}.tif")
            return _original(outcomes, *args, **kwargs)

        _series._temporal_pass = _capturing
    except Exception as exc:  # a screen's helper must never break a run
        print("bench/capture: not capturing:", exc)
