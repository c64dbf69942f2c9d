"""Peak memory of fit against batch size, per engine, under memray: the same as `fastedf memory`.

    python profiling/memory_per_batch.py --engine compiled,graph --features 64 --samples 16384 \
        --batch-sizes 256,512,1024,2048,4096,8192 --epochs 3 --out results/memory

Each batch size runs in a fresh process; see fastedf/memory.py and docs/memory.md.
"""
import sys

from fastedf.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["memory", *sys.argv[1:]]))
