"""What the lent accelerator is: device, measured bf16 matmul peak, onnxruntime providers.

The peak measured here is the denominator of every model-FLOP-utilisation figure in
bench/RESULTS.md, so MFU is against what this card really does, not its datasheet.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def bf16_peak_tflops(n: int = 8192, iters: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    return 2 * n**3 / dt / 1e12


def main() -> None:
    out: dict[str, object] = {"python": sys.version.split()[0]}
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            out["device"] = torch.cuda.get_device_name(0)
            out["bf16_matmul_peak_tflops"] = round(bf16_peak_tflops(), 1)
    except ImportError:
        out["torch"] = None
    try:
        import onnxruntime as ort

        out["onnxruntime"] = ort.__version__
        out["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        out["onnxruntime"] = None
    print(json.dumps(out, indent=2))
    dest = Path(os.environ.get("OUT", "bench/results"))
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "gpu_probe.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
